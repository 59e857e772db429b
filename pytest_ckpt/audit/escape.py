"""Text taken from a file (a tensor name, a member name, a file name) shown safely: a hostile
name must not be able to forge an output line or move the terminal's cursor."""

from __future__ import annotations

MAX_SHOWN = 120  # characters of a name shown before it is cut


def escape(text: str) -> str:
    """`text` with every non-printable character written as a Python escape (\\x1b, \\n)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` quoted as a Python literal (control, format and surrogate characters escaped),
    cut at `limit` characters with the full length said."""
    if len(text) > limit:
        return f"{text[:limit]!r}... ({len(text)} characters)"
    return repr(text)

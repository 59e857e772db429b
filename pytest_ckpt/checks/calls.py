"""Calls into a subject's code, with its failures turned into one readable `SubjectError`.

A subject's `rebuild` that fails (a strict `load_state_dict` meeting unexpected keys, a
missing key in the state) would otherwise reach the user as a long traceback through torch,
pytest and pytest-ckpt, whose cause a report cut to its first lines no longer shows. Here the
cause comes first: the exception's own lines, then where it was raised and the subject's line
that called it, then what to do.
"""

from __future__ import annotations

import traceback
import weakref
from pathlib import Path
from typing import Any

from pytest_ckpt.errors import CheckpointError, SubjectError

_MESSAGE_LINES = 6
_LINE_CHARS = 300
# The systems (by id) each subject's build() and rebuild() returned in this process: an
# AttributeError in export_state on one of them is the subject's own, not a wrong system.
_MADE: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()
_MADE_LIMIT = 10_000
_STRUCTURE_HINT = (
    "the checkpoint's structure differs from the system rebuild() made: save what the "
    "structure is built from (a config) in export_state() and build from it in rebuild()"
)


def call_subject(subject: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """`subject.<method>(*args, **kwargs)`; anything but a CheckpointError it raises becomes a
    SubjectError whose message starts with the cause."""
    try:
        result = getattr(subject, method)(*args, **kwargs)
    except CheckpointError:
        raise
    except Exception as err:
        raise SubjectError(describe_failure(subject, method, err, args)) from err
    if method in ("build", "rebuild"):
        _remember_made(subject, result)
    return result


def _remember_made(subject: Any, system: Any) -> None:
    try:
        made = _MADE.setdefault(subject, set())
    except TypeError:  # a subject that cannot be weakly referenced: nothing to remember
        return
    if len(made) < _MADE_LIMIT:
        made.add(id(system))


def _made_by(subject: Any, system: Any) -> bool:
    try:
        return id(system) in _MADE.get(subject, ())
    except TypeError:
        return False


def describe_failure(subject: Any, method: str, err: BaseException, args: tuple = ()) -> str:
    name = getattr(subject, "name", type(subject).__name__)
    text = str(err)
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = repr(err.args[0])
    message = [line.rstrip()[:_LINE_CHARS] for line in text.splitlines() if line.strip()]
    head = f"subject {name}: {method}() raised {type(err).__name__}"
    lines = [f"{head}: {message[0].strip()}" if message else head]
    lines += [f"    {line.strip()}" for line in message[1:_MESSAGE_LINES]]
    if len(message) > _MESSAGE_LINES:
        lines.append(f"    ... ({len(message) - _MESSAGE_LINES} more lines)")
    lines += _where(err)
    hint = _hint(subject, method, err, text, args)
    if hint:
        lines.append(f"  {hint}")
    return "\n".join(lines)


def _where(err: BaseException) -> list[str]:
    """The frame that raised, and the innermost frame of the subject's code (not an installed
    library's) above it."""
    frames = traceback.extract_tb(err.__traceback__)[1:]  # [0] is call_subject itself
    if not frames:
        return []
    raised = frames[-1]
    lines = [f"  raised at {_location(raised)}"]
    own = [f for f in frames if not _is_library(f.filename)]
    if own and own[-1] is not raised:
        lines.append(f"  called from {_location(own[-1])}")
    return lines


def _location(frame: traceback.FrameSummary) -> str:
    return f"{_short(frame.filename)}:{frame.lineno} in {frame.name}"


def _short(filename: str) -> str:
    path = Path(filename)
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_library(filename: str) -> bool:
    parts = Path(filename).parts
    return "site-packages" in parts or "dist-packages" in parts


def _hint(subject: Any, method: str, err: BaseException, text: str, args: tuple) -> str:
    if method == "rebuild" and "in loading state_dict" in text:
        return _STRUCTURE_HINT
    if (
        method == "export_state"
        and isinstance(err, (KeyError, TypeError, IndexError, AttributeError))
        and args
        and not _made_by(subject, args[0])
    ):
        return (
            f"is this system one this subject's build() made? The checks (and ckpt_resume) "
            f"take a system from ckpt_subject.build() or the ckpt_model fixture; this is a "
            f"{type(args[0]).__qualname__}"
        )
    return ""

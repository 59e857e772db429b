"""Compare two serialized snapshots with a tolerance on floats, the way a reviewer would.

Committed snapshots are read on machines other than the one that wrote them, and trained float
values change with the CPU's kernels (SIMD width, accumulation order). So the text of a snapshot
is compared token by token: everything that is not a float (keys, structure, strings, shapes,
dtypes, integers, digests) must be identical, and each pair of floats must satisfy
`|received - snapshot| <= atol + rtol * |snapshot|` (numpy's `isclose`, the snapshot being the
reference), with the tolerance of the first rule whose pattern matches the value's path.
Rounding the text instead would flip at a boundary, however many digits were kept.

Paths are dotted keys from the root of the snapshot (`state.env.host_optimizer.state.9.exp_avg`,
`step.telemetry.3.payload.reward`); patterns are `fnmatch` globs over them.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<num>(?<![\w.])[-+]?
        (?:\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+)
        (?![\w.]))
  | (?P<text>[^'"\d+-]+|.)
    """,
    re.VERBOSE,
)
_KEY = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+): """)
_OPENERS = ("({", "([", "(")
_RAW = "'''"
_MULTILINE_KEY = "<multi-line key>"  # the path label of a value whose key spans lines
_FLOAT_MARK = "\0float\0"


@dataclass(slots=True, frozen=True)
class Tolerance:
    """`|received - snapshot| <= atol + rtol * |snapshot|`; `None` for both: not compared."""

    rtol: float | None
    atol: float | None

    @property
    def compares(self) -> bool:
        return self.rtol is not None

    def close(self, snapshot: float, received: float) -> bool:
        if self.rtol is None or self.atol is None:
            return True
        if math.isnan(snapshot) or math.isnan(received):
            return math.isnan(snapshot) and math.isnan(received)
        if math.isinf(snapshot) or math.isinf(received):
            return snapshot == received
        return abs(received - snapshot) <= self.atol + self.rtol * abs(snapshot)

    def __str__(self) -> str:
        return UNCHECKED if self.rtol is None else f"rtol={self.rtol:g}, atol={self.atol:g}"


UNCHECKED = "unchecked"
NOT_COMPARED = Tolerance(None, None)


@dataclass(slots=True, frozen=True)
class ToleranceRule:
    """Floats whose path matches `pattern` (an fnmatch glob) are compared with `tolerance`."""

    pattern: str
    tolerance: Tolerance

    @classmethod
    def parse(cls, text: str) -> ToleranceRule:
        """`PATTERN: rtol=1e-2, atol=1e-6` (either may be left out: it keeps the default
        given later by `with_defaults`) or `PATTERN: unchecked` (any value there, a float, a
        version string, a timestamp, a tensor's values, is neither recorded nor compared: the
        snapshot keeps its type, and a tensor's shape and dtype).

        Raises ValueError naming what is wrong."""
        pattern, sep, spec = text.rpartition(":")
        pattern, spec = pattern.strip(), spec.strip()
        if not sep or not pattern or not spec:
            raise ValueError(
                f"expected 'PATTERN: rtol=X, atol=Y' or 'PATTERN: {UNCHECKED}', got {text!r}"
            )
        if spec.lower() in ("any", "ignore", "skip", "none", "off"):
            raise ValueError(
                f"{text!r}: to mask a value write 'PATTERN: {UNCHECKED}' (not {spec!r})"
            )
        if spec == UNCHECKED:
            return cls(pattern, NOT_COMPARED)
        values: dict[str, float] = {}
        for part in spec.split(","):
            name, eq, number = (p.strip() for p in part.partition("="))
            if not eq or name not in ("rtol", "atol") or name in values:
                raise ValueError(
                    f"{text!r}: expected rtol=X and/or atol=Y, or {UNCHECKED}; got {part.strip()!r}"
                )
            try:
                values[name] = float(number)
            except ValueError:
                raise ValueError(f"{text!r}: {name} must be a number, got {number!r}") from None
            if not values[name] >= 0 or math.isinf(values[name]):
                raise ValueError(f"{text!r}: {name} must be a finite number >= 0")
        return cls(pattern, Tolerance(values.get("rtol", math.nan), values.get("atol", math.nan)))

    def with_defaults(self, default: Tolerance) -> ToleranceRule:
        """Fill a bound the rule left out (NaN) from `default`."""
        tol = self.tolerance
        if tol.rtol is None or tol.atol is None:  # `unchecked` (both None): nothing to fill
            return self
        rtol = default.rtol if math.isnan(tol.rtol) else tol.rtol
        atol = default.atol if math.isnan(tol.atol) else tol.atol
        return ToleranceRule(self.pattern, Tolerance(rtol, atol))

    def __str__(self) -> str:
        return f"{self.pattern}: {self.tolerance}"


@dataclass(slots=True, frozen=True)
class Tolerances:
    """The default tolerance and the rules that override it, first match wins."""

    default: Tolerance
    rules: tuple[ToleranceRule, ...] = ()

    def for_path(self, path: str) -> Tolerance:
        rule = self.rule_for(path)
        return self.default if rule is None else rule.tolerance

    def rule_for(self, path: str) -> ToleranceRule | None:
        for rule in self.rules:
            if fnmatch.fnmatchcase(path, rule.pattern):
                return rule
        return None


@dataclass(slots=True, frozen=True)
class Line:
    """One line of a serialized snapshot: its path, and its tokens with floats taken out."""

    number: int
    path: str
    skeleton: str  # the line with each float replaced by a marker
    floats: tuple[float, ...]
    float_texts: tuple[str, ...]
    float_paths: tuple[str, ...]  # a float in a one-line dict is at path.key
    text: str


def _tokens(text: str) -> Iterable[tuple[str, str]]:
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "text"
        value = match.group()
        if kind == "num" and not any(c in value for c in ".eE"):
            kind = "int"
        yield ("float" if kind == "num" else kind), value


def parse_snapshot(text: str) -> list[Line]:
    """Split a serialized amber snapshot into lines with paths (from its indentation)."""
    lines: list[Line] = []
    stack: list[list] = []  # [indent, label, next list index]
    raw = False
    for number, line in enumerate(text.splitlines()):
        stripped = line.lstrip(" ")
        indent = (len(line) - len(stripped)) // 2
        closing = raw  # a multi-line string's last line: `''': 1.5,` after a key
        if raw:
            if not stripped.startswith(_RAW):
                lines.append(Line(number, "", line, (), (), (), line))
                continue
            raw = False
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = None if closing else _KEY.match(stripped)
        body = stripped[key.end() :] if key else stripped
        if closing:  # its quotes close the string, they open none: what follows is read
            body = stripped[len(_RAW) :]
            label = _MULTILINE_KEY if body.startswith(": ") else ""  # a key's value, or none
            body = body.removeprefix(": ")
        elif key:
            label = key.group(1).strip("'\"")
        elif stack and body[:1] not in ")]}":
            label = str(stack[-1][2])
            stack[-1][2] += 1
        else:
            label = ""
        path = ".".join(part for part in [*(entry[1] for entry in stack), label] if part)
        parts: list[str] = []
        floats: list[float] = []
        texts: list[str] = []
        paths: list[str] = []
        inline = _InlinePaths(path)
        for kind, value in _tokens(body):
            if kind == "float":
                parts.append(_FLOAT_MARK)
                floats.append(float(value))
                texts.append(value)
                paths.append(inline.current())
            else:
                parts.append(value)
            inline.feed(kind, value)
        skeleton = line[: len(line) - len(body)] + "".join(parts)
        lines.append(Line(number, path, skeleton, tuple(floats), tuple(texts), tuple(paths), line))
        if body == _RAW:
            raw = True
        elif body.endswith(_OPENERS):
            stack.append([indent, label, 0])
    return lines


class _InlinePaths:
    """Paths of the values inside a one-line container (`dict({'a': list([1.5, 2.5])})`):
    amber's `dict({`, `list([` and `tuple(` open a level, a key or a comma moves along it.
    Anything else (`Tensor(...)`, `float32(...)`) is a leaf at the enclosing path."""

    def __init__(self, path: str) -> None:
        self.base = path
        self.frames: list[list] = []  # [label, kind ("dict" / "list"), key or index, closer]
        self.word = ""  # the identifier just before a "(", to know what it opens
        self.leaf_depth = 0  # parentheses of a leaf call (Tensor(...)) we are inside

    def current(self) -> str:
        labels = [self.base, *(str(frame[2]) for frame in self.frames)]
        return ".".join(label for label in labels if label)

    def feed(self, kind: str, value: str) -> None:
        if kind == "str":
            if self.frames and self.frames[-1][1] == "dict" and self.frames[-1][2] is None:
                self.frames[-1][2] = value[1:-1]
            return
        if kind != "text":
            return
        i = 0
        while i < len(value):
            char = value[i]
            if char.isalnum() or char == "_":
                self.word += char
            else:
                if char == "(":
                    self._open_paren(value, i)
                    if value.startswith("({", i) or value.startswith("([", i):
                        i += 1
                elif char == ")":
                    self._close_paren()
                elif char in "}]" and self.leaf_depth == 0:
                    pass  # the bracket half of "})" / "])": closed with its paren
                elif char == "," and self.leaf_depth == 0 and self.frames:
                    frame = self.frames[-1]
                    frame[2] = None if frame[1] == "dict" else frame[2] + 1
                self.word = ""
            i += 1

    def _open_paren(self, value: str, i: int) -> None:
        opens_container = self.leaf_depth == 0 and (
            (self.word == "dict" and value.startswith("({", i))
            or (self.word == "list" and value.startswith("([", i))
            or self.word == "tuple"
        )
        if opens_container:
            kind = "dict" if self.word == "dict" else "list"
            self.frames.append([None, kind, None if kind == "dict" else 0, ")"])
        else:
            self.leaf_depth += 1

    def _close_paren(self) -> None:
        if self.leaf_depth:
            self.leaf_depth -= 1
        elif self.frames:
            self.frames.pop()


@dataclass(slots=True, frozen=True)
class FloatDifference:
    path: str
    snapshot: str
    received: str
    tolerance: Tolerance

    def __str__(self) -> str:
        a, b = float(self.snapshot), float(self.received)
        scale = abs(a) if a else 1.0
        return (
            f"{self.path or '<root>'}: snapshot {self.snapshot}, now {self.received} "
            f"(diff {abs(b - a):.3g}, relative {abs(b - a) / scale:.3g}; allowed {self.tolerance})"
        )


@dataclass(slots=True, frozen=True)
class Comparison:
    structure_matches: bool
    differences: tuple[FloatDifference, ...]
    normalized: str  # the received text, with floats within tolerance taken from the snapshot

    @property
    def matches(self) -> bool:
        return self.structure_matches and not self.differences


def compare_snapshots(snapshot: str, received: str, tolerances: Tolerances) -> Comparison:
    """Line by line: skeletons equal, floats within their path's tolerance."""
    old, new = parse_snapshot(snapshot), parse_snapshot(received)
    structure = len(old) == len(new) and all(
        a.skeleton == b.skeleton for a, b in zip(old, new, strict=False)
    )
    pairs = list(zip(old, new, strict=False)) if structure else _aligned(old, new)
    differences: list[FloatDifference] = []
    replaced = {line.number: line.text for line in new}
    for a, b in pairs:
        text = b.text
        out_of_tolerance = False
        floats = zip(a.floats, b.floats, a.float_texts, b.float_texts, b.float_paths, strict=True)
        for x, y, xt, yt, path in floats:
            tolerance = tolerances.for_path(path)
            if not tolerance.close(x, y):
                differences.append(FloatDifference(path, xt, yt, tolerance))
                out_of_tolerance = True
        if not out_of_tolerance:
            text = a.text  # the line differs within tolerance only: show the snapshot's
        replaced[b.number] = text
    normalized = "\n".join(replaced[line.number] for line in new)
    return Comparison(structure, tuple(differences), normalized)


def _aligned(old: Sequence[Line], new: Sequence[Line]) -> list[tuple[Line, Line]]:
    """Pairs of lines with equal skeletons, aligned as difflib would align them."""
    import difflib

    matcher = difflib.SequenceMatcher(
        a=[line.skeleton for line in old], b=[line.skeleton for line in new], autojunk=False
    )
    pairs = []
    for block in matcher.get_matching_blocks():
        pairs += [(old[block.a + i], new[block.b + i]) for i in range(block.size)]
    return pairs

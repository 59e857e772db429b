"""Tensor-aware syrupy snapshots, reviewed in a PR diff and valid on every CPU.

A tensor becomes one line: shape, dtype and what describes it on any machine. Integer and bool
tensors carry a sha256 digest of their exact bytes (no CPU changes an integer). Float tensors
carry well-conditioned summaries, the L2 norm and the largest absolute value (a mean of values
near zero changes sign from one CPU to the next), or their values when there are a handful.
Long lists of numbers (an RNG state) become one such line too.

Two float modes:
- "tolerant" (default): floats are written at `FLOAT_DIGITS` significant digits and compared
  with a tolerance on their parsed values (`snapshot_compare`), so a snapshot recorded on one
  CPU holds on another: trained values differ between CPU kernels (`ATEN_CPU_CAPABILITY`).
- "exact": float tensors also carry a digest of their bytes and floats are written in full;
  the text must match exactly. Only for snapshots read on the machine (and torch build and
  thread count) that wrote them.

Our snapshots use their own file extension (`.ckpt-ambr`) and serializer version, so they never
share a file or a version header with a project's plain `snapshot` assertions. The extension
classes are built once per session by `make_snapshot_extension`; subclass the result (or
`CkptSnapshotExtension`) to change a tolerance or where the files go, as with any syrupy
extension.
"""

from __future__ import annotations

import ctypes
import hashlib
import numbers
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from syrupy.data import SnapshotCollection, SnapshotCollections
from syrupy.extensions.amber import (
    AmberDataSerializer,
    AmberDataSerializerPlugin,
    AmberSnapshotExtension,
)

from pytest_ckpt.plugin.snapshot_compare import (
    Comparison,
    Tolerance,
    ToleranceRule,
    Tolerances,
    compare_snapshots,
    parse_snapshot,
)

FLOAT_MODES = ("exact", "tolerant")
FLOAT_DIGITS = 8
# Kernels for another SIMD width or accumulation order change a float32 result by a few units
# in the last place (~1e-7 relative) per operation; after a short, well-conditioned training
# run (a few optimizer steps) that stays below ~1e-4. rtol=1e-3 leaves a 10x margin and still
# fails a 1% change; atol=1e-6 absorbs the cancellation noise of float32 sums of order-1 terms
# around zero (a loss of 3e-8 on one CPU is -3e-8 on another).
DEFAULT_TOLERANCE = Tolerance(rtol=1e-3, atol=1e-6)
_LONG_LIST = 16
_SHOWN_VALUES = 8
_FLOW_LEAVES = 16
_FLOW_DEPTH = 3
_FLOW_TEXT = 120
_UNSAFE_DIR_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MASK = re.compile(r"<[A-Za-z_]\w*>")
UNCHECKED_FLOAT = "<float>"  # a float at an unchecked path: its type is pinned, not its value


def masked(value: Any) -> str:
    """A value at an `unchecked` path: its type only (`<float>`, `<str>`, `<datetime>`)."""
    return f"<{type(value).__name__}>"


def dotted_path(path: Sequence[tuple[Any, Any]]) -> str:
    """syrupy's property path as the dotted path tolerance rules match (`state.env.loss`)."""
    return ".".join(str(name) for name, _type in path)


def tensor_digest(tensor: Any) -> str:
    """sha256 of a strided tensor's exact bytes (contiguous CPU copy), first 16 hex digits."""
    data = tensor.detach().cpu().contiguous()
    nbytes = data.numel() * data.element_size()
    raw = ctypes.string_at(data.data_ptr(), nbytes) if nbytes else b""
    return hashlib.sha256(raw).hexdigest()[:16]


def format_float(value: float, *, float_mode: str = "tolerant") -> str:
    """A float as snapshot text: always recognisable as a float (`16.0`, never `16`).

    Whole numbers below 1e15 (counters, clock readings) are written exactly; in "exact" mode
    every float is its full repr, otherwise `FLOAT_DIGITS` significant digits.
    """
    value = float(value)
    if float_mode == "exact" or (value.is_integer() and abs(value) < 1e15):
        return repr(value)
    text = f"{value:.{FLOAT_DIGITS}g}"
    return text if any(c in text for c in ".en") else f"{text}.0"


def _float_summary(values: Any, float_mode: str) -> list[str]:
    """norm and abs-max over the finite values, in float64 (or the values, if few)."""
    import torch

    flat = values.flatten()
    if flat.numel() <= _SHOWN_VALUES:
        return ["values=[" + ", ".join(format_float(v, float_mode=float_mode) for v in flat) + "]"]
    finite = flat[flat.isfinite()]
    parts = []
    if finite.numel():
        norm = float(torch.linalg.vector_norm(finite))
        absmax = float(finite.abs().max())
        parts.append(
            f"norm={format_float(norm, float_mode=float_mode)}, "
            f"absmax={format_float(absmax, float_mode=float_mode)}"
        )
    if finite.numel() != flat.numel():
        parts.append(f"nonfinite={flat.numel() - finite.numel()}")
    return parts


def describe_tensor(tensor: Any, *, float_mode: str = "tolerant", checked: bool = True) -> str:
    """The one-line text of a tensor in a snapshot; `checked=False` leaves its values out
    (a path whose values differ from machine to machine: shape and dtype only)."""
    import torch

    head = f"shape={list(tensor.shape)}, dtype={str(tensor.dtype).removeprefix('torch.')}"
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        kind = "quantized" if tensor.is_quantized else str(tensor.layout).removeprefix("torch.")
        return f"Tensor({head}, layout={kind}, not digested)"
    if tensor.device.type == "meta":
        return f"Tensor({head}, device=meta, no data)"
    data = tensor.detach().cpu()
    floating = data.is_floating_point() or data.is_complex()
    if not checked:
        return f"Tensor({head})"
    parts = [head]
    if not floating or float_mode == "exact":
        parts.append(f"sha256='{tensor_digest(data)}'")
    if data.numel() == 0:
        parts.append("empty")
    elif not floating:
        flat = data.flatten()
        if flat.numel() <= _SHOWN_VALUES:
            parts.append(f"values={flat.tolist()}")
        else:
            numeric = flat.to(torch.int64)
            parts.append(f"min={int(numeric.min())}, max={int(numeric.max())}")
    elif data.is_complex():
        parts += _float_summary(data.abs().double(), float_mode)
    else:
        parts += _float_summary(data.double(), float_mode)
    return f"Tensor({', '.join(parts)})"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


def describe_number_list(
    data: Sequence[Any], *, float_mode: str = "tolerant", checked: bool = True
) -> str:
    """A long list of numbers (an RNG state) as one line. Integers are digested from their
    exact decimal text, so values beyond 2**53 or 2**63 are never rounded together."""
    import torch

    kind = type(data).__name__
    if all(isinstance(v, numbers.Integral) for v in data) and checked:
        text = ",".join(str(int(v)) for v in data)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        ints = [int(v) for v in data]
        return f"{kind}(len={len(data)}, sha256='{digest}', min={min(ints)}, max={max(ints)})"
    values = torch.tensor([float(v) for v in data], dtype=torch.float64)
    described = describe_tensor(values, float_mode=float_mode, checked=checked)
    return described.replace("Tensor(shape=", f"{kind}(len={len(data)}, shape=", 1)


def _is_long_number_list(data: Any) -> bool:
    return (
        isinstance(data, (list, tuple))
        and len(data) > _LONG_LIST
        and all(_is_number(v) for v in data)
    )


def _is_primitive(value: Any) -> bool:
    return value is None or type(value) in (bool, int, float, str)


def _flow_leaves(data: Any, depth: int) -> int | None:
    """How many primitives a container holds, if it can go on one line (else None)."""
    if _is_primitive(data):
        return 1
    if depth == 0 or type(data) not in (list, tuple, dict) or not data:
        return None
    if isinstance(data, dict) and not all(type(k) is str for k in data):
        return None
    total = 0
    for value in data.values() if isinstance(data, dict) else data:
        leaves = _flow_leaves(value, depth - 1)
        if leaves is None:
            return None
        total += leaves
    return total


def _strings_length(data: Any) -> int:
    if isinstance(data, str):
        return len(data)
    if isinstance(data, dict):
        return sum(len(k) + _strings_length(v) for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return sum(_strings_length(v) for v in data)
    return 0


def _is_flow_container(data: Any) -> bool:
    """Small lists, tuples and dicts of primitives (nested up to `_FLOW_DEPTH`) go on one line,
    so a PR diff stays short; each float in it keeps its own path (`...payload.reward`) for
    tolerance rules.

    The decision depends on the structure and the length of the strings only, never on how a
    float is written, so a value within tolerance never changes the layout."""
    if type(data) not in (list, tuple, dict):
        return False
    leaves = _flow_leaves(data, _FLOW_DEPTH)
    return leaves is not None and leaves <= _FLOW_LEAVES and _strings_length(data) <= _FLOW_TEXT


MATRIX_SNAPSHOTS = "__ckpt_snapshots__"
# Where the matrix kept its snapshots before 0.3: inside syrupy's `__snapshots__`, which
# syrupy takes to belong to the test files next to it (see `snapshot_dirname_for`).
OLD_MATRIX_SNAPSHOTS = "__snapshots__"


def snapshot_dirname_for(subject: str, *, root: str = MATRIX_SNAPSHOTS) -> str:
    """Each subject's matrix snapshots live in their own folder, outside every `__snapshots__`.

    syrupy scans a test file's `__snapshots__` folder recursively and treats any file there that
    its extension does not own as an orphan of a deleted test, deleted by `--snapshot-update`
    (`Deleted unknown snapshot collection`). A project's own `snapshot` tests next to the
    rootdir would so delete the matrix snapshots of every subject but the one under test."""
    return f"{root}/{_UNSAFE_DIR_CHARS.sub('_', subject) or 'subject'}"


class CkptSnapshotExtension(AmberSnapshotExtension):
    """The tensor-aware amber extension. Class attributes configure it (built per session by
    `make_snapshot_extension`): `float_mode`, `tolerances`."""

    # One dot only: syrupy matches a snapshot file to its test by the file's stem.
    file_extension = "ckpt-ambr"
    # The snapshot names this session's matrix generates (None: every name, for `ckpt_snapshot`)
    judged_names: ClassVar[frozenset[str] | None] = None
    float_mode: ClassVar[str] = "tolerant"
    tolerances: ClassVar[Tolerances] = Tolerances(DEFAULT_TOLERANCE)
    # The rule patterns some serialized value's path matched (a pattern never in it did nothing)
    matched_patterns: ClassVar[set[str]] = set()

    def owns_snapshot_collection(self, *, filepath: str, test_location: Any) -> bool:
        """Only our files directly in this extension's folder: never a matrix subject's folder
        under a test's `__snapshots__`, nor another extension's file."""
        folder = Path(self.dirname(test_location=test_location))
        return Path(filepath).parent == folder and self.is_snapshot_location(location=filepath)

    def discover_snapshots(
        self, *, test_location: Any, ignore_extensions: list[str] | None = None
    ) -> SnapshotCollections:
        """Our own collections only, and in them only the snapshots this session may judge.

        syrupy deletes (on `--snapshot-update`) or reports as unused whatever discovery returns
        and no test used. Files we do not own are not ours to call unknown; a matrix file's
        entries for cells not collected this run (`--ckpt-stages`, `--ckpt-grids`) are not
        unused, only untested: both are left out, so an update touches only what ran."""
        found = SnapshotCollections()
        for collection in super().discover_snapshots(
            test_location=test_location, ignore_extensions=ignore_extensions
        ):
            if not self.owns_snapshot_collection(
                filepath=collection.location, test_location=test_location
            ):
                continue
            if self.judged_names is not None:
                kept = SnapshotCollection(location=collection.location)
                for snapshot in collection:
                    if snapshot.name in self.judged_names:
                        kept.add(snapshot)
                if not kept.has_snapshots:
                    continue  # an empty collection would be deleted as unknown
                collection = kept
            found.add(collection)
        return found

    def compare(self, serialized_data: Any, snapshot_data: Any) -> Comparison:
        return compare_snapshots(str(snapshot_data), str(serialized_data), self.tolerances)

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        if self.float_mode == "exact":
            return bool(serialized_data == snapshot_data)
        return self.compare(serialized_data, snapshot_data).matches

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        """Only real differences: lines that differ within tolerance are shown as recorded,
        and each float beyond its tolerance is listed with both values first."""
        if snapshot_data:
            for path in newly_masked(str(serialized_data), str(snapshot_data), self.tolerances):
                yield (
                    f"{path}: an 'unchecked' rule masks it now, but the snapshot recorded its "
                    "value: the snapshot needs re-recording (--snapshot-update)"
                )
        if self.float_mode == "exact" or snapshot_data is None or snapshot_data == "":
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        comparison = self.compare(serialized_data, snapshot_data)
        for difference in comparison.differences[:20]:
            yield f"float beyond tolerance: {difference}"
        if len(comparison.differences) > 20:
            yield f"... and {len(comparison.differences) - 20} more floats beyond tolerance"
        yield from super().diff_lines(comparison.normalized, snapshot_data)


def newly_masked(received: str, snapshot: str, tolerances: Tolerances) -> list[str]:
    """Paths an `unchecked` rule masks in `received` whose recorded text differs: the rule
    came after the recording (an ini change), not a change in the value."""
    recorded = {line.path: line for line in parse_snapshot(snapshot) if line.path}
    paths: list[str] = []
    for line in parse_snapshot(received):
        before = recorded.get(line.path)
        if not line.path or before is None or before.text.strip() == line.text.strip():
            continue
        floats = [p for p in before.float_paths if not tolerances.for_path(p).compares]
        if floats:
            paths += floats
        elif not tolerances.for_path(line.path).compares or _differs_only_at_masks(
            line.text.strip(), before.text.strip()
        ):
            paths.append(line.path)
    return paths


def _differs_only_at_masks(received: str, recorded: str) -> bool:
    """`'a': dict({'host': <str>})` vs `'a': dict({'host': 'node-7'})`: equal but for masks."""
    parts = _MASK.split(received)
    if len(parts) == 1:
        return False
    pattern = "(.+?)".join(re.escape(part) for part in parts)
    match = re.fullmatch(pattern, recorded)
    return match is not None and not any(_MASK.fullmatch(g) for g in match.groups())


def make_snapshot_extension(
    float_mode: str = "tolerant",
    *,
    default: Tolerance = DEFAULT_TOLERANCE,
    rules: Sequence[ToleranceRule] = (),
    dirname: str | None = None,
    judged_names: Iterable[str] | None = None,
) -> type[CkptSnapshotExtension]:
    """The extension class for one session's settings (built once per session).

    `rules` override `default` for matching paths (first match wins); `dirname` replaces
    syrupy's `__snapshots__` folder (the matrix uses `snapshot_dirname_for(subject)`);
    `judged_names`, the snapshot names the session can run: entries of other names are never
    reported unused nor deleted.
    """
    if float_mode not in FLOAT_MODES:
        raise ValueError(f"unknown float mode {float_mode!r}; expected one of {FLOAT_MODES}")

    tolerances = Tolerances(default, tuple(rule.with_defaults(default) for rule in rules))

    matched_patterns: set[str] = set()

    def checked(path: str) -> bool:
        rule = tolerances.rule_for(path)
        if rule is None:
            return tolerances.default.compares
        matched_patterns.add(rule.pattern)
        return rule.tolerance.compares

    class TensorPlugin(AmberDataSerializerPlugin):
        @classmethod
        def is_data_serializable(cls, data: Any) -> bool:
            import torch

            return (
                isinstance(data, torch.Tensor)
                or (_is_number(data) and type(data) not in (bool, int, float))
                or _is_long_number_list(data)
                or _is_flow_container(data)
            )

        @classmethod
        def serialize(cls, data: Any, *, depth: int = 0, path: Any = (), **kwargs: Any) -> str:
            import torch

            where = dotted_path(path)
            if isinstance(data, torch.Tensor):
                text = describe_tensor(data, float_mode=float_mode, checked=checked(where))
            elif _is_long_number_list(data):
                text = describe_number_list(data, float_mode=float_mode, checked=checked(where))
            elif _is_flow_container(data):
                text = _flow_text(data, where)
            else:  # a number type of its own (numpy scalars, float subclasses)
                text = f"{type(data).__name__}({_number_text(data, where)})"
            return AmberDataSerializer.with_indent(text, depth)

    def _number_text(value: Any, where: str) -> str:
        if not checked(where):
            return UNCHECKED_FLOAT if not isinstance(value, numbers.Integral) else "<int>"
        if isinstance(value, numbers.Integral):
            return str(int(value))
        return format_float(float(value), float_mode=float_mode)

    def _flow_text(data: Any, where: str) -> str:
        if type(data) is float:
            return _number_text(data, where)
        if not isinstance(data, (dict, list, tuple)):
            return repr(data) if data is None or checked(where) else masked(data)
        if isinstance(data, dict):
            keys = CkptAmberSerializer.sort(data.keys())
            body = ", ".join(f"{k!r}: {_flow_text(data[k], f'{where}.{k}')}" for k in keys)
            return f"dict({{{body}}})"
        body = ", ".join(_flow_text(v, f"{where}.{i}") for i, v in enumerate(data))
        return f"list([{body}])" if isinstance(data, list) else f"tuple({body})"

    class CkptAmberSerializer(AmberDataSerializer):
        VERSION = f"ckpt-2-{float_mode}"
        serializer_plugins = (TensorPlugin,)

        @classmethod
        def serialize_number(
            cls, data: Any, *, depth: int = 0, path: Any = (), **kwargs: Any
        ) -> str:
            if isinstance(data, float):
                return cls.with_indent(_number_text(data, dotted_path(path)), depth)
            if not checked(dotted_path(path)):
                return cls.with_indent(masked(data), depth)
            return super().serialize_number(data, depth=depth, path=path, **kwargs)

        @classmethod
        def serialize_string(cls, data: Any, *, depth: int = 0, path: Any = (), **kw: Any) -> str:
            if not checked(dotted_path(path)):  # a version string, a hostname, an ISO time
                return cls.with_indent(masked(data), depth)
            return super().serialize_string(data, depth=depth, path=path, **kw)

        @classmethod
        def serialize_unknown(cls, data: Any, *, depth: int = 0, path: Any = (), **kw: Any) -> str:
            if data is not None and not checked(dotted_path(path)):  # a datetime, a UUID
                return cls.with_indent(masked(data), depth)
            return super().serialize_unknown(data, depth=depth, path=path, **kw)

    attributes: dict[str, Any] = {
        "serializer_class": CkptAmberSerializer,
        "float_mode": float_mode,
        "tolerances": tolerances,
        "matched_patterns": matched_patterns,
    }
    if dirname is not None:
        attributes["snapshot_dirname"] = dirname
    if judged_names is not None:
        attributes["judged_names"] = frozenset(judged_names)
    return type("CkptSnapshotExtension", (CkptSnapshotExtension,), attributes)

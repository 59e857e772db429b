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
from pytest_ckpt.plugin.snapshot_text import (
    DEFAULT_TOLERANCE,
    FLOAT_MODES,
    UNCHECKED_FLOAT,
    _is_flow_container,
    _is_long_number_list,
    _is_number,
    describe_number_list,
    describe_tensor,
    dotted_path,
    format_float,
    masked,
)

_UNSAFE_DIR_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MASK = re.compile(r"<[A-Za-z_]\w*>")


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


class _SessionText:
    """How one session writes values: its float mode, and which paths its tolerances check
    (the patterns that matched a path are kept, to warn about the others at the end)."""

    def __init__(self, float_mode: str, tolerances: Tolerances) -> None:
        self.float_mode = float_mode
        self.tolerances = tolerances
        self.matched_patterns: set[str] = set()

    def checked(self, path: str) -> bool:
        rule = self.tolerances.rule_for(path)
        if rule is None:
            return self.tolerances.default.compares
        self.matched_patterns.add(rule.pattern)
        return rule.tolerance.compares

    def number(self, value: Any, where: str) -> str:
        if not self.checked(where):
            return UNCHECKED_FLOAT if not isinstance(value, numbers.Integral) else "<int>"
        if isinstance(value, numbers.Integral):
            return str(int(value))
        return format_float(float(value), float_mode=self.float_mode)

    def flow(self, data: Any, where: str) -> str:
        if type(data) is float:
            return self.number(data, where)
        if not isinstance(data, (dict, list, tuple)):
            return repr(data) if data is None or self.checked(where) else masked(data)
        if isinstance(data, dict):
            keys = AmberDataSerializer.sort(data.keys())
            body = ", ".join(f"{k!r}: {self.flow(data[k], f'{where}.{k}')}" for k in keys)
            return f"dict({{{body}}})"
        body = ", ".join(self.flow(v, f"{where}.{i}") for i, v in enumerate(data))
        return f"list([{body}])" if isinstance(data, list) else f"tuple({body})"

    def plugin_value(self, data: Any, where: str) -> str:
        """A value the tensor plugin serializes (see `_tensor_plugin`)."""
        import torch

        mode = self.float_mode
        if isinstance(data, torch.Tensor):
            return describe_tensor(data, float_mode=mode, checked=self.checked(where))
        if _is_long_number_list(data):
            return describe_number_list(data, float_mode=mode, checked=self.checked(where))
        if _is_flow_container(data):
            return self.flow(data, where)
        # a number type of its own (numpy scalars, float subclasses)
        return f"{type(data).__name__}({self.number(data, where)})"


def _tensor_plugin(text: _SessionText) -> type[AmberDataSerializerPlugin]:
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
            return AmberDataSerializer.with_indent(
                text.plugin_value(data, dotted_path(path)), depth
            )

    return TensorPlugin


def _serializer(text: _SessionText) -> type[AmberDataSerializer]:
    checked = text.checked

    class CkptAmberSerializer(AmberDataSerializer):
        VERSION = f"ckpt-2-{text.float_mode}"
        serializer_plugins = (_tensor_plugin(text),)

        @classmethod
        def serialize_number(
            cls, data: Any, *, depth: int = 0, path: Any = (), **kwargs: Any
        ) -> str:
            if isinstance(data, float):
                return cls.with_indent(text.number(data, dotted_path(path)), depth)
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

    return CkptAmberSerializer


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
    text = _SessionText(float_mode, tolerances)
    attributes: dict[str, Any] = {
        "serializer_class": _serializer(text),
        "float_mode": float_mode,
        "tolerances": tolerances,
        "matched_patterns": text.matched_patterns,
    }
    if dirname is not None:
        attributes["snapshot_dirname"] = dirname
    if judged_names is not None:
        attributes["judged_names"] = frozenset(judged_names)
    return type("CkptSnapshotExtension", (CkptSnapshotExtension,), attributes)

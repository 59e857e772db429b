"""Why a resume differs from the run that never stopped: the cause, named before its effects.

A resume mismatch shows effects (a metric, an action, a final tensor). The cause is almost
always state the step read that the checkpoint did not bring back. So the live systems are
compared where the two runs should be identical, at the start of the step (continued vs
resumed, each a `hidden_state.Capture`), and each difference is said in one line: what it is
and where (`system['generator'] (a torch.Generator)`), whether the step used it (a generator or
global RNG that advanced, a buffer or attribute that changed), whether `export_state()` holds
it at all (found by name and value in the exported state), and the fix. Ordered by how surely
each explains a different step: RNGs first, then optimizer and scheduler state, buffers and
attributes the step changed, parameters, and anything else that merely differs; last, state
the step only overwrote (different when the resumed step began, equal in both runs after it:
a scratch buffer), which rarely explains a different step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.checks.export_index import ExportIndex, same
from pytest_ckpt.checks.hidden_state import GLOBAL_RNGS, Capture, Leaf

_RNG_FIX = {
    "torch": "save torch.get_rng_state() and torch.set_rng_state() it at the end of rebuild()",
    "python": "save random.getstate() and random.setstate() it in rebuild()",
    "numpy": (
        "save np.random.get_state() as primitives (its key array as a tensor, the rest as "
        "numbers: weights_only=True refuses the array) and np.random.set_state() it in rebuild()"
    ),
    "cuda": "save torch.cuda.get_rng_state_all() and torch.cuda.set_rng_state_all() it",
}


@dataclass(slots=True, frozen=True)
class Cause:
    rank: int
    text: str


def diagnose_resume(
    exported: Mapping[str, Any],
    before: Capture,
    after: Capture,
    resumed: Capture,
    resumed_after: Capture | None = None,
) -> list[str]:
    """One line per piece of state that differs between the start of the continued step
    (`before`) and the start of the resumed one (`resumed`), best explanation first; `after`
    (the continued run after its steps) tells what the step used. With `resumed_after` (the
    resumed run after its steps), state equal in both runs after the steps was only
    overwritten (a scratch buffer), most likely not read: it goes last, said so."""
    index = ExportIndex(exported)
    causes: list[Cause] = []
    for name, state in before.rngs.items():
        if name not in after.rngs or name not in resumed.rngs:
            continue
        if not same(state, after.rngs[name]) and not same(state, resumed.rngs[name]):
            if resumed_after is not None and same(after.rngs[name], resumed_after.rngs.get(name)):
                causes.append(_overwritten(GLOBAL_RNGS[name]))
            else:
                causes.append(Cause(0, _rng_cause(name, state, index)))
    for path, leaf in before.leaves.items():
        other = resumed.leaves.get(path)
        if other is None or (other.kind == leaf.kind and same(leaf.value, other.value)):
            continue
        later = after.leaves.get(path)
        changed = later is not None and not same(leaf.value, later.value)
        ends = None if resumed_after is None else resumed_after.leaves.get(path)
        if other.kind == leaf.kind and _equal_leaves(later, ends):
            causes.append(_overwritten(f"{path} ({_what(leaf)})"))
            continue
        if other.kind != leaf.kind:  # an environment's state that is None until a reset
            cause = _absent_cause(path, leaf, other, changed, index)
        else:
            cause = _leaf_cause(path, leaf, other, changed, index)
        if cause is not None:
            causes.append(cause)
    return [cause.text for cause in sorted(causes, key=lambda c: c.rank)]


def _equal_leaves(a: Leaf | None, b: Leaf | None) -> bool:
    return a is not None and b is not None and a.kind == b.kind and same(a.value, b.value)


def _overwritten(what: str) -> Cause:
    """Different when the resumed step began, equal once it ended: its old value left no trace,
    so the step most likely wrote it without reading it (a step that read it and then
    overwrote it would still be named, only last)."""
    return Cause(
        9,
        f"{what} differs at the start of the resumed step but is equal in both runs after it: "
        "the step only overwrites it (scratch state), so it is an unlikely cause",
    )


def diagnose_rebuild(exported: Mapping[str, Any], live: Capture, rebuilt: Capture) -> list[str]:
    """What differs between a live system and the one rebuilt from its checkpoint, for a
    forward probe that disagrees although the exported states are equal."""
    index = ExportIndex(exported)
    causes: list[Cause] = []
    for path, leaf in live.leaves.items():
        other = rebuilt.leaves.get(path)
        if leaf.kind not in ("buffer", "tensor", "array", "parameter", "attribute"):
            continue
        if other is None or other.kind != leaf.kind or same(leaf.value, other.value):
            continue
        where = _find(index, path, leaf)
        held = (
            "it is not in export_state()"
            if where is None
            else f"export_state() holds it at {where}, but rebuild() does not restore it"
        )
        rank = {"attribute": 2, "parameter": 1}.get(leaf.kind, 0) + (3 if where else 0)
        causes.append(
            Cause(
                rank,
                f"{path} ({_what(leaf)}) differs between the live and the rebuilt system; {held}",
            )
        )
    return [cause.text for cause in sorted(causes, key=lambda c: c.rank)]


def _rng_cause(name: str, state: Any, index: ExportIndex) -> str:
    what = GLOBAL_RNGS[name]
    where = index.find_equal(state)
    if where is None:
        return (
            f"{what} was drawn from during the step but its state is not in export_state(): "
            f"{_RNG_FIX[name]}"
        )
    return (
        f"{what} was drawn from during the step; export_state() holds its state at {where}, but "
        f"the resumed run starts from another: restore it last in rebuild() (building modules "
        f"draws from it)"
    )


def _leaf_cause(
    path: str, leaf: Leaf, other: Leaf, changed: bool, index: ExportIndex
) -> Cause | None:
    kind, where = leaf.kind, _find(index, path, leaf)
    if kind in ("generator", "numpy generator"):
        if not changed:
            return None  # not used by this step
        save = "generator.get_state()" if kind == "generator" else "generator.bit_generator.state"
        what = "a torch.Generator" if kind == "generator" else f"a {leaf.owner}"
        if where is None:
            text = (
                f"{path} ({what}) advanced during the step but its state is not in "
                f"export_state(): save {save}"
            )
        else:
            text = (
                f"{path} ({what}) advanced during the step; export_state() holds its state at "
                f"{where}, but rebuild() does not restore it"
            )
        return Cause(0, text)
    if kind == "param_groups":
        return Cause(1, _param_groups_cause(path, leaf.value, other.value, index))
    if kind in ("scheduler", "scaler", "optimizer state"):
        return Cause(1, _training_state_cause(path, leaf, other, index))
    verb = "changed during the step" if changed else "differs at the start of the resumed step"
    if kind == "parameter":
        return Cause(4, f"{path} (a parameter) {verb}: rebuild() does not load the model's weights")
    if kind == "attribute":
        values = (
            f"{path} = {leaf.value!r:.60} in the continued run but {other.value!r:.60} in the "
            "resumed one"
        )
        rank = 3 if changed else 5
    else:
        values, rank = f"{path} ({_what(leaf)}) {verb}", 2 if changed else 5
    if where is None:
        return Cause(rank, f"{values}; it is not in export_state(): {_save_advice(leaf)}")
    return Cause(
        rank, f"{values}; export_state() holds it at {where}, but rebuild() does not restore it"
    )


def _absent_cause(
    path: str, leaf: Leaf, other: Leaf, changed: bool, index: ExportIndex
) -> Cause | None:
    """`leaf` is something else in the resumed run: None (never set up: an environment not
    reset, an observation discarded) or another kind of value."""
    if leaf.kind in ("generator", "numpy generator") and not changed:
        return None
    if not _is_none(leaf) and not _is_none(other):
        return _changed_type_cause(path, leaf, other, changed, index)
    now = repr(other.value)[:40] if other.kind == "attribute" else _what(other)
    verb = "changed during the step" if changed else "is there at the start of the step"
    rank = (0 if "generator" in leaf.kind else 2) if changed else 5
    held = (
        f"it is not in export_state(): {_save_advice(leaf)}"
        if _find(index, path, leaf) is None
        else "export_state() holds it, but rebuild() does not restore it"
    )
    return Cause(rank, f"{path} ({_what(leaf)}) {verb} but is {now} in the resumed run; {held}")


def _is_none(leaf: Leaf) -> bool:
    return leaf.kind == "attribute" and leaf.value is None


def _changed_type_cause(
    path: str, leaf: Leaf, other: Leaf, changed: bool, index: ExportIndex
) -> Cause:
    """A value that is something else in the resumed run (a float64 come back as a 0-d array):
    if export_state() holds it by name, rebuild() restores it with the wrong type."""
    head = (
        f"{path} changed type: {_type_text(leaf)} in the continued run but {_type_text(other)} "
        "in the resumed one"
    )
    where = index.find_path(_last_name(path))
    if where is None:
        return Cause(
            2 if changed else 5, f"{head}; it is not in export_state(): {_save_advice(leaf)}"
        )
    return Cause(
        2 if changed else 5,
        f"{head}; export_state() holds it at {where}: rebuild() restores it as another type "
        "(convert it back, e.g. float(...))",
    )


def _type_text(leaf: Leaf) -> str:
    if leaf.kind == "array":
        return f"a {leaf.value.ndim}-d numpy array ({leaf.value.dtype})"
    return _what(leaf)


def _param_groups_cause(path: str, before: list, resumed: list, index: ExportIndex) -> str:
    detail = "the number of param_groups differs"
    for i, (a, b) in enumerate(zip(before, resumed, strict=False)):
        key = next((k for k in a if k not in b or not same(a[k], b[k])), None)
        if key is not None:
            detail = (
                f"{path}[{i}][{key!r}] is {a[key]!r:.40} in the continued run but "
                f"{b.get(key)!r:.40} in the resumed one"
            )
            break
    if index.find_key("param_groups") is None:
        return f"{detail}: save optimizer.state_dict() in export_state() and load it in rebuild()"
    return (
        f"{detail}: rebuild() does not restore the optimizer's param_groups (load the optimizer's "
        "state_dict after creating its schedulers: creating a scheduler sets the learning rate)"
    )


def _training_state_cause(path: str, leaf: Leaf, other: Leaf, index: ExportIndex) -> str:
    noun = {"scheduler": "scheduler", "scaler": "scaler", "optimizer state": "optimizer"}[leaf.kind]
    if leaf.kind == "scheduler" and "last_epoch" in leaf.value:
        head = (
            f"{path} (a {leaf.owner}) is at step {leaf.value['last_epoch']} in the continued run "
            f"but {other.value.get('last_epoch')} in the resumed one"
        )
    elif leaf.kind == "optimizer state":
        head = (
            f"{path} ({leaf.owner}'s per-parameter state: moments, step counts) differs at the "
            "start of the resumed step"
        )
    else:
        head = f"{path} (a {leaf.owner}) differs at the start of the resumed step"
    key = {"scheduler": "last_epoch", "scaler": "scale", "optimizer state": "param_groups"}[
        leaf.kind
    ]
    where = index.find_key(key)
    if where is None:
        return f"{head}: save {noun}.state_dict() in export_state() and load it in rebuild()"
    return (
        f"{head}: export_state() holds a {noun} state at {where}; load it with "
        f"{noun}.load_state_dict() in rebuild()"
    )


def _what(leaf: Leaf) -> str:
    if leaf.kind == "buffer":
        return f"a buffer of {leaf.owner}" + ("" if leaf.persistent else ", persistent=False")
    return {
        "tensor": "a tensor attribute",
        "array": "a numpy array",
        "parameter": "a parameter",
        "attribute": f"a {leaf.owner}",
        "generator": "a torch.Generator",
        "numpy generator": f"a {leaf.owner}",
    }.get(leaf.kind, leaf.kind)


def _save_advice(leaf: Leaf) -> str:
    if leaf.kind == "buffer" and not leaf.persistent:
        return "register the buffer with persistent=True, or save it in export_state()"
    if leaf.kind == "tensor":
        return "register it as a buffer (register_buffer), or save it in export_state()"
    if leaf.kind == "array":
        return (
            "save it as a tensor (torch.from_numpy) in export_state() and restore it in rebuild()"
        )
    return "save it in export_state() and restore it in rebuild()"


def _find(index: ExportIndex, path: str, leaf: Leaf) -> str | None:
    name = _last_name(path)
    if leaf.kind in ("generator", "buffer", "tensor", "parameter"):
        return index.find_tensor(leaf.value, name, by_value=leaf.kind == "generator")
    if leaf.kind == "array":
        import torch

        return index.find_tensor(torch.as_tensor(leaf.value), name, by_value=False)
    if leaf.kind == "attribute":
        return index.find_scalar(leaf.value, name)
    return index.find_equal(leaf.value)


def _last_name(path: str) -> str:
    tail = path.rsplit(".", 1)[-1]
    if tail.endswith("]") and "[" in tail:
        tail = tail[tail.rindex("[") + 1 : -1].strip("'\"")
    return tail

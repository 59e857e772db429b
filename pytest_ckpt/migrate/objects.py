"""Objects as both migration modes see them: the state pickle saves for one (`default_state`),
and the one line that refuses what no rule converts faithfully, the same in both modes: a
call of a function, an object built from constructor arguments (a namedtuple) or from a
state that is not a dict of attributes (numpy, a `__setstate__`), an object whose class the
auditor advises more than its state for, and a call that may be an Enum member
(`enum_member`: the auditor's answer, `audit.global_kinds`, decides).
"""

from __future__ import annotations

from typing import Any

from pytest_ckpt.audit.advice import GENERIC_KIND, MODULE_FIX, fix_for_name, is_dangerous
from pytest_ckpt.audit.global_kinds import describe_global
from pytest_ckpt.migrate.markers import EnumValue, ObjectRecord, Refused

MODULE_STATE = frozenset({"_parameters", "_buffers", "_modules"})  # an nn.Module's state has


def default_state(value: Any) -> dict[str, Any] | None:
    """The attributes pickle saves for `value` when it uses the default reduction
    (`copyreg.__newobj__(cls)` and a dict state, no list or dict items); else None."""
    import copyreg

    try:
        reduced = value.__reduce_ex__(2)
    except Exception:  # a class that refuses to be pickled: not convertible
        return None
    if not isinstance(reduced, tuple) or len(reduced) < 2:
        return None
    func, args = reduced[0], reduced[1]
    # copyreg.__newobj__ / __newobj_ex__: pickle's protocol-2 reducers, not in typeshed
    if func is copyreg.__newobj_ex__:  # type: ignore[attr-defined]
        if not (isinstance(args, tuple) and len(args) == 3 and not args[1] and not args[2]):
            return None
    elif func is not copyreg.__newobj__ or args != (type(value),):  # type: ignore[attr-defined]
        return None
    if any(item is not None for item in reduced[3:5]):
        return None
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, tuple) and len(state) == 2:
        dict_state, slot_state = state
        if all(part is None or isinstance(part, dict) for part in state):
            return merged_state(dict_state, slot_state)
        return None
    return dict(state) if isinstance(state, dict) else ({} if state is None else None)


def merged_state(dict_state: Any, slot_state: Any) -> dict[str, Any]:
    """An object's BUILD state, `(dict_state, slot_state)`, as one dict of attributes."""
    return {**(dict_state or {}), **(slot_state or {})}


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def module_internals() -> frozenset[str]:
    """The attributes every nn.Module has (from the installed torch): not its config."""
    import torch

    return frozenset(vars(torch.nn.Module())) - {"training"}


def new_object(cls: str) -> ObjectRecord | Refused:
    """An object of class `cls` about to get its state, or why it is not converted."""
    reason = object_refusal(cls)
    return ObjectRecord(cls) if reason is None else Refused(reason)


def refuse_call(name: str) -> str:
    """The refusal of a call of the global `name` no rule converts (both modes)."""
    fix = fix_for_name(name)
    if is_dangerous(name):
        return f"{name} is called when unpickling: refusing to convert; fix: {fix.advice}"
    return f"a call of {name} is not data migrate can convert; fix: {fix.advice}"


def refuse_arguments(cls: str) -> str:
    """The refusal of an object built from constructor arguments (a namedtuple)."""
    return (
        f"{cls} is built from constructor arguments (cls.__new__(cls, *args)), not a dict "
        f"of attributes; fix: store a tuple or a dict (namedtuple: ._asdict())"
    )


def refuse_state(cls: str) -> str:
    return (
        f"{cls} is rebuilt from a state that is not a dict of attributes (its own "
        f"__reduce__ or __setstate__); fix: {fix_for_name(cls).advice}"
    )


def object_refusal(cls: str) -> str | None:
    """Why an object of class `cls` is not converted to the dict of its state, or None: the
    auditor advises more than its state for it (numpy, OmegaConf, an optimizer, ...)."""
    fix = fix_for_name(cls)
    if fix.allowlist_helps or fix is MODULE_FIX:
        return None
    return f"{cls} object: its state is not its data ({fix.kind}); fix: {fix.advice}"


def enum_member(name: str, value: Any) -> EnumValue | Refused:
    """`name(value)` with one primitive: an Enum member only if `name` is an Enum class with
    a member of that value (`audit.global_kinds`, the auditor's own answer); a function call
    is code, never a member."""
    found = describe_global(name)
    if found.enum:
        if found.values is None or any(type(v) is type(value) and v == value for v in found.values):
            return EnumValue(name, value)
        return Refused(f"{name} has no member with value {value!r}; fix: store .value")
    if found.kind == "function":
        return Refused(
            f"{name} is a function: a call of it is code, not an Enum member; refusing to "
            f"convert; fix: never load this file with weights_only=False"
        )
    fix = fix_for_name(name)
    if found.kind == "class" and fix.kind == GENERIC_KIND:  # from its source, no Enum base seen
        return Refused(
            f"{name}({value!r:.40}) is a call of a class not known to be an Enum without "
            f"importing it (an Enum base from another module, as transformers' ExplicitEnum, "
            f"is not followed); fix: if it is an Enum, store .value (or migrate a file you "
            f"wrote with --trust); else {fix.advice}"
        )
    if found.kind != "unknown":  # a class with its own advice; a code-running name
        return Refused(refuse_call(name))
    return Refused(
        f"cannot tell whether {name} is an Enum class without importing it; fix: run "
        f"migrate where its module can be found (or name its folder with --path DIR), or "
        f"--trust if you wrote the file"
    )

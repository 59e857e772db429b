"""How to make an object `torch.load(weights_only=True)` accepts, from the object's shape.

Used by the plugin (for objects found in memory) and the auditor (for globals named in a
file), so both give the same advice; migration's conversion table (`migrate.rules`) names
these fixes, one per rule, and carries them out. `allowlist_helps` says whether
`add_safe_globals` would be enough: it is not for classes whose pickle needs more than the
allowlisted class (deque's `extend`, defaultdict's factory, numpy's reconstruct helpers) or
for callables.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Fix:
    kind: str  # a short noun: "Enum", "dataclass", "nn.Module", ...
    advice: str
    allowlist_helps: bool


_BY_QUALNAME: dict[str, Fix] = {
    "collections.deque": Fix("deque", "store list(d) (and maxlen separately)", False),
    "collections.defaultdict": Fix("defaultdict", "store dict(d)", False),
    "builtins.frozenset": Fix("frozenset", "store sorted(list(s))", True),
    "datetime.datetime": Fix(
        "datetime", "store an ISO string (.isoformat()) or a float timestamp", True
    ),
    "datetime.date": Fix("date", "store an ISO string (.isoformat())", True),
    "datetime.time": Fix("time", "store an ISO string (.isoformat())", True),
    "datetime.timedelta": Fix("timedelta", "store .total_seconds()", True),
    "datetime.timezone": Fix("timezone", "store the UTC offset in seconds", True),
    "argparse.Namespace": Fix("argparse.Namespace", "store vars(namespace)", True),
    "uuid.UUID": Fix("UUID", "store str(uuid)", False),
    "functools.partial": Fix("callable", "store the callable's name and look it up on load", False),
    "torch._C.Generator": Fix("torch.Generator", "store generator.get_state()", False),
    "torch.Generator": Fix("torch.Generator", "store generator.get_state()", False),
}

MODULE_FIX = Fix(
    "nn.Module",
    "store module.state_dict() plus a config dict; rebuild the module, then load_state_dict",
    False,
)
ENUM_FIX = Fix("Enum", "store .value (or .name) and rebuild the enum when loading", True)
OBJECT_STATE_FIX = Fix(
    "dataclass or object with attributes", "store to_dict() and rebuild with from_dict()", True
)

_BY_MODULE_PREFIX: tuple[tuple[str, Fix], ...] = (
    ("torch.nn.modules", MODULE_FIX),
    (
        "numpy",
        Fix(
            "numpy object", "store a Python number (.item()) or a tensor (torch.from_numpy)", False
        ),
    ),
    ("pathlib", Fix("path", "store str(path)", False)),
    (
        "omegaconf",
        Fix("OmegaConf config", "store OmegaConf.to_container(cfg, resolve=True)", False),
    ),
    ("torch.optim.lr_scheduler", Fix("LR scheduler", "store scheduler.state_dict()", False)),
    ("torch.optim", Fix("optimizer", "store optimizer.state_dict()", False)),
    ("torch.amp", Fix("GradScaler", "store scaler.state_dict()", False)),
    ("torch.cuda.amp", Fix("GradScaler", "store scaler.state_dict()", False)),
)


def fix_for_type(cls: type) -> Fix:
    """Advice for an instance of `cls` found inside a checkpoint."""
    qualname = f"{cls.__module__}.{cls.__qualname__}"
    if qualname in _BY_QUALNAME:
        return _BY_QUALNAME[qualname]
    if issubclass(cls, enum.Enum):
        return ENUM_FIX
    if dataclasses.is_dataclass(cls):
        return Fix("dataclass", "store to_dict() and rebuild with from_dict()", True)
    if is_module_class(cls):
        return MODULE_FIX
    if cls in (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.LambdaType):
        return Fix("callable", "store the callable's name and look it up on load", False)
    return fix_for_name(qualname)


GENERIC_KIND = "object"


# Globals whose call during unpickling runs code or touches the system: never "fixable".
_DANGEROUS_MODULES = (
    "os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "importlib", "runpy",
    "pickle", "_pickle", "marshal", "ctypes", "webbrowser", "pty", "code", "codeop", "types",
    "functools", "operator", "torch._C._jit", "torch.jit",
)  # fmt: skip
_DANGEROUS_BUILTINS = frozenset(
    {"eval", "exec", "compile", "open", "getattr", "setattr", "__import__", "globals", "vars"}
)


def is_dangerous(qualname: str) -> bool:
    module, _, name = qualname.rpartition(".")
    if module == "builtins":
        return name in _DANGEROUS_BUILTINS
    return any(module == m or module.startswith(m + ".") for m in _DANGEROUS_MODULES)


def fix_for_name(qualname: str) -> Fix:
    """Advice from a global's dotted name alone (what a static scan of a file sees)."""
    if qualname in _BY_QUALNAME:
        return _BY_QUALNAME[qualname]
    if is_dangerous(qualname):
        return Fix(
            "code execution",
            f"never load this file with the unsafe (non-weights_only) loader: unpickling it calls "
            f"{qualname}",
            False,
        )
    for prefix, fix in _BY_MODULE_PREFIX:
        if qualname == prefix or qualname.startswith(prefix + "."):
            return fix
    return Fix(
        GENERIC_KIND,
        "convert it to primitives (str/int/float/bool/None, list, dict, tensors), e.g. with "
        "to_dict()/from_dict()",
        True,
    )


def is_module_class(cls: type) -> bool:
    """Is `cls` an nn.Module subclass? By name, so that nothing here imports torch."""
    return any(
        f"{base.__module__}.{base.__qualname__}" == "torch.nn.modules.module.Module"
        for base in cls.__mro__
    )

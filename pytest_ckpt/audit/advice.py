"""How to make an object `torch.load(weights_only=True)` accepts, from the object's shape.

Used by the plugin (for objects found in memory) and the auditor (for globals named in a
file), so both give the same advice; migration's conversion table (`migrate.rules`) names
these fixes, one per rule, and carries them out. `allowlist_helps` says whether
allow-listing the class could be enough: it is not for classes whose pickle needs an
operation torch refuses (deque's `extend`, defaultdict's items), and never for a function or
a name whose kind is unknown (`global_kinds`: only classes are ever advised). Whether a
given *file* loads with a list is decided by `exact_allowlist`, never from these flags.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from dataclasses import dataclass

from pytest_ckpt.audit.global_kinds import kind_of, runs_code


@dataclass(slots=True, frozen=True)
class Fix:
    kind: str  # a short noun: "Enum", "dataclass", "nn.Module", ...
    advice: str
    allowlist_helps: bool


_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
NUMPY_ARRAY_FIX = Fix(
    "numpy object", "store a tensor (torch.from_numpy(a)) or a list (a.tolist())", False
)
NUMPY_SCALAR_FIX = Fix(
    "numpy object", "store a Python number: float(x), int(x) or bool(x) (x.item())", False
)
_BY_QUALNAME: dict[str, Fix] = {
    "collections.deque": Fix("deque", "store list(d) (and maxlen separately)", False),
    "collections.defaultdict": Fix("defaultdict", "store dict(d)", False),
    "builtins.frozenset": Fix(
        "frozenset",
        "store sorted(list(s)), or tuple(sorted(s)) where it must stay hashable (a dict key, "
        "a set member)",
        True,
    ),
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
    **{f"{module}._reconstruct": NUMPY_ARRAY_FIX for module in _NUMPY_MULTIARRAY},
    **{f"{module}.scalar": NUMPY_SCALAR_FIX for module in _NUMPY_MULTIARRAY},
}

MODULE_FIX = Fix(
    "nn.Module",
    "store module.state_dict() plus its constructor config (a dict of primitives); rebuild "
    "the module from the config, then load_state_dict",
    True,
)
FLOAT_FIX = Fix("float subclass", "store float(x)", True)
INT_FIX = Fix("int subclass", "store int(x)", True)
FUNCTION_FIX = Fix(
    "function",
    "store the function's dotted name (f.__module__ + '.' + f.__qualname__) and look it up "
    "on load; never allow-list a function: torch would let the file call it",
    False,
)
NUMPY_RNG_FIX = Fix(
    "numpy RNG",
    "store the generator's state as data: rng.bit_generator.state (a dict of ints), or for "
    "np.random.get_state() its key array as a tensor (torch.from_numpy(state[1])) or a list, "
    "and the other fields as ints and floats",
    False,
)
ENUM_FIX = Fix("Enum", "store .value (or .name) and rebuild the enum when loading", True)
OBJECT_STATE_FIX = Fix(
    "dataclass or object with attributes", "store to_dict() and rebuild with from_dict()", True
)

# Fixes that keep what the object holds (a dataclass becomes a dict of its fields, a deque
# a list): the objects inside still need their own fixes. Every other fix replaces the
# object whole (an Enum by its value, a module by its state_dict()), and what it held
# (a Linear inside a module, a datetime's timezone) goes with it.
_KEEPS_CONTENTS = frozenset(
    {OBJECT_STATE_FIX.kind, "dataclass", "deque", "defaultdict", "frozenset", "argparse.Namespace"}
)


def keeps_contents(fix_kind: str) -> bool:
    """Does the fix of this kind keep the object's contents (so they are walked)?"""
    return fix_kind in _KEEPS_CONTENTS or fix_kind == GENERIC_KIND


_BY_MODULE_PREFIX: tuple[tuple[str, Fix], ...] = (
    ("torch.nn.modules", MODULE_FIX),
    ("numpy.random", NUMPY_RNG_FIX),
    (
        "numpy",
        Fix(
            "numpy object", "store a Python number (.item()) or a tensor (torch.from_numpy)", False
        ),
    ),
    ("pathlib", Fix("path", "store str(path)", True)),
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
    if issubclass(cls, float) and cls.__module__ != "numpy":
        return FLOAT_FIX
    if issubclass(cls, int) and cls is not bool and cls.__module__ != "numpy":
        return INT_FIX
    if cls in (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.LambdaType):
        return Fix("callable", "store the callable's name and look it up on load", False)
    return fix_for_name(qualname)


GENERIC_KIND = "object"


def is_dangerous(qualname: str) -> bool:
    """Does calling this global during unpickling run code or touch the system?"""
    return runs_code(qualname)


def fix_for_name(qualname: str) -> Fix:
    """Advice from a global's dotted name alone (what a static scan of a file sees)."""
    if qualname in _BY_QUALNAME:
        return _BY_QUALNAME[qualname]
    if is_dangerous(qualname):
        return code_fix(qualname)
    for prefix, fix in _BY_MODULE_PREFIX:
        if qualname == prefix or qualname.startswith(prefix + "."):
            return fix
    if kind_of(qualname) == "function":
        return FUNCTION_FIX
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


def code_fix(qualname: str) -> Fix:
    """A global whose call runs code: never allow-list it, never load the file unsafely."""
    return Fix(
        "code execution",
        f"never load this file with the unsafe (non-weights_only) loader and never allow-list "
        f"{qualname}: unpickling it calls {qualname}, which runs code the file chooses",
        False,
    )

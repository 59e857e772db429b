"""Strict reading of the primitive dicts that checkpoints hold.

`from_dict` methods go through `read_fields` so that a wrong schema version, a missing field,
a mistyped field or an unknown field is one clear `ValueError` naming the object and the
field, never a `KeyError` deep inside, and never a silent `.get(key, default)` (a flipped
default in such a `.get` is how a real migration changed behaviour without anyone noticing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FieldType = type | tuple[type, ...]


def _type_names(expected: tuple[type, ...]) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in expected)


def check_field(value: Any, expected: FieldType, *, where: str, name: str) -> Any:
    """Return `value` if it has one of the `expected` types, else raise ValueError.

    bool is never accepted where only int or float is expected (True is an int to Python,
    not to a checkpoint reader). An int is accepted where float is expected and returned as a
    float, so a timestamp written as `5` still reads back as `5.0`.
    """
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, allowed):
        return value
    elif float in allowed and isinstance(value, int):
        return float(value)
    raise ValueError(
        f"{where}: field {name!r} must be {_type_names(allowed)}, "
        f"got {type(value).__name__} {value!r:.60}"
    )


def read_fields(
    data: Any, spec: Mapping[str, FieldType], *, where: str, version: int
) -> dict[str, Any]:
    """Validate a versioned dict against `spec` (field name -> accepted types).

    The dict must carry `schema_version == version`, every field of `spec` and nothing else.
    Returns the fields (without `schema_version`), type-checked.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(data).__name__}")
    if "schema_version" not in data:
        raise ValueError(f"{where}: missing required field 'schema_version'")
    found = data["schema_version"]
    if isinstance(found, bool) or not isinstance(found, int):
        raise ValueError(f"{where}: field 'schema_version' must be int, got {type(found).__name__}")
    if found != version:
        hint = "upgrade pytest-ckpt" if found > version else "migrate the checkpoint"
        raise ValueError(
            f"{where}: schema_version {found} is not supported (this code reads version "
            f"{version}); {hint}"
        )
    missing = [name for name in spec if name not in data]
    if missing:
        raise ValueError(f"{where}: missing required field(s) {', '.join(map(repr, missing))}")
    unknown = sorted(str(k) for k in data if k != "schema_version" and k not in spec)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    return {
        name: check_field(data[name], expected, where=where, name=name)
        for name, expected in spec.items()
    }


_PRIMITIVE_LEAVES = (str, int, float, bool, type(None))


def ensure_primitive(value: Any, *, where: str) -> None:
    """Raise TypeError naming the path of the first value that is not a checkpoint primitive.

    Allowed: str/int/float/bool/None, and lists, tuples and str-keyed dicts of them. Tensors are
    not allowed here: this guards payloads that must stay readable as plain data.
    Iterative, so a deeply nested payload cannot exhaust the recursion limit.
    """
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _PRIMITIVE_LEAVES):
            continue
        if type(item) in (list, tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
        elif type(item) is dict:
            for key, v in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"{path} has a non-str key {key!r}; use str keys")
                stack.append((f"{path}[{key!r}]", v))
        else:
            raise TypeError(
                f"{path} is {type(item).__module__}.{type(item).__qualname__}, not a checkpoint "
                f"primitive (str/int/float/bool/None, list, tuple, dict)"
            )

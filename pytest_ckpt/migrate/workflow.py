"""`migrate_file`: the whole migration of one file, as a library function.

`pytest-ckpt migrate IN OUT` is a thin wrapper over it (`cli.py`). Static by default
(`migrate.static`: nothing from IN runs); `trust=True` unpickles IN for real
(`migrate.trusted`). Either way IN is never overwritten, an existing OUT only with
`force=True`, and OUT is written atomically, only if every object converted, the adapter (if
any) accepted the result and the written bytes pass the auditor (checked before the rename,
so a refused migration never touches an existing OUT).

An adapter turns the converted primitives into a project's current format (the reference
system's schema 0 -> 1, say): a function, or `"module:function"`, imported by name. It is the
user's own code, named on the command line, never anything from IN.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.formats.torch_archive import regular_file_size
from pytest_ckpt.errors import ConversionRefused, Unreadable
from pytest_ckpt.migrate.frameworks import lightning_refusals

REFUSED, UNREADABLE = 1, 2  # the CLI's exit statuses for a MigrationFailed
# What an adapter raises to say "not my input": its message is the reason. Anything else it
# raises refuses IN too, named with its type (an adapter tripping over IN's data).
_REFUSALS = (KeyError, TypeError, ValueError)


@dataclass(slots=True, frozen=True)
class Adapter:
    """A function from the converted checkpoint to the project's format; `what` reports it
    (`root: <what>`), `refusal` names what the input was not when it raises."""

    function: Callable[[Any], Any]
    what: str
    refusal: str


# `--reference-v0`: the bundled reference system's adapter, named by string, never imported
# by the core unless asked for.
REFERENCE_V0 = "pytest_ckpt.reference.schema_v0:adapt_v0"
_ALIASES = {
    REFERENCE_V0: (
        "schema 0 reference checkpoint -> schema 1",
        "not a schema-0 reference checkpoint",
    )
}


@dataclass(slots=True, frozen=True)
class Migration:
    """What `migrate_file` wrote: OUT and one line per conversion, by object path."""

    target: Path
    conversions: tuple[str, ...]


class MigrationFailed(Exception):
    """OUT was not written (or replaced). `status`: REFUSED or UNREADABLE (bad input or
    arguments); `details`: one line per refused object path. The message is one line."""

    def __init__(self, message: str, status: int, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.details = details


class _NotLoadable(Exception):
    """The converted bytes fail the audit: they are not kept."""


def load_adapter(spec: str) -> Adapter:
    """The adapter `"module:function"` (imports `module`); raises MigrationFailed."""
    module, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module), name) if module and name else None
    except (ImportError, AttributeError) as err:
        raise MigrationFailed(f"--adapt {spec}: cannot import it ({err})", UNREADABLE) from None
    if not callable(function):
        raise MigrationFailed(
            f"--adapt {spec}: not a function; fix: name one as module:function", UNREADABLE
        )
    what, refusal = _ALIASES.get(spec, (f"adapted by {spec}", f"refused by {spec}"))
    return Adapter(function, what, refusal)


def migrate_file(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    trust: bool = False,
    adapt: Adapter | str | None = None,
    force: bool = False,
) -> Migration:
    """Convert `source` into `target`, which then loads with `weights_only=True`; raises
    MigrationFailed, having written nothing."""
    paths = _Paths(Path(source), Path(target), os.fspath(source), os.fspath(target))
    _check_paths(paths, force)
    adapter = load_adapter(adapt) if isinstance(adapt, str) else adapt
    result, conversions = _convert(paths, trust)
    framework = [] if adapter is not None else lightning_refusals(result, conversions)
    if framework:
        raise MigrationFailed(
            f"{paths.src_name}: refused; {paths.out_name} not written:", REFUSED, tuple(framework)
        )
    if adapter is not None:
        try:
            result = adapter.function(result)
        except Exception as err:  # the user's code on data from IN: a refusal of IN
            reason = str(err) if type(err) in _REFUSALS else f"{type(err).__name__}: {err}"
            raise MigrationFailed(
                f"{paths.src_name}: {adapter.refusal} ({reason:.300}); {paths.out_name} not "
                "written",
                REFUSED,
            ) from None
        conversions.append(f"root: {adapter.what}")
    _write(result, paths, force)
    return Migration(paths.out, tuple(conversions))


@dataclass(slots=True, frozen=True)
class _Paths:
    """IN and OUT, and their names as the caller gave them (what messages show)."""

    src: Path
    out: Path
    src_name: str
    out_name: str


def _check_paths(paths: _Paths, force: bool) -> None:
    src, out, src_name, out_name = paths.src, paths.out, paths.src_name, paths.out_name
    try:  # before anything opens it: a FIFO would block, a device never ends
        regular_file_size(src)
    except Unreadable as err:
        raise MigrationFailed(f"{src_name}: {err}", UNREADABLE) from None
    if out.exists() and src.exists() and os.path.samefile(src, out):
        raise MigrationFailed(f"refusing to overwrite the input {src_name}", UNREADABLE)
    if (out.exists() or out.is_symlink()) and not force:
        raise MigrationFailed(
            f"{out_name} exists; not replaced (fix: pass --force to replace it)", REFUSED
        )


def _convert(paths: _Paths, trust: bool) -> tuple[Any, list[str]]:
    """IN as primitives and tensors, and the conversions made, by path."""
    from pytest_ckpt.migrate.static import convert_file

    src, src_name, out_name = paths.src, paths.src_name, paths.out_name
    conversions: list[str] = []
    try:
        if not trust:
            converted = convert_file(src)
            return converted.result, converted.conversions
        from pytest_ckpt.migrate.trusted import load_trusted, to_primitives

        try:
            loaded = load_trusted(src)
        except Exception as err:  # whatever the file's own code raised
            reason = f"{err!r:.200}"
            raise MigrationFailed(f"{src_name}: cannot unpickle: {reason}", UNREADABLE) from None
        return to_primitives(loaded, "root", conversions), conversions
    except Unreadable as err:
        raise MigrationFailed(f"{src_name}: {err}", UNREADABLE) from None
    except ConversionRefused as refused:
        raise MigrationFailed(
            f"{src_name}: refused; {out_name} not written:", REFUSED, tuple(refused.refusals)
        ) from None


def _write(result: Any, paths: _Paths, force: bool) -> None:
    src_name, out_name = paths.src_name, paths.out_name
    try:
        write_checkpoint_atomically(result, paths.out, overwrite=force)
    except _NotLoadable as err:
        raise MigrationFailed(
            f"the converted file would not load ({err}); {out_name} not written", REFUSED
        ) from None
    except RecursionError:
        raise MigrationFailed(
            f"{src_name}: refused; {out_name} not written: nested deeper than torch.save can write "
            "(fix: flatten the structure before saving)",
            REFUSED,
        ) from None
    except FileExistsError:
        raise MigrationFailed(f"{out_name} appeared meanwhile; not replaced", REFUSED) from None
    except (OSError, RuntimeError) as err:
        raise MigrationFailed(f"cannot write {out_name}: {err}", UNREADABLE) from None


def _audit_before_rename(temp: Path) -> None:
    report = audit_file(temp)
    if not report.loadable:
        raise _NotLoadable(report.error or report.findings[0].detail)


def write_checkpoint_atomically(state: object, path: Path, *, overwrite: bool = True) -> None:
    """torch.save `state` to a temp file beside `path`, audit it, then move it into place
    (with `overwrite=False`, only if `path` does not exist)."""
    import torch

    from pytest_ckpt.durable import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(
        path.parent,
        path,
        lambda handle: torch.save(state, handle),
        check=_audit_before_rename,
        overwrite=overwrite,
    )

"""A framework's checkpoint folder (accelerate's `save_state`, HF Trainer's `checkpoint-N/`) as
an export the harness can save with `torch.save` and load with `torch.load(weights_only=True)`,
and back to a folder the framework's own loader reads.

Each file becomes a value the round trip compares by path: `*.safetensors` its tensors,
`*.json` its parsed content, any other file what `torch.load(weights_only=True)` gives, when
the auditor (`pytest_ckpt.audit.audit_file`) says that loads it. A file it refuses (accelerate's
`random_states_0.pkl`, HF's `rng_state.pth`: numpy's RNG state) is kept as its bytes, since
the framework reads it with its own allowlist, and its refusal is named, object by object with
the fix, under `REFUSED_KEY`: the plain `torch.load(weights_only=True)` verdict, beside the
framework loader's (which the resume proves). Nothing here unpickles a refused file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_ckpt.audit.escape import escape
from pytest_ckpt.errors import CheckpointLoadError

FILES_KEY = "files"
REFUSED_KEY = "weights_only_refused"  # file name -> the auditor's lines for it


class FrameworkFileWarning(UserWarning):
    """A framework writes a file that plain `torch.load(weights_only=True)` refuses, which
    the framework itself loads with its own allowlist."""


def read_folder(folder: str, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """`{FILES_KEY: {name: value}, REFUSED_KEY: {name: [lines]}}` for the files of `folder`
    (sub-folders are not read; a name in `skip` is left out)."""
    import torch

    files: dict[str, Any] = {}
    refused: dict[str, list[str]] = {}
    skipped = set(skip)
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in skipped or not os.path.isfile(path):
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            files[name] = load_file(path)
        elif name.endswith(".json"):
            with open(path, encoding="utf-8") as stream:
                files[name] = json.load(stream)
        else:
            lines = refusal_lines(path)
            if lines:
                refused[name] = lines
                with open(path, "rb") as stream:
                    files[name] = stream.read()
            else:
                files[name] = torch.load(path, weights_only=True, map_location="cpu")
    return {FILES_KEY: files, REFUSED_KEY: refused}


def refusal_lines(path: str) -> list[str]:
    """Why `torch.load(path, weights_only=True)` refuses the file, one line per object (its
    path in the file, what it is, the fix) and the `safe_globals` that would load it; [] when
    it loads. A file the auditor cannot read is an error: nothing else reads it safely."""
    from pytest_ckpt.audit import audit_file

    report = audit_file(path)
    name = escape(os.path.basename(path))
    if report.error is not None:
        raise CheckpointLoadError(f"{name}: cannot be read as a checkpoint: {report.error}")
    lines = [f"{escape(f.path)}: {escape(f.detail)}. Fix: {escape(f.fix)}" for f in report.findings]
    if lines and report.safe_globals:
        names = ", ".join(escape(n) for n in report.safe_globals)
        lines.append(f"torch.serialization.safe_globals([{names}]) would load it")
    return lines


def refusal_message(framework_loader: str, refused: Mapping[str, list[str]]) -> str:
    """One line: which files plain `torch.load(weights_only=True)` refuses, and who loads
    them anyway."""
    names = ", ".join(escape(n) for n in refused)
    return (
        f"{names}: refused by torch.load(weights_only=True) ({framework_loader} loads it with "
        "its own allowlist; a loader without that allowlist cannot):"
    )


def report_refusals(
    framework_loader: str, refused: Mapping[str, list[str]], *, strict: bool, warn: bool
) -> None:
    """The plain `weights_only=True` verdict on a folder's refused files: an error under
    `strict` (`CheckpointLoadError`), else a `FrameworkFileWarning` when `warn` (once per
    subject: the caller keeps count)."""
    import warnings

    head = refusal_message(framework_loader, refused)
    items = [f"{name}: {line}" for name, lines in refused.items() for line in lines]
    if strict:
        raise CheckpointLoadError(head, items=items)
    if warn:
        warnings.warn(FrameworkFileWarning("\n  ".join([head, *items])), stacklevel=4)


def write_folder(files: Mapping[str, Any], folder: str) -> None:
    """The files of a `read_folder` export written back into `folder` for the framework's own
    loader: tensors as safetensors, JSON as JSON, kept bytes as they were, the rest with
    `torch.save`."""
    import torch

    os.makedirs(folder, exist_ok=True)
    for name, value in files.items():
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise CheckpointLoadError(f"{escape(name)!r} is not a file name in a folder export")
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(dict(value), path, metadata={"format": "pt"})
        elif name.endswith(".json"):
            with open(path, "w", encoding="utf-8") as stream:
                json.dump(value, stream, indent=2, sort_keys=True)
        elif isinstance(value, bytes):
            with open(path, "wb") as stream:
                stream.write(value)
        else:
            torch.save(value, path)

"""`bin_files` on files whose checkpoint lies past what it reads first (1 MiB of tar headers,
64 KiB and more of pickle): torch.load reads the whole file, so what it runs decides. Each
sample is held against the real loader in a subprocess: `torch.load(weights_only=False)`
runs its payload (a marker file appears), so calling it "not a checkpoint" would skip a
file that runs code."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

from pytest_ckpt.audit.formats.bin_files import is_checkpoint_bin

# torch.load of each path, code allowed: which marker files the payloads leave
TORCH_RUNS = """
import os, sys, warnings
import torch
warnings.simplefilter("ignore")
for path in sys.argv[1:]:
    try:
        torch.load(path, weights_only=False)
    except Exception:
        pass
print(" ".join(sorted(name for name in os.listdir(".") if name.startswith("MARK_"))))
"""


def payload(marker: str) -> bytes:
    """A protocol 0 pickle that runs `touch MARK_<marker>` (posix.system) when loaded."""
    return b"cposix\nsystem\n(S'touch MARK_" + marker.encode() + b"'\ntR."


def markers_left(tmp_path: Path, paths: list[Path]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", TORCH_RUNS, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return {name.removeprefix("MARK_") for name in result.stdout.split()}


def tar_with_storages(before: tarfile.TarInfo, body: bytes, *, pax: dict | None = None) -> bytes:
    """A legacy tar: `before`, then the `storages` member torch unpickles first."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(before, io.BytesIO(bytes(before.size)))
        storages = tarfile.TarInfo("storages")
        storages.size = len(body)
        storages.pax_headers = pax or {}
        tar.addfile(storages, io.BytesIO(body))
    return out.getvalue()


def test_a_tar_whose_storages_member_lies_past_the_first_mib_is_a_checkpoint(tmp_path) -> None:
    """tarfile, listing the first MiB alone, fails where a member's data or a pax header
    runs past it ("unexpected end of data"); torch's reader sees the whole file."""
    big = tarfile.TarInfo("big")
    big.size = 2 << 20
    small = tarfile.TarInfo("small")
    samples = {
        "big_member_first": tar_with_storages(big, payload("big_member_first")),
        "long_pax_header": tar_with_storages(
            small, payload("long_pax_header"), pax={"comment": "x" * (2 << 20)}
        ),
    }
    paths = []
    for name, body in samples.items():
        paths.append(tmp_path / f"{name}.bin")
        paths[-1].write_bytes(body)
    assert markers_left(tmp_path, paths) == set(samples)  # torch runs each one's payload
    called = {path.stem: is_checkpoint_bin(path, path.stat().st_size) for path in paths}
    assert called == dict.fromkeys(samples, True)

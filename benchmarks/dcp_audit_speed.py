"""DCP folder audit speed and memory against `dcp.load` of the same folder, in one run.

    .venv/bin/python benchmarks/dcp_audit_speed.py [--gigabytes 1.0] [--repeat 3]

Writes DCP folders of about `--gigabytes` (256 tensors; 4096 tensors) and of a quarter of
that (256 tensors) in a temp dir with `dcp.save`, then reports, each step in a fresh process
with its modules imported before timing: `dcp.load` into a preallocated state dict (torch's
FileSystemReader), `pytest_ckpt.audit.formats.dcp.folder.audit_dcp_folder` (allowlists
built inside the timing), and the peak RSS the audit reaches above the process's resident
size before it (Linux: the peak is reset through /proc/self/clear_refs just before). Target:
audit <= 0.05x dcp.load; memory flat in the folder's size (the quarter-size folder's peak
is printed beside it). Page cache is warm for both (the files were just written).
Not a test: figures go in closing notes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MEASURE = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.simplefilter("ignore")
    import torch
    import torch.distributed.checkpoint as dcp
    from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder

    def status(field):
        with open("/proc/self/status") as handle:
            return next(int(l.split()[1]) for l in handle if l.startswith(field + ":"))

    what, path, tensors, numel = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if what == "load":
        state = {f"layer{i}.weight": torch.empty(numel) for i in range(tensors)}
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak (VmHWM) to what is resident now
    base = status("VmRSS")
    start = time.perf_counter()
    if what == "load":
        dcp.load(state, checkpoint_id=path)
    else:
        report = audit_dcp_folder(path)
        assert report.loadable, report
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_mb": (status("VmHWM") - base) / 1024}))
    """
)


def build(path: Path, tensors: int, numel: int) -> None:
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    warnings.simplefilter("ignore")  # "no process group: saving in one process"
    dcp.save({f"layer{i}.weight": torch.randn(numel) for i in range(tensors)}, checkpoint_id=path)


def measure(what: str, path: Path, tensors: int, numel: int, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, what, str(path), str(tensors), str(numel)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    return {"seconds": best["seconds"], "rss": max(r["rss_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = int(args.gigabytes * (1 << 30))
    with tempfile.TemporaryDirectory(prefix="dcp-audit-speed-") as tmp:
        for tensors, size in ((256, total // 4), (256, total), (4096, total)):
            numel = size // 4 // tensors
            path = Path(tmp, f"dcp-{tensors}-{size}")
            build(path, tensors, numel)
            megabytes = sum(p.stat().st_size for p in path.iterdir()) / (1 << 20)
            load = measure("load", path, tensors, numel, args.repeat)
            audit = measure("audit", path, tensors, numel, args.repeat)
            best = f"best of {args.repeat}, a fresh process each"
            print(f"{tensors} tensors, {megabytes:.0f} MB ({best}):")
            print(f"  dcp.load (FileSystemReader)   {load['seconds'] * 1e3:9.1f} ms")
            print(f"  pytest-ckpt audit DIR         {audit['seconds'] * 1e3:9.1f} ms")
            print(f"  audit / load = {audit['seconds'] / load['seconds']:.4f}x")
            print(f"  audit peak RSS above its start: {audit['rss']:.1f} MB")
            shutil.rmtree(path)


if __name__ == "__main__":
    main()

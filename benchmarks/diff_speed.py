"""`pytest-ckpt diff` speed and memory against `torch.load` of both files, in one run.

    .venv/bin/python benchmarks/diff_speed.py [--megabytes 256] [--repeat 3]

Builds two checkpoints of about `--megabytes` each (64 float32 tensors; the second is the
first plus noise in one tensor out of four, as after a few training steps) and reports, each
step in a fresh process with its modules imported before timing: `torch.load(weights_only=True)`
of both files, then `diff_checkpoints(A, B)` (the audit of both, the mapped reads and the
chunked comparison), and the peak of anonymous memory (RssAnon, sampled every 2 ms) each
reaches above what the process held after import: mapped file pages are the page cache's,
not the process's, and are left out. Files are read once before timing, so
both are timed from the page cache. Target: diff <= 1.5x the loads; memory flat (well under
one file's size). Not a test: figures go in closing notes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MEASURE = textwrap.dedent(
    """
    import json, sys, threading, time
    import torch
    from pytest_ckpt.diff import diff_checkpoints

    def status(field):
        with open("/proc/self/status") as handle:
            return next(int(l.split()[1]) for l in handle if l.startswith(field + ":"))

    what, a, b = sys.argv[1:4]
    base = peak = status("RssAnon")
    running = True

    def sample():
        global peak
        while running:
            peak = max(peak, status("RssAnon"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    if what == "load":
        first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    else:
        result = diff_checkpoints(a, b)
        assert len(result.changed) == 16 and not result.added, result
    seconds = time.perf_counter() - start
    running = False
    sampler.join()
    peak = max(peak, status("RssAnon"))
    print(json.dumps({"seconds": seconds, "rss_mb": (peak - base) / 1024}))
    """
)


def build(folder: Path, megabytes: int) -> tuple[Path, Path]:
    import torch

    generator = torch.Generator().manual_seed(0)
    count = 64
    numel = megabytes * (1 << 20) // 4 // count
    a = {f"layer{i}.weight": torch.randn(numel, generator=generator) for i in range(count)}
    b = {k: (v + 1e-3 * torch.randn(numel, generator=generator) if i % 4 == 0 else v)
         for i, (k, v) in enumerate(a.items())}  # fmt: skip
    paths = folder / "a.pt", folder / "b.pt"
    for state, path in zip((a, b), paths, strict=True):
        torch.save(state, path)
    return paths


def measure(what: str, a: Path, b: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, what, str(a), str(b)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = build(Path(tmp), args.megabytes)
        for path in (a, b):
            path.read_bytes()  # into the page cache for both contenders
        loads = [measure("load", a, b) for _ in range(args.repeat)]
        diffs = [measure("diff", a, b) for _ in range(args.repeat)]
    load = min(run["seconds"] for run in loads)
    diff = min(run["seconds"] for run in diffs)
    print(
        f"2 x {args.megabytes} MB: torch.load both {load:.2f} s "
        f"(anon peak +{max(r['rss_mb'] for r in loads):.0f} MB); diff {diff:.2f} s "
        f"(anon peak +{max(r['rss_mb'] for r in diffs):.0f} MB); ratio {diff / load:.2f}x "
        "(target <= 1.5x)"
    )


if __name__ == "__main__":
    main()

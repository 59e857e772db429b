"""What the plugin costs over doing the same work by hand, measured in one run.

    .venv/bin/python benchmarks/plugin_overhead.py [--repeat 7]

1. One stage's round trip (BLENDING, 2x2, reference subject): the plugin's roundtrip check
   (export, save, load(weights_only=True), exact compare, rebuild, compare) against a bare
   `torch.save` + `torch.load(weights_only=True)` of the same state. The rebuild is timed on
   its own too, since a bare save/load does not do it. Target: <= 1.3x (save/load/compare).
2. The whole default matrix (3 stages x 3 grids x roundtrip/resume/snapshot) through
   `pytest --ckpt-roundtrip` against the same checks written by hand in a plain script, each
   in a fresh process so both pay interpreter and torch start-up. Target: <= 1.2x.

Medians of `--repeat` runs; not a test, figures go in closing notes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from pytest_ckpt.checks.compare import diff_values
from pytest_ckpt.checks.roundtrip import check_roundtrip, save_and_load
from pytest_ckpt.reference.subject import ReferenceSubject

HAND_WRITTEN_MATRIX = textwrap.dedent(
    """
    import random, sys, tempfile, pathlib
    import torch
    from pytest_ckpt.reference.subject import ReferenceSubject

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    torch.set_num_threads(1)
    subject = ReferenceSubject()
    tmp = pathlib.Path(tempfile.mkdtemp())
    for stage in ("GERMINATED", "BLENDING", "PROBATIONARY"):
        for grid in ((1, 1), (1, 3), (2, 2)):
            # roundtrip
            system = subject.build(grid=grid, stage=stage, seed=0)
            state = subject.export_state(system)
            torch.save(state, tmp / "a.pt")
            loaded = torch.load(tmp / "a.pt", weights_only=True)
            assert same(state, loaded)
            assert same(state, subject.export_state(subject.rebuild(loaded)))
            # resume
            system = subject.build(grid=grid, stage=stage, seed=0)
            torch.save(subject.export_state(system), tmp / "b.pt")
            loaded = torch.load(tmp / "b.pt", weights_only=True)
            a = subject.step(system)
            b = subject.step(subject.rebuild(loaded))
            assert same(dict(a.metrics), dict(b.metrics))
            # snapshot-equivalent: round trip then one step (compared to nothing)
            system = subject.build(grid=grid, stage=stage, seed=0)
            torch.save(subject.export_state(system), tmp / "c.pt")
            subject.step(subject.rebuild(torch.load(tmp / "c.pt", weights_only=True)))
    """
)


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_stage(repeat: int) -> None:
    torch.set_num_threads(1)
    subject = ReferenceSubject()
    system = subject.build(grid=(2, 2), stage="BLENDING", seed=0)
    state = subject.export_state(system)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "c.pt")

        def bare() -> None:
            torch.save(state, path)
            torch.load(path, weights_only=True)

        def plugin_save_load_compare() -> None:
            diff_values(state, save_and_load(subject.export_state(system), path))

        def plugin_full() -> None:
            check_roundtrip(subject, system, path)

        t_bare = median_seconds(bare, repeat)
        t_slc = median_seconds(plugin_save_load_compare, repeat)
        t_full = median_seconds(plugin_full, repeat)
    print("one stage (reference subject, BLENDING 2x2, 1 torch thread)")
    rows = (
        ("bare save+load(weights_only)", t_bare),
        ("plugin export+save+load+compare", t_slc),
        ("plugin full check incl. rebuild", t_full),
    )
    for label, seconds in rows:
        print(f"  {label:<36}{seconds * 1e3:8.2f} ms  ratio {seconds / t_bare:.2f}x")


def whole_matrix(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hand.py").write_text(HAND_WRITTEN_MATRIX)
        Path(tmp, "pytest.ini").write_text("[pytest]\n")
        plugin_cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--ckpt-roundtrip",
            "-k",
            "not snapshot",
        ]
        # snapshots are compared against nothing in the hand-written script, so time the
        # plugin's snapshot items against freshly written snapshots (--snapshot-update).
        plugin_cmd_all = [*plugin_cmd[:-2], "--snapshot-update"]
        hand_cmd = [sys.executable, "hand.py"]

        def run(cmd: list[str]) -> None:
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)

        t_plugin = median_seconds(lambda: run(plugin_cmd_all), repeat)
        t_hand = median_seconds(lambda: run(hand_cmd), repeat)
    print("default matrix (3 stages x 3 grids x 3 checks), fresh process each")
    print(f"  by hand (plain script)              {t_hand:8.2f} s")
    print(
        f"  pytest --ckpt-roundtrip             {t_plugin:8.2f} s  ratio {t_plugin / t_hand:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}")
    one_stage(args.repeat)
    whole_matrix(max(1, args.repeat // 2))


if __name__ == "__main__":
    main()

"""How far do an example's snapshot floats move between CPU kernels? The evidence behind a
snapshot tolerance.

Records the example's matrix snapshots from scratch once per `ATEN_CPU_CAPABILITY` (torch's
kernels for another SIMD width, as on another CPU), then compares every pair of recordings
float by float and prints, per field (list indices and optimizer slots folded to `*`), the
largest relative and absolute difference, and whether the example's configured tolerances
(its pyproject's ckpt_snapshot_* settings and the subject's own rules) cover it.

    .venv/bin/python benchmarks/snapshot_spread.py examples/reference
    .venv/bin/python benchmarks/snapshot_spread.py examples/quickstart --capabilities default,avx2

Not a test: it takes a few minutes per capability on two cores.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from syrupy.extensions.amber.serializer import AmberDataSerializer

from pytest_ckpt.plugin.snapshot_compare import Tolerance, Tolerances, compare_snapshots

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


def record(example: Path, capability: str, workdir: Path) -> dict[str, str]:
    """Fresh snapshots of `example` under one capability: {snapshot name: serialized text}."""
    copy = workdir / capability
    shutil.copytree(
        example,
        copy,
        ignore=shutil.ignore_patterns("__snapshots__", "__ckpt_snapshots__", ".*cache*"),
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ckpt-roundtrip"]
    args += ["--snapshot-update", "-k", "snapshot"]
    subprocess.run(args, cwd=copy, env=env, check=False, capture_output=True)
    snapshots: dict[str, str] = {}
    for file in sorted(copy.rglob("*.ckpt-ambr")):
        for snapshot in AmberDataSerializer.read_file(str(file)):
            snapshots[f"{file.parent.name}/{snapshot.name}"] = str(snapshot.data)
    if not snapshots:
        raise SystemExit(f"{example}: no snapshots recorded under {capability}")
    return snapshots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", type=Path)
    parser.add_argument("--capabilities", default="default,avx2,avx512")
    parser.add_argument("--show", type=int, default=40, help="fields to print")
    args = parser.parse_args(argv)
    capabilities = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    exact = Tolerances(Tolerance(0.0, 0.0))
    spread: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    with tempfile.TemporaryDirectory() as tmp:
        runs = {c: record(args.example.resolve(), c, Path(tmp)) for c in capabilities}
    for (a, first), (b, second) in itertools.combinations(runs.items(), 2):
        if first.keys() != second.keys():
            print(f"{a} and {b} recorded different snapshots: structure differs")
        for name in sorted(first.keys() & second.keys()):
            comparison = compare_snapshots(first[name], second[name], exact)
            if not comparison.structure_matches:
                print(f"{name}: {a} and {b} differ in structure or in an exact value")
            for diff in comparison.differences:
                x, y = float(diff.snapshot), float(diff.received)
                field = _INDEX.sub("*", diff.path)
                entry = spread[field]
                entry[0] = max(entry[0], abs(x - y) / max(abs(x), abs(y)))
                entry[1] = max(entry[1], abs(x - y))
    print(f"{len(spread)} fields differ across {', '.join(capabilities)}; largest first:")
    for field, (relative, absolute) in sorted(spread.items(), key=lambda kv: -kv[1][0])[
        : args.show
    ]:
        print(f"  rel {relative:9.3g}  abs {absolute:9.3g}  {field}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

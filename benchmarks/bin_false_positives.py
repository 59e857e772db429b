"""How many raw arrays named `.bin` the auditor audits instead of skipping.

    .venv/bin/python benchmarks/bin_false_positives.py [--arrays 20000] [--seed 0]

Writes seeded random arrays with `numpy.tofile` to `x.bin` (dtypes from bool to complex128,
1 to 2**17 elements, normal, uniform, small-int and mostly-zero values) and counts how many
`audit_one_file` (what `pytest-ckpt audit` and the pre-commit hook run) does not skip as "not
a checkpoint" (or raises on): each one fails a commit that touches it. Prints the rate and,
for the first few, their first bytes. Target: about 0. Not a test: figures go in closing
notes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats.walk import audit_one_file

DTYPES = [
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
    np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128,
]  # fmt: skip


def random_array(rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(DTYPES[rng.integers(len(DTYPES))])
    n = int(2 ** rng.uniform(0, 17))
    shape = rng.choice(["normal", "uniform", "small", "sparse"])
    if shape == "normal":
        values = rng.standard_normal(n) * 10 ** rng.uniform(-3, 3)
    elif shape == "uniform":
        values = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    elif shape == "small":
        values = rng.integers(-100, 100, n)
    else:
        values = rng.standard_normal(n) * (rng.random(n) < 0.05)
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arrays", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    allowlist = load_allowlist()
    audited = []
    raised: dict[str, int] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "x.bin")
        for _ in range(args.arrays):
            array = random_array(rng)
            array.tofile(path)
            try:
                skipped = audit_one_file(str(path), allowlist).format == "skipped"
            except Exception as err:  # a traceback fails the hook too: counted, with its name
                skipped, raised[type(err).__name__] = False, raised.get(type(err).__name__, 0) + 1
            if not skipped:
                audited.append((array.dtype.name, array.size, path.read_bytes()[:24]))
    seconds = time.perf_counter() - start
    rate = len(audited) / args.arrays
    print(f"{len(audited)} of {args.arrays} arrays audited, not skipped: {rate:.4%}")
    print(f"({seconds / args.arrays * 1e3:.2f} ms per file; raised instead of a verdict: {raised})")
    for dtype, size, head in audited[:10]:
        print(f"  {dtype}[{size}]: {head!r}")


if __name__ == "__main__":
    main()

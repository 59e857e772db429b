"""PPO updates per second with telemetry on vs off, measured in one run on this machine.

    .venv/bin/python benchmarks/ppo_telemetry.py [--updates 30] [--rounds 5]

Both trainers are built identically (same seed) and timed in alternating rounds so that
machine noise hits both; the figure is the ratio of median updates/s. Target: telemetry costs
no more than 5%. Not a test: numbers go in closing notes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pytest_ckpt.reference import SlotConfig
from pytest_ckpt.reference.trainer import Trainer


def time_updates(trainer: Trainer, updates: int) -> float:
    start = time.perf_counter()
    for _ in range(updates):
        trainer.run_update()
        trainer.telemetry.drain()
    return updates / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--host", default="cnn")
    parser.add_argument("--grid", default="2x2")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.grid.split("x"))
    slots = SlotConfig.grid(rows, cols)
    trainers = {
        flag: Trainer(host=args.host, slots=slots, seed=0, telemetry_enabled=flag)
        for flag in (True, False)
    }
    rates: dict[bool, list[float]] = {True: [], False: []}
    time_updates(trainers[True], 2), time_updates(trainers[False], 2)  # warm-up
    for _ in range(args.rounds):
        for flag in (True, False):
            rates[flag].append(time_updates(trainers[flag], args.updates))
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.host} {args.grid}")
    for label, flag in (("telemetry on ", True), ("telemetry off", False)):
        rounds = ", ".join(f"{r:.2f}" for r in rates[flag])
        print(f"{label}: {statistics.median(rates[flag]):7.2f} updates/s (rounds: {rounds})")
    print(f"on/off ratio : {on / off:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()

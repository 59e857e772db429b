"""Train the reference PPO controller, save a TrainingState, or resume from one.

    python -m pytest_ckpt.reference.train --host cnn --slots r0c0,r0c1,r1c0 --epochs 5 --save run.pt
    python -m pytest_ckpt.reference.train --resume run.pt --epochs 5 --save run2.pt

`--epochs` counts PPO batch epochs (one rollout + one update each). `--slots` takes canonical
slot ids only. Runs are deterministic for `--seed`: two runs write equal TrainingStates, and
running E+1 epochs equals running E, saving, and resuming for 1. Exit status: 0 on success, 2
on bad arguments or an unreadable checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_ckpt.reference.hosts import HOSTS
from pytest_ckpt.reference.slots import SlotConfig
from pytest_ckpt.reference.trainer import Trainer, seed_global_rngs


def _slots(text: str) -> SlotConfig:
    try:
        return SlotConfig.from_ids(part.strip() for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_ckpt.reference.train")
    parser.add_argument("--host", choices=sorted(HOSTS), default="cnn")
    parser.add_argument("--slots", type=_slots, default=SlotConfig.grid(1, 3))
    parser.add_argument("--epochs", type=_positive, default=5, help="PPO batch epochs to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="write the TrainingState here at the end")
    parser.add_argument("--resume", type=Path, help="continue from a saved TrainingState")
    args = parser.parse_args(argv)
    if args.resume is not None:
        try:
            trainer = Trainer.load(args.resume)
        except ValueError as err:
            print(f"error: cannot resume: {err}", file=sys.stderr)
            return 2
    else:
        seed_global_rngs(args.seed)
        trainer = Trainer(host=args.host, slots=args.slots, seed=args.seed)
    for _ in range(args.epochs):
        stats = trainer.run_update()
        events = trainer.telemetry.drain()
        print(
            f"update {trainer.update:4d}  episodes {trainer.env.episodes_completed:3d}  "
            f"accuracy {trainer.env.last_accuracy:6.2f}  entropy {stats.entropy:.3f}  "
            f"events {len(events)}"
        )
    if args.save is not None:
        trainer.save(args.save)
        print(f"saved TrainingState at update {trainer.update} to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

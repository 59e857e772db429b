"""Round-trip the reference system at every seed stage and print a report.

    python -m pytest_ckpt.reference.demo [--hosts cnn,transformer] [--grids 1x1,1x3,2x2,3x1]
                                         [--report ckpt-report.md]

For each host x grid x stage: build the model there, `torch.save` it to a real file, check
`get_unsafe_globals_in_checkpoint` is empty, `torch.load(weights_only=True)` with no
allowlist, rebuild with `from_config` + strict `load_state_dict`, and compare the forward
output bit for bit. Exit status 0 when every cell passes, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pytest_ckpt.reference.hosts import HOSTS
from pytest_ckpt.reference.lifecycle import SeedStage
from pytest_ckpt.reference.model import MorphogeneticModel, load_model, save_model
from pytest_ckpt.reference.scenarios import build_at_stage
from pytest_ckpt.reference.slots import parse_grid
from pytest_ckpt.reference.tasks import sample_input
from pytest_ckpt.torch_support import check_torch


@dataclass(slots=True, frozen=True)
class CellResult:
    host: str
    grid: str
    stage: SeedStage
    ok: bool
    detail: str


def roundtrip_model(model: MorphogeneticModel, path: Path) -> str | None:
    """None if `model` survives save -> load(weights_only=True) -> rebuild exactly, else why not."""
    model.eval()
    x = sample_input(model.host)
    with torch.no_grad():
        before = model(x)
    save_model(model, path)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if unsafe:
        return f"unsafe globals in checkpoint: {', '.join(unsafe)}"
    try:
        restored = load_model(path)
    except Exception as err:  # reported, not swallowed: the cell fails with torch's message
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
    restored.eval()
    with torch.no_grad():
        after = restored(x)
    if restored.stages() != model.stages():
        return f"stages changed: {model.stages()} -> {restored.stages()}"
    if not torch.equal(before, after):
        return f"forward output differs (max abs diff {float((before - after).abs().max()):.3g})"
    return None


def run_matrix(hosts: list[str], grids: list[str], workdir: Path) -> list[CellResult]:
    results = []
    for host in hosts:
        for grid in grids:
            for stage in SeedStage:
                model = build_at_stage(host, grid, stage)
                path = workdir / f"{host}-{grid}-{stage.name}.pt"
                problem = roundtrip_model(model, path)
                results.append(CellResult(host, grid, stage, problem is None, problem or "ok"))
    return results


def render_table(results: list[CellResult], *, markdown: bool) -> str:
    columns = sorted({(r.host, r.grid) for r in results}, key=lambda c: (c[0], c[1]))
    header = ["stage"] + [f"{host} {grid}" for host, grid in columns]
    by_cell = {(r.host, r.grid, r.stage): r for r in results}
    rows = [
        [stage.name]
        + [
            ("PASS" if by_cell[(h, g, stage)].ok else "FAIL") if (h, g, stage) in by_cell else "-"
            for h, g in columns
        ]
        for stage in SeedStage
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    )


def render_report(results: list[CellResult]) -> str:
    failed = [r for r in results if not r.ok]
    lines = [
        "# pytest-ckpt round-trip report (reference system)",
        "",
        f"torch {torch.__version__}; `torch.load(weights_only=True)`, no allowlist; "
        f"{len(results) - len(failed)}/{len(results)} cells pass.",
        "",
        render_table(results, markdown=True),
    ]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- `{r.host} {r.grid} {r.stage.name}`: {r.detail}" for r in failed]
    return "\n".join(lines) + "\n"


def _csv(kind: str, valid: Callable[[str], object]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"no {kind} given")
        for item in items:
            try:
                valid(item)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None
        return items

    return parse


def _check_host(name: str) -> None:
    if name not in HOSTS:
        raise ValueError(f"unknown host {name!r}; expected one of {', '.join(HOSTS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_ckpt.reference.demo")
    parser.add_argument("--hosts", type=_csv("hosts", _check_host), default=list(HOSTS))
    parser.add_argument("--grids", type=_csv("grids", parse_grid), default="1x1,1x3,2x2,3x1")
    parser.add_argument("--report", type=Path, help="also write a markdown report here")
    args = parser.parse_args(argv)
    grids = args.grids if isinstance(args.grids, list) else args.grids.split(",")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        check_torch()
    with tempfile.TemporaryDirectory(prefix="pytest-ckpt-demo-") as tmp:
        results = run_matrix(args.hosts, grids, Path(tmp))
    print(render_table(results, markdown=False))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAIL {r.host} {r.grid} {r.stage.name}: {r.detail}", file=sys.stderr)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.report is not None:
        args.report.write_text(render_report(results), encoding="utf-8")
        print(f"report written to {args.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

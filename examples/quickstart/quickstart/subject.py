"""How GrowingNet plugs into pytest-ckpt: one class implementing `pytest_ckpt.Subject`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pytest_ckpt import StepResult
from quickstart.model import STAGES, GrowingNet


class GrowingNetSubject:
    name = "growing-net"
    supports_grids = True

    def stages(self):
        return STAGES

    def build(self, *, grid, stage, seed):
        torch.manual_seed(seed)
        rows, cols = grid
        net = GrowingNet([f"r{r}c{c}" for r in range(rows) for c in range(cols)])
        for slot_id in net.slot_ids:
            net.set_stage(slot_id, stage)
        system = {"net": net, "generator": torch.Generator().manual_seed(seed), "step": 0}
        system["optimizer"] = torch.optim.Adam(net.parameters(), lr=1e-2)
        self.step(system)  # one step so the optimizer has state worth checking
        return system

    def export_state(self, system):
        return {
            "config": system["net"].config(),
            "model": system["net"].state_dict(),
            "optimizer": system["optimizer"].state_dict(),
            "generator": system["generator"].get_state(),
            "step": system["step"],
        }

    def rebuild(self, state):
        net = GrowingNet.from_config(state["config"])
        net.load_state_dict(state["model"], strict=True)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        optimizer.load_state_dict(state["optimizer"])
        generator = torch.Generator()
        generator.set_state(state["generator"])
        return {"net": net, "optimizer": optimizer, "generator": generator, "step": state["step"]}

    def step(self, system):
        x = torch.randn(16, 4, generator=system["generator"])
        y = x.sum(dim=1, keepdim=True).sin()
        loss = F.mse_loss(system["net"](x), y)
        system["optimizer"].zero_grad()
        loss.backward()
        system["optimizer"].step()
        system["step"] += 1
        return StepResult(
            metrics={"loss": float(loss.detach())},
            telemetry=[
                {
                    "event": "step",
                    "step": system["step"],
                    "stages": system["net"].config()["stages"],
                }
            ],
        )


def make_subject() -> GrowingNetSubject:
    return GrowingNetSubject()

"""For any grid up to 4x4, either host and any legal stage path per slot: the model
round-trips through a real file with weights_only=True and rebuilds bit-identically; policy
heads and action masks have one entry per slot."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ckpt import strategies as cst
from pytest_ckpt.reference import BlendConfig, MorphogeneticModel, load_model, save_model
from pytest_ckpt.reference import strategies as rst
from pytest_ckpt.reference.blending import BLEND_ALGORITHMS
from pytest_ckpt.reference.blueprints import blueprint_names
from pytest_ckpt.reference.ppo import Operation
from pytest_ckpt.reference.scenarios import build_reference_model
from pytest_ckpt.reference.tasks import sample_input
from pytest_ckpt.reference.trainer import Trainer


def walk(model: MorphogeneticModel, slot_id: str, path: list[str], choice: int) -> None:
    layout = model.seed_slots[slot_id].point.layout
    for name in path[1:]:
        if name == "GERMINATED":
            names = blueprint_names(layout)
            blend = BlendConfig(BLEND_ALGORITHMS[choice % 3], 2)
            model.germinate(slot_id, names[choice % len(names)], blend)
        elif name == "PRUNED":
            model.prune(slot_id)
        else:
            model.advance_stage(slot_id)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=25)
@given(
    host=st.sampled_from(["cnn", "transformer"]),
    slots=rst.slot_configs(max_rows=4, max_cols=4),
    data=st.data(),
)
def test_any_grid_and_stage_mix_round_trips_bit_identically(host, slots, data) -> None:
    model = build_reference_model(host, slots, seed=0)
    for slot_id in slots:
        path = data.draw(cst.stage_paths(), label=f"path {slot_id}")
        walk(model, slot_id, path, data.draw(st.integers(0, 5), label="choice"))
    model.eval()
    x = sample_input(model.host)
    with torch.no_grad():
        before = model(x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "m.pt")
        save_model(model, path)
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        restored = load_model(path)
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(x), before)
    assert restored.config() == model.config()


@settings(deadline=None, max_examples=15)
@given(slots=rst.slot_configs(max_rows=3, max_cols=3), host=st.sampled_from(["cnn", "transformer"]))
def test_policy_heads_and_masks_have_one_entry_per_slot(slots, host) -> None:
    trainer = Trainer(host=host, slots=slots)
    assert trainer.policy.slot.out_features == slots.num_slots
    for operation in Operation:
        assert trainer.env.slot_mask(operation).shape == (slots.num_slots,)

from __future__ import annotations

import copy

import pytest
import torch

from pytest_ckpt.reference import MorphogeneticModel, SeedStage, build_at_stage, build_host
from pytest_ckpt.reference.hosts import CNNHost, TransformerHost
from pytest_ckpt.reference.scenarios import build_reference_model
from pytest_ckpt.reference.slots import SlotConfig


def _config() -> dict:
    return copy.deepcopy(build_at_stage("cnn", "2x2", SeedStage.BLENDING).config())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(schema_version=2), "MorphogeneticModel config: schema_version 2"),
        (lambda c: c.pop("host"), r"missing required field\(s\) 'host'"),
        (lambda c: c.update(slots=["r0c0"]), "field 'slots' must be Mapping"),
        (lambda c: c["host"].update(kind="rnn"), "unknown host kind 'rnn'"),
        (lambda c: c["host"].update(depth="4"), r"host config \(cnn\): field 'depth' must be int"),
        (lambda c: c["host"].pop("width"), "missing required field"),
        (lambda c: c["seed_slots"].pop("r1c1"), "seed_slots describes"),
        (lambda c: c["slots"].update(slot_ids=["r0c0", "late"]), "legacy slot name 'late'"),
        (lambda c: c["seed_slots"]["r0c1"].pop("seeds_started"), "slot r0c1 extra_state"),
    ],
)
def test_from_config_rejects_bad_input_with_one_value_error(mutate, message: str) -> None:
    config = _config()
    mutate(config)
    with pytest.raises(ValueError, match=message):
        MorphogeneticModel.from_config(config)


def test_from_checkpoint_rejects_state_that_does_not_fit_the_config() -> None:
    checkpoint = build_at_stage("cnn", "1x1", SeedStage.BLENDING).checkpoint()
    checkpoint["state_dict"]["seed_slots.r0c0.stray.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="state_dict does not fit its config.*stray"):
        MorphogeneticModel.from_checkpoint(checkpoint)
    del checkpoint["state_dict"]["seed_slots.r0c0.stray.weight"]
    del checkpoint["state_dict"]["seed_slots.r0c0.blend_gate.proj.bias"]
    with pytest.raises(ValueError, match="Missing key.*blend_gate.proj.bias"):
        MorphogeneticModel.from_checkpoint(checkpoint)


def test_config_describes_dormant_and_pruned_slots_too() -> None:
    model = build_reference_model("transformer", SlotConfig.from_ids(["r0c0", "r2c1"]))
    config = model.config()
    assert config["seed_slots"]["r2c1"]["seed_state"] is None
    pruned = build_at_stage("transformer", "1x1", SeedStage.PRUNED).config()
    assert pruned["seed_slots"]["r0c0"]["seed_state"]["stage"] == "PRUNED"
    rebuilt = MorphogeneticModel.from_config(config)
    assert rebuilt.slots.slot_ids == ("r0c0", "r2c1")


def test_a_grid_deeper_than_the_host_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="needs injection depth 4.*has 4 .*smaller grid"):
        MorphogeneticModel(CNNHost(), SlotConfig.grid(5, 1))


def test_host_segments_compose_to_the_whole_forward() -> None:
    torch.manual_seed(0)
    for host, x in (
        (CNNHost(), torch.randn(2, 3, 32, 32)),
        (TransformerHost(), torch.randint(0, 32, (2, 16))),
    ):
        host.eval()
        with torch.no_grad():
            h = host.forward_to(x, "r0c0")
            h = host.forward_between(h, "r0c0", "r2c3")
            assert torch.equal(host.forward_from(h, "r2c3"), host(x))


def test_host_configs_rebuild_the_same_kind_and_sizes() -> None:
    for host in (CNNHost(depth=3, width=8), TransformerHost(d_model=16, n_heads=2)):
        rebuilt = build_host(host.config())
        assert type(rebuilt) is type(host)
        assert rebuilt.config() == host.config()


def test_hosts_reject_wrong_inputs_with_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"expects \(batch, 3, H, W\)"):
        CNNHost().stem(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="int64 token ids"):
        TransformerHost().stem(torch.zeros(1, 4))

"""The project's own tests, using pytest-ckpt's fixtures next to the generated matrix."""

import torch


def test_blending_halves_the_seed_contribution(ckpt_subject):
    system = ckpt_subject.build(grid=(1, 1), stage="BLENDING", seed=0)
    assert system["net"].stages == {"r0c0": "BLENDING"}


def test_optimizer_state_survives_weights_only(ckpt_subject, ckpt_roundtrip):
    system = ckpt_subject.build(grid=(1, 2), stage="FOSSILIZED", seed=0)
    loaded = ckpt_roundtrip(ckpt_subject.export_state(system))
    assert loaded["optimizer"]["state"][0]["step"] == torch.tensor(1.0)


def test_weights_snapshot(ckpt_subject, ckpt_snapshot):
    system = ckpt_subject.build(grid=(1, 1), stage="GERMINATED", seed=0)
    assert ckpt_snapshot == {"head": system["net"].head.state_dict()}

"""TransformersSubject: a PreTrainedModel from a small random config, AdamW and a warm-up
schedule; and whether transformers' own Trainer resumes exactly. Runs where transformers is
installed (`pip install -c constraints.txt transformers accelerate`)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pytest_ckpt.adapters.transformers import TransformersSubject  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip  # noqa: E402

VOCAB = 64


def tiny_gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=16, use_cache=False,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def tokens(g: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (4, 8), generator=g)
    return {"input_ids": ids, "labels": ids}


@pytest.fixture(autouse=True)
def _quiet_and_one_thread():
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    transformers.logging.set_verbosity(verbosity)


def test_a_pretrained_model_with_adamw_and_warmup_round_trips_and_resumes_exactly(tmp_path):
    """Dropout is on (GPT-2's default 0.1), so the global RNG matters; the lm head is tied to
    the embedding."""
    subject = TransformersSubject(tiny_gpt2, make_batch=tokens, warmup_steps=4, total_steps=20)
    assert subject.stages() == ("WARMUP", "DECAY")
    lrs = []
    for stage in subject.stages():
        system = subject.build(grid=(1, 1), stage=stage, seed=0)
        state = check_roundtrip(subject, system, tmp_path / f"{stage}.pt").state
        assert state["config"]["n_embd"] == 16 and "lm_head.weight" in state["model"]
        lrs.append(check_resume(subject, system, 2, tmp_path / f"{stage}-r.pt")[0]["metrics"]["lr"])
    assert lrs[0] < lrs[1]  # warming up, then decaying from the peak: the schedule is real


def test_the_model_is_rebuilt_from_the_saved_config() -> None:
    """A checkpoint describes its structure: what make_model builds now does not change what a
    rebuild builds, and a saved config that disagrees with the weights is an error."""
    subject = TransformersSubject(tiny_gpt2, make_batch=tokens)
    state = dict(subject.export_state(subject.build(grid=(1, 1), stage="WARMUP", seed=0)))
    subject.make_model = lambda: transformers.GPT2LMHeadModel(  # type: ignore[method-assign]
        transformers.GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=VOCAB)
    )
    assert subject.rebuild(state)["model"].config.to_dict() == state["config"]
    state["config"] = {**state["config"], "n_layer": 2}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"transformer\.h\.1"):
        subject.rebuild(state)


class TokenData(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, VOCAB, (32, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_trainer_resume_from_checkpoint_is_exact(tmp_path) -> None:
    """transformers' Trainer: 6 steps without stopping vs resuming at its checkpoint-3 (mid
    epoch, dropout on): equal weights, optimizer moments and schedule."""
    pytest.importorskip("accelerate")

    def trainer() -> transformers.Trainer:
        torch.manual_seed(0)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), max_steps=6, save_steps=3, per_device_train_batch_size=4,
            learning_rate=1e-3, warmup_steps=2, seed=0, report_to=[], use_cpu=True,
            dataloader_num_workers=0, logging_steps=100, disable_tqdm=True,
        )  # fmt: skip
        return transformers.Trainer(model=tiny_gpt2(), args=args, train_dataset=TokenData())

    straight = trainer()
    straight.train()
    resumed = trainer()
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    moments = zip(
        straight.optimizer.state_dict()["state"].values(),
        resumed.optimizer.state_dict()["state"].values(),
        strict=True,
    )
    assert all(torch.equal(x["exp_avg"], y["exp_avg"]) for x, y in moments)
    assert straight.state.global_step == resumed.state.global_step == 6

"""A transformers GPT-2, built from a small random config (nothing is downloaded), as a
pytest-ckpt subject: AdamW and a linear warm-up schedule, the stages WARMUP and DECAY."""

from __future__ import annotations

import torch
import transformers

from pytest_ckpt.adapters.transformers import TransformersSubject

VOCAB = 64


def make_model() -> transformers.PreTrainedModel:
    config = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=VOCAB, use_cache=False,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def make_batch(g: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (4, 8), generator=g)
    return {"input_ids": ids, "labels": ids}


def make_subject() -> TransformersSubject:
    transformers.logging.set_verbosity_error()
    return TransformersSubject(make_model, make_batch=make_batch, warmup_steps=4, total_steps=20)

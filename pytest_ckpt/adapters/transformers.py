"""`TransformersSubject`: a transformers `PreTrainedModel` with AdamW and a warm-up schedule,
as a Subject.

    TransformersSubject(
        lambda: GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64)),
        make_batch=lambda g: {"input_ids": (ids := torch.randint(0, 64, (4, 8), generator=g)),
                              "labels": ids},
    )

Batches are dicts of keyword arguments; the loss is the `ModelOutput`'s own (`labels` in the
batch) unless a `loss_fn` is given. By default the optimizer is AdamW (lr 5e-4, weight decay
0.01) and the schedule transformers' `get_linear_schedule_with_warmup` (`warmup_steps` steps of
warm-up, linear decay to `total_steps`); the stages are WARMUP (half-way through the warm-up)
and DECAY (two steps after it). The export adds the model's `config.to_dict()`, and `rebuild`
builds the model from that saved config (`config_class.from_dict`), not from `make_model`:
a checkpoint must describe the structure it restores.

This is the loop a transformers `Trainer` runs for one batch, without the Trainer. Whether
`Trainer.train(resume_from_checkpoint=...)` itself resumes exactly is tested separately
(tests/adapters/test_transformers.py).

Importing this module does not import transformers; making a subject without it installed
raises an ImportError naming the package (`pip install transformers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pytest_ckpt.adapters import require
from pytest_ckpt.adapters.module import ModuleSubject

if TYPE_CHECKING:  # transformers is optional: imported when a subject is made (require)
    import torch
    from transformers import PreTrainedModel


class TransformersSubject(ModuleSubject):
    make_model: Callable[[], PreTrainedModel]

    def __init__(
        self,
        make_model: Callable[[], PreTrainedModel],
        *,
        make_batch: Callable[[torch.Generator], Mapping[str, Any]],
        make_optimizer: Callable[[Any], Any] | None = None,
        make_schedulers: Callable[[Any], Any] | None = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        warmup_steps: int = 4,
        total_steps: int = 20,
        stages: Mapping[str, int] | None = None,
        probe: bool = True,
        name: str = "transformers",
    ) -> None:
        transformers = require("transformers", "transformers", "TransformersSubject")
        if make_optimizer is None:
            import torch

            def make_optimizer(model: Any) -> Any:
                return torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)

        if make_schedulers is None:

            def make_schedulers(optimizer: Any) -> Any:
                return transformers.get_linear_schedule_with_warmup(
                    optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
                )

        if stages is None:
            stages = {"WARMUP": max(1, warmup_steps // 2), "DECAY": warmup_steps + 2}
        super().__init__(
            make_model,
            make_batch=make_batch,
            make_optimizer=make_optimizer,
            make_schedulers=make_schedulers,
            loss_fn=loss_fn,
            stages=stages,
            probe=probe,
            name=name,
        )
        self._model_class: type[PreTrainedModel] | None = None

    def export_state(self, system: Mapping[str, Any]) -> Mapping[str, Any]:
        state = dict(super().export_state(system))
        state["config"] = system["model"].config.to_dict()
        return state

    def make_model_for(self, state: Mapping[str, Any]) -> Any:
        """The model class of `make_model()`, built from the checkpoint's own config."""
        if self._model_class is None:
            self._model_class = type(self.make_model())
        cls = self._model_class
        # `to_dict()` stamps the installed version; a config made in code has none, and
        # from_dict would keep the stamp as an attribute the live model's config lacks
        saved = {k: v for k, v in state["config"].items() if k != "transformers_version"}
        return cls(cls.config_class.from_dict(saved))

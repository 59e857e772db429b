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

This is the loop a transformers `Trainer` runs for one batch, without the Trainer.
`native=True` runs the Trainer itself (`transformers_native`): every run a real
`Trainer.train` on `make_dataset()`, saved as `checkpoint-N/` and resumed with
`resume_from_checkpoint`, its optimizer and schedule made by the Trainer from
`training_args` (keyword arguments of `TrainingArguments`; `total_steps` is its `max_steps`):

    TransformersSubject(tiny_gpt2, native=True, make_dataset=TokenData,
                        training_args={"learning_rate": 1e-3, "per_device_train_batch_size": 4})

Importing this module does not import transformers; making a subject without it installed
raises an ImportError naming the package (`pip install transformers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pytest_ckpt.adapters import require
from pytest_ckpt.adapters.module import ModuleSubject
from pytest_ckpt.errors import SubjectError

if TYPE_CHECKING:  # transformers is optional: imported when a subject is made (require)
    import torch
    from transformers import PreTrainedModel


class TransformersSubject(ModuleSubject):
    make_model: Callable[[], PreTrainedModel]

    def __init__(
        self,
        make_model: Callable[[], PreTrainedModel],
        *,
        make_batch: Callable[[torch.Generator], Mapping[str, Any]] | None = None,
        make_optimizer: Callable[[Any], Any] | None = None,
        make_schedulers: Callable[[Any], Any] | None = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        warmup_steps: int = 4,
        total_steps: int = 20,
        stages: Mapping[str, int] | None = None,
        probe: bool = True,
        native: bool = False,
        make_dataset: Callable[[], Any] | None = None,
        data_collator: Callable[[list[Any]], Any] | None = None,
        training_args: Mapping[str, Any] | None = None,
        strict: bool = False,
        name: str = "transformers",
    ) -> None:
        """`native=True` needs `make_dataset()` (a map-style dataset of the model's keyword
        arguments) and takes no `make_batch`, optimizer, schedule or loss (the Trainer makes
        them); `strict=True` fails on `rng_state.pth`, which plain
        `torch.load(weights_only=True)` refuses (the Trainer loads it with its own allowlist)."""
        transformers = require("transformers", "transformers", "TransformersSubject")
        self.transformers, self.native, self.strict = transformers, native, strict
        self.make_dataset, self.data_collator = make_dataset, data_collator
        self.training_args = dict(training_args or {})
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self._warned = False
        if native:
            _check_native(make_batch, make_dataset, make_optimizer, make_schedulers, loss_fn)
            from pytest_ckpt.adapters.transformers_native import check_training_args

            check_training_args(self.training_args)
            make_batch = self._dataset_batch
        elif make_batch is None:
            raise ValueError("TransformersSubject needs make_batch(generator) (or native=True)")
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

    # ---- native mode: the Trainer's own train, checkpoint-N/ and resume_from_checkpoint --

    def build(self, *, grid: Any, stage: str, seed: int) -> Any:
        if not self.native:
            return super().build(grid=grid, stage=stage, seed=seed)
        from pytest_ckpt.adapters.transformers_native import native_train

        return native_train(self, seed=seed, steps=self.steps_to(stage), resume=None)

    def step(self, system: Any, *, loss_weight: float = 1.0) -> Any:
        if not self.native:
            return super().step(system, loss_weight=loss_weight)
        from pytest_ckpt.adapters.transformers_native import native_step

        return native_step(self, system)

    def export_state(self, system: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.native:
            from pytest_ckpt.adapters.framework_folders import REFUSED_KEY, report_refusals
            from pytest_ckpt.adapters.transformers_native import native_export

            state = native_export(system)
            if state[REFUSED_KEY]:
                loader = "transformers' Trainer._load_rng_state"
                report_refusals(
                    loader, state[REFUSED_KEY], strict=self.strict, warn=not self._warned
                )
                self._warned = True
            return state
        state = dict(super().export_state(system))
        state["config"] = system["model"].config.to_dict()
        return state

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        if not self.native:
            return super().rebuild(state)
        from pytest_ckpt.adapters.transformers_native import native_rebuild

        return native_rebuild(self, state)

    def _fresh(self, seed: int, state: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        if self.native and kwargs.get("parallelize") is not None:
            raise SubjectError(
                f"{self.name}: native mode runs transformers' own Trainer in one process; the "
                "world-size check needs TransformersSubject(..., native=False)"
            )
        return super()._fresh(seed, state, **kwargs)

    def _dataset_batch(self, generator: Any) -> Any:
        """Native mode's probe batch: the first items of a fresh dataset, collated."""
        if self.make_dataset is None:
            raise SubjectError(f"{self.name}: native mode needs make_dataset=")
        dataset = self.make_dataset()
        size = int(self.training_args.get("per_device_train_batch_size", 4))
        collate = self.data_collator or self.transformers.default_data_collator
        return collate([dataset[i] for i in range(min(size, len(dataset)))])

    def make_model_for(self, state: Mapping[str, Any]) -> Any:
        """The model class of `make_model()`, built from the checkpoint's own config."""
        if self._model_class is None:
            self._model_class = type(self.make_model())
        cls = self._model_class
        # `to_dict()` stamps the installed version; a config made in code has none, and
        # from_dict would keep the stamp as an attribute the live model's config lacks
        saved = {k: v for k, v in state["config"].items() if k != "transformers_version"}
        return cls(cls.config_class.from_dict(saved))


def _check_native(*given: Any) -> None:
    """ValueError for what native mode cannot take: the Trainer makes its own batches,
    optimizer, schedule and loss."""
    make_batch, make_dataset, *made_by_trainer = given
    if make_dataset is None:
        raise ValueError("TransformersSubject(native=True) needs make_dataset() for the Trainer")
    if make_batch is not None or any(f is not None for f in made_by_trainer):
        raise ValueError(
            "TransformersSubject(native=True) takes no make_batch, make_optimizer, "
            "make_schedulers or loss_fn: the Trainer makes them; set them in training_args"
        )

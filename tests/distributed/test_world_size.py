"""`check_world_size_resume`: a run saved at SAVE ranks resumes at LOAD ranks exactly as the
run that continued (FSDP2 or DDP, forked gloo ranks on 127.0.0.1); a checkpoint that keeps
optimizer state rank-local fails, naming the rank and the key."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pytest_ckpt import ModuleSubject
from pytest_ckpt.distributed.module_system import ModuleSubjectSystem
from pytest_ckpt.distributed.world_size import check_world_size_resume, supports_world_size_check
from pytest_ckpt.errors import SubjectError, WorldSizeResumeMismatch
from tests.distributed.conftest import small_model


def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator)


def tiny(cls: type = ModuleSubject) -> ModuleSubject:
    return cls(small_model, make_batch=batch, name="tiny")


def check(subject: Any, save: int, load: int, workdir, steps: int = 2):
    return check_world_size_resume(
        subject, stage="TRAINING", grid=(1, 1), save_world_size=save, load_world_size=load,
        steps=steps, workdir=workdir, timeout=120,
    )  # fmt: skip


def test_a_module_subject_saved_at_2_ranks_resumes_exactly_at_1(tmp_path) -> None:
    result = check(tiny(), 2, 1, tmp_path)
    assert (result.save_world_size, result.load_world_size, result.steps) == (2, 1, 2)
    assert [r["telemetry"] for r in result.continued[0]] == [
        [{"event": "step", "step": 3}],
        [{"event": "step", "step": 4}],
    ]  # after the 2 warm-up steps
    assert (result.checkpoint / ".metadata").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(("save", "load"), [(1, 2), (2, 2), (2, 3), (3, 2), (2, 4)])
def test_other_world_size_pairs_resume_exactly(tmp_path, save, load) -> None:
    check(tiny(), save, load, tmp_path)


class DdpSubject(ModuleSubject):
    distributed_strategy = "ddp"


@pytest.mark.slow
def test_ddp_resumes_exactly_across_world_sizes(tmp_path) -> None:
    check(tiny(DdpSubject), 2, 1, tmp_path / "a")
    check(tiny(DdpSubject), 1, 3, tmp_path / "b")


def _local(value: Any) -> Any:
    from torch.distributed.tensor import DTensor

    return value.to_local() if isinstance(value, DTensor) else value


class RankLocalSystem(ModuleSubjectSystem):
    """The classic bug: the optimizer state saved as each rank holds it (its local shards),
    under the rank's own key, beside a correctly resharded model."""

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return {"model": get_model_state_dict(self.system["model"]), "steps": self.system["steps"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.system["model"], state["model"])
        self.system["steps"] = state["steps"]

    def rank_state(self) -> dict[str, Any]:
        optimizer = self.system["optimizer"].state_dict()
        local = {i: {k: _local(v) for k, v in s.items()} for i, s in optimizer["state"].items()}
        return {**super().rank_state(), "optimizer": {**optimizer, "state": local}}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        from torch.distributed.tensor import DTensor

        super().load_rank_state(state)
        optimizer = self.system["optimizer"]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        saved = state["optimizer"]

        def shard(value: torch.Tensor, param: Any) -> Any:
            mesh, placements = param.device_mesh, param.placements
            return DTensor.from_local(
                value, mesh, placements, shape=param.shape, stride=param.stride()
            )

        restored = {
            int(i): {k: v if k == "step" else shard(v, params[int(i)]) for k, v in entry.items()}
            for i, entry in saved["state"].items()
        }
        optimizer.load_state_dict({**saved, "state": restored})


class RankLocalOptimizer(ModuleSubject):
    def build_distributed(self, *, grid, stage, seed, parallel):
        return RankLocalSystem(self, parallel, seed)


@pytest.mark.slow
def test_rank_local_optimizer_state_fails_across_world_sizes_naming_rank_and_key(
    tmp_path,
) -> None:
    check(tiny(RankLocalOptimizer), 2, 2, tmp_path / "same")  # fine at the same world size
    with pytest.raises(WorldSizeResumeMismatch) as failure:
        check(tiny(RankLocalOptimizer), 2, 1, tmp_path / "fewer")
    message = str(failure.value)
    assert message.startswith("rank 0 (load at 1 rank(s)): could not restore the checkpoint ")
    assert "rank0.state.optimizer.state.0.exp_avg" in message


class PlainOptimizerStateDict(ModuleSubjectSystem):
    """`optimizer.state_dict()` as it is under FSDP2: its tensors are DTensors."""

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return {
            "model": get_model_state_dict(self.system["model"]),
            "optimizer": self.system["optimizer"].state_dict(),
            "steps": self.system["steps"],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.system["model"], state["model"])
        self.system["optimizer"].load_state_dict(state["optimizer"])
        self.system["steps"] = state["steps"]


class PlainOptimizer(ModuleSubject):
    def build_distributed(self, *, grid, stage, seed, parallel):
        return PlainOptimizerStateDict(self, parallel, seed)


@pytest.mark.slow
def test_plain_optimizer_state_dict_under_fsdp2_holds_dtensors_and_reshards(tmp_path) -> None:
    check(tiny(PlainOptimizer), 2, 1, tmp_path)


class ForgetsTheGenerator(ModuleSubjectSystem):
    def rank_state(self) -> dict[str, Any]:
        return {}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        pass


class ForgetfulSubject(ModuleSubject):
    def build_distributed(self, *, grid, stage, seed, parallel):
        return ForgetsTheGenerator(self, parallel, seed)


@pytest.mark.slow
def test_a_lost_data_stream_is_named_by_rank_and_key(tmp_path) -> None:
    with pytest.raises(WorldSizeResumeMismatch) as failure:
        check(tiny(ForgetfulSubject), 2, 1, tmp_path)
    lines = str(failure.value).splitlines()
    assert lines[0].startswith("rank 0: system.system['generator'] (a torch.Generator) advanced")
    assert any(
        line.startswith(
            "resuming at 1 rank(s) from a save at 2 differs from the run that continued, after "
            "2 step(s): rank 0 (vs continued rank 0): steps[0]['metrics']['loss']: "
        )
        for line in lines
    )


class ForgetsTheOptimizer(ModuleSubjectSystem):
    """Saves and restores the model only: the optimizer keeps what the fresh build made."""

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return {"model": get_model_state_dict(self.system["model"]), "steps": self.system["steps"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.system["model"], state["model"])
        self.system["steps"] = state["steps"]


class OptimizerForgettingSubject(ModuleSubject):
    def build_distributed(self, *, grid, stage, seed, parallel):
        return ForgetsTheOptimizer(self, parallel, seed)


@pytest.mark.slow
def test_a_checkpoint_without_the_optimizer_fails_where_it_first_shows(tmp_path) -> None:
    with pytest.raises(WorldSizeResumeMismatch) as failure:
        check(tiny(OptimizerForgettingSubject), 1, 2, tmp_path)
    message = str(failure.value)
    # optimizer state is sharded differently at each world size: the capture leaves it out,
    # so the difference itself comes first
    assert "rank 0 (vs continued rank 0): steps[1]['metrics']['loss']" in message.splitlines()[0]
    assert "  state['model']['0.weight']: " in message


class NotDistributed:
    name = "plain"


def test_a_subject_without_a_distributed_build_is_told_what_to_provide(tmp_path) -> None:
    assert not supports_world_size_check(NotDistributed())
    assert supports_world_size_check(tiny()) and supports_world_size_check(tiny(PlainOptimizer))
    with pytest.raises(SubjectError, match="has no build_distributed"):
        check(NotDistributed(), 1, 1, tmp_path)


def _inside_a_job(context, payload):
    results = []
    for save, load in ((2, 1), (1, 2)):
        workdir = context.workdir / f"own-tmp-of-rank{context.rank}"
        results.append(check(tiny(), save, load, workdir, steps=1).seconds)
    return results


@pytest.mark.slow
def test_under_torchrun_it_uses_the_existing_process_group(tmp_path) -> None:
    from pytest_ckpt.distributed.launch import run_ranks

    per_rank = run_ranks(2, _inside_a_job, workdir=tmp_path, timeout=300)
    assert len(per_rank) == 2 and all(len(r) == 2 for r in per_rank)

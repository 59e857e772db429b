"""Framework checkpoints through migrate: what the framework's own loader then does with OUT.

A Lightning `.ckpt` whose hyper_parameters held a dataclass is refused (Lightning would pass
the migrated dict to `__init__`) unless an adapter takes the dict on, and then Lightning
rebuilds the module; transformers-shaped `(str, Enum)` members convert statically when their
class is an Enum in its own source, and are refused with the reason when its Enum base lives
in another module (not followed without importing)."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap

import pytest
import torch

from pytest_ckpt.audit.global_kinds import clear_caches, searching
from pytest_ckpt.migrate.workflow import Adapter, MigrationFailed, migrate_file


@dataclasses.dataclass
class Config:
    hidden: int = 8


def lightning_checkpoint(tmp_path, module_class):
    """A `.ckpt` written by Lightning's own `Trainer.save_checkpoint` after one step."""
    lightning = pytest.importorskip("lightning.pytorch")
    model = module_class(Config(hidden=8))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)))
    trainer = lightning.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def module_classes():
    lightning = pytest.importorskip("lightning.pytorch")

    class ConfigModule(lightning.LightningModule):
        def __init__(self, config: Config) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(2, config.hidden)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class DictTakingModule(ConfigModule):
        def __init__(self, config: Config | dict) -> None:
            super().__init__(Config(**config) if isinstance(config, dict) else config)

    return ConfigModule, DictTakingModule


def load_kwargs(module_class) -> dict:
    parameters = inspect.signature(module_class.load_from_checkpoint).parameters
    return {"weights_only": True} if "weights_only" in parameters else {}


def test_a_lightning_dataclass_hparam_is_refused_with_the_reason(tmp_path) -> None:
    config_module, _ = module_classes()
    source, out = lightning_checkpoint(tmp_path, config_module), tmp_path / "out.ckpt"
    with pytest.raises(MigrationFailed) as failed:
        migrate_file(source, out)
    assert failed.value.status == 1 and not out.exists()
    (line,) = failed.value.details
    assert line.startswith(f"root['hyper_parameters']['config']: a {__name__}.Config in ")
    assert "passes to your module's __init__ as is; fix: let __init__ take a dict too" in line


def test_with_an_adapter_lightning_rebuilds_a_module_that_takes_the_dict(tmp_path) -> None:
    config_module, dict_taking = module_classes()
    source, out = lightning_checkpoint(tmp_path, config_module), tmp_path / "out.ckpt"
    done = migrate_file(source, out, adapt=Adapter(lambda state: state, "as is", "refused"))
    assert done.conversions[-1] == "root: as is"
    model = dict_taking.load_from_checkpoint(out, **load_kwargs(dict_taking))
    assert model.layer.out_features == 8
    expected = torch.load(source, weights_only=False)["state_dict"]["layer.weight"]
    assert torch.equal(model.layer.weight, expected)


ENUM_SOURCE = """
from enum import Enum


class IntervalStrategy(str, Enum):
    NO = "no"
    STEPS = "steps"
"""
EXPLICIT_ENUM = """
from enum import Enum


class ExplicitEnum(str, Enum):
    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"{value} is not a valid {cls.__name__}")
"""
TRAINER_UTILS = """
from .generic import ExplicitEnum


class IntervalStrategy(ExplicitEnum):
    NO = "no"
    STEPS = "steps"
"""


def enum_file(tmp_path, package: str, files: dict[str, str]):
    """A pickle of `{"eval_strategy": package.trainer_utils.IntervalStrategy.STEPS}` as
    pickle writes a `(str, Enum)` member (REDUCE of the class with its value), the package's
    sources written to a tmp folder: never imported here."""
    folder = tmp_path / "src" / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name, text in files.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    cls = f"{package}.trainer_utils\nIntervalStrategy\n".encode()
    pickle = b"\x80\x02}X\r\x00\x00\x00eval_strategyc" + cls + b"X\x05\x00\x00\x00steps\x85Rs."
    from tests.audit.test_hostile import write_zip

    return write_zip(tmp_path / "args.pt", pickle), tmp_path / "src"


def test_a_str_enum_member_converts_statically_when_its_source_says_enum(tmp_path) -> None:
    source, folder = enum_file(tmp_path, "fakeformers_a", {"trainer_utils": ENUM_SOURCE})
    clear_caches()
    with searching([folder]):
        done = migrate_file(source, tmp_path / "out.pt")
    assert torch.load(tmp_path / "out.pt", weights_only=True) == {"eval_strategy": "steps"}
    assert done.conversions == (
        "root['eval_strategy']: fakeformers_a.trainer_utils.IntervalStrategy member -> its "
        "value 'steps'",
    )


def test_an_enum_whose_base_is_in_another_module_is_refused_with_the_reason(tmp_path) -> None:
    files = {"generic": EXPLICIT_ENUM, "trainer_utils": TRAINER_UTILS}
    source, folder = enum_file(tmp_path, "fakeformers_b", files)
    clear_caches()
    with searching([folder]), pytest.raises(MigrationFailed) as failed:
        migrate_file(source, tmp_path / "out.pt")
    (line,) = failed.value.details
    assert line.startswith(
        "root['eval_strategy']: fakeformers_b.trainer_utils.IntervalStrategy('steps') is a "
        "call of a class not known to be an Enum without importing it"
    )
    assert "store .value (or migrate a file you wrote with --trust)" in line

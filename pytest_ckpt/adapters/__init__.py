"""Subjects for models as projects write them, so the harness meets users where they are.

- `module.ModuleSubject`: a plain `nn.Module` with optimizer, schedulers, GradScaler, its own
  loss and its own phase names (also `pytest_ckpt.ModuleSubject`).
- `lightning.LightningSubject`: a `LightningModule`, driven through its own
  `configure_optimizers` and `training_step` (needs `pip install lightning`).
- `transformers.TransformersSubject`: a transformers `PreTrainedModel` rebuilt from its saved
  config, AdamW with a warm-up schedule by default (needs `pip install transformers`);
  `native=True` runs the `Trainer` itself (`transformers_native`).
- `accelerate.AccelerateSubject`: a model, optimizer, loader and scheduler prepared by
  `Accelerator`, saved and resumed by accelerate's own `save_state` / `load_state` (needs
  `pip install accelerate`); `framework_folders` reads such a folder into a compared export.
- `sb3.SB3Subject`: a Stable-Baselines3 algorithm through its own `save` / `load`, saying what
  they cannot resume (needs `pip install stable-baselines3`).

Importing any of these never imports its framework: that happens when a subject is made, and
without the framework installed it fails with one line naming the package to install.
"""

from __future__ import annotations

import importlib
from typing import Any


def require(module: str, package: str, adapter: str) -> Any:
    """Import `module` for `adapter`, or raise ImportError naming the pip package."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{adapter} needs {package}, which is not installed: pip install {package}"
        ) from None

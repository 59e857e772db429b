"""pytest-ckpt: prove PyTorch checkpoints survive save -> load(weights_only=True) -> resume."""

__version__ = "0.1.0"

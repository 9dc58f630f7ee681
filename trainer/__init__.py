"""The trainer: a GPT with sp / µP / learnable-multiplier parametrizations on byte-level text.
It knows nothing of Ray or MLflow: `train(config, report=callback)` is the whole interface."""
from .config import ConfigError, DataError, TrainConfig, UserError

__all__ = ["TrainConfig", "ConfigError", "DataError", "UserError", "train", "TrainResult", "estimate", "train_fused"]


def __getattr__(name):  # torch-heavy modules load on first use, so config checks stay fast
    if name in ("train", "TrainResult"):
        from . import loop
        return getattr(loop, name)
    if name == "train_fused":
        from .fused import train_fused
        return train_fused
    if name == "estimate":
        from .estimate import estimate
        return estimate
    raise AttributeError(name)

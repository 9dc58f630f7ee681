"""One trial: what it costs on the device it will use (from the trainer's estimate)."""
from __future__ import annotations

from typing import Any

from trainer.estimate import estimate


def trial_cost(trial) -> dict[str, Any]:
    """`trainer.estimate` of the trial's config, plus `seconds`: its compute time on the device
    the trial asks for (GPU when resources.gpu > 0, else CPU)."""
    est = estimate(trial.config)
    return {**est, "seconds": est["seconds_gpu"] if trial.resources.get("gpu") else est["seconds_cpu"]}

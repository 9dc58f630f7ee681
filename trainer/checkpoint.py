"""Checkpoints on disk: one directory per step holding a model's run state (`loop.RunState.state_dict`:
model, optimizer, step = data position and schedule, RNG states, history). Written to a
temporary directory and renamed, so a crash never leaves a half checkpoint."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .config import TrainConfig, UserError

KEEP = 2  # checkpoints kept per run; older ones are removed after a new one lands
LATEST = "latest"  # as `resume_from`: the newest checkpoint in the run's checkpoint directory


def save_checkpoint(directory: str, step: int, state: dict) -> str:
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return str(final)


def latest_checkpoint(directory: str) -> str | None:
    found = sorted(Path(directory).glob("step_*/state.pt"))
    return str(found[-1].parent) if found else None


def load_checkpoint(path: str, cfg: TrainConfig) -> dict:
    """The state saved at `path`, refused when it was written for another experiment (runtime
    options such as threads or device may change on resume)."""
    file = Path(path) / "state.pt"
    if not file.is_file():
        raise UserError(f"no checkpoint at {path} (expected {file})")
    # Load on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
    state = torch.load(file, map_location="cpu", weights_only=False)
    saved, now = TrainConfig.build(state["config"], source=f"checkpoint {path}").identity(), cfg.identity()
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise UserError(f"checkpoint {path} was written with a different config (keys {changed}); "
                        "resume with the same config or start a new run")
    return state

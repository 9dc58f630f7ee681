"""Checkpoints: model, optimizer, step (= data position and schedule), RNG states, history.
Written to a temporary directory and renamed, so a crash never leaves a half checkpoint."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import TrainConfig, UserError

if TYPE_CHECKING:
    from .loop import Trainer

KEEP = 2  # checkpoints kept per run; older ones are removed after a new one lands


def save_checkpoint(directory: str, t: "Trainer") -> str:
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{t.step:08d}"
    tmp = root / f".tmp_step_{t.step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save({
        "model": t.model.state_dict(), "optimizer": t.opt.state_dict(), "step": t.step,
        "initial_loss": t.initial_loss, "history": t.history, "elapsed": t.elapsed,
        "config": t.cfg.model_dump(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return str(final)


def latest_checkpoint(directory: str) -> str | None:
    found = sorted(Path(directory).glob("step_*/state.pt"))
    return str(found[-1].parent) if found else None


def load_checkpoint(path: str, t: "Trainer") -> None:
    file = Path(path) / "state.pt"
    if not file.is_file():
        raise UserError(f"no checkpoint at {path} (expected {file})")
    # Load on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
    state = torch.load(file, map_location="cpu", weights_only=False)
    saved, now = TrainConfig.build(state["config"], source=f"checkpoint {path}").identity(), t.cfg.identity()
    if saved != now:  # runtime options (threads, device, ...) may change on resume
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise UserError(f"checkpoint {path} was written with a different config (keys {changed}); "
                        "resume with the same config or start a new run")
    t.model.load_state_dict(state["model"])
    t.opt.load_state_dict(state["optimizer"])
    t.step, t.initial_loss, t.history, t.elapsed = state["step"], state["initial_loss"], state["history"], state["elapsed"]
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])

"""Checkpoints on disk: one directory per step holding a model's run state (`loop.RunState.state_dict`:
model, optimizer, step = data position and schedule, RNG states, history). Written to a
temporary directory and renamed, so a crash never leaves a half checkpoint.

A checkpoint never runs code when read: `state.pt` holds only tensors and plain containers and
numbers (dict, list, tuple, str, int, float, bool, None) and is read with torch's weights-only
unpickler, so a file planted in a shared storage folder cannot run anything in the workers that
resume from it. The one value of the trainer's state outside that set, numpy's RNG state, is
stored as plain numbers and rebuilt on load."""
from __future__ import annotations

import os
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig, UserError
from .errors import CheckpointError, brief

KEEP = 2  # checkpoints kept per run; older ones are removed after a new one lands
LATEST = "latest"  # as `resume_from`: the newest checkpoint in the run's checkpoint directory
STATE_FILE = "state.pt"
# Exact types: a numpy float is a float subclass, but the weights-only loader refuses it.
_SCALARS = (str, int, float, bool, type(None))
# What each top-level value must be once loaded (a planted file holding plain data of the wrong
# shape is refused here, not by a KeyError deep in load_state_dict).
_SHAPES = {"model": dict, "optimizer": list, "step": int, "initial_loss": (float, type(None)), "history": list,
           "elapsed": (int, float), "config": dict, "rng": dict}


def save_checkpoint(directory: str, step: int, state: dict) -> str:
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(_storable(state), tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return str(final)


def latest_checkpoint(directory: str) -> str | None:
    found = sorted(Path(directory).glob(f"step_*/{STATE_FILE}"))
    return str(found[-1].parent) if found else None


def load_checkpoint(path: str, cfg: TrainConfig) -> dict:
    """The state saved at `path`, refused when it was written for another experiment (runtime
    options such as threads or device may change on resume). A file that is not a checkpoint of
    this format (corrupt, cut short, or holding anything but tensors and plain values) raises
    CheckpointError naming it, and nothing of it is used."""
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {path} (expected {file})")
    try:
        # Load on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _untrusted(file, "it holds more than tensors and plain values (a planted file, or one written "
                         "before checkpoints took this safe format)") from None
    except Exception as err:  # noqa: BLE001 - any failure means the file is not trusted
        raise _untrusted(file, f"it could not be read ({type(err).__name__}: {brief(str(err))})") from None
    if not isinstance(state, dict):
        raise _untrusted(file, f"it holds a {type(state).__name__}, not a trainer state")
    wrong = [k for k, kind in _SHAPES.items() if not isinstance(state.get(k), kind)]
    if wrong:
        raise _untrusted(file, f"its keys {wrong} are missing or of the wrong type")
    try:
        state["rng"]["numpy"] = _numpy_rng_state(state["rng"]["numpy"])
        saved = TrainConfig.build(state["config"], source=f"checkpoint {path}").identity()
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001
        raise _untrusted(file, f"its contents are malformed ({type(err).__name__}: {brief(str(err))})") from None
    now = cfg.identity()
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise UserError(f"checkpoint {path} was written with a different config (keys {changed}); "
                        "resume with the same config or start a new run")
    return state


def _untrusted(file: Path, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {file} is not used: {why}; delete its step folder to resume from an "
                           "earlier checkpoint (or start the run afresh)")


def _storable(state: dict) -> dict:
    """`state` with numpy's RNG state as plain numbers; anything else outside the weights-only
    set fails here, at save time, rather than when a run tries to resume."""
    rng = state["rng"]
    name, keys, pos, has_gauss, cached = rng["numpy"]
    state = {**state, "rng": {**rng, "numpy": [str(name), np.asarray(keys).tolist(), int(pos), int(has_gauss),
                                               float(cached)]}}
    _check_plain(state)
    return state


def _check_plain(value, path: tuple = ()) -> None:
    kind = type(value)
    if kind in (dict, OrderedDict):
        if all(type(k) in _SCALARS and type(v) in _SCALARS for k, v in value.items()):
            return  # the common case (a history entry, a config): one pass, no recursion
        for key, item in value.items():
            _check_plain(key, path)
            _check_plain(item, (*path, key))
    elif kind in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, (*path, i))
    elif kind not in _SCALARS and not isinstance(value, torch.Tensor):
        where = "state" + "".join(f"[{brief(part)}]" for part in path)
        raise TypeError(f"checkpoint {where}: a {kind.__name__} cannot be stored (the weights-only loader "
                        "reads tensors, plain containers and numbers only)")


def _numpy_rng_state(stored) -> tuple:
    """The tuple np.random.set_state takes, rebuilt from its stored plain form."""
    name, keys, pos, has_gauss, cached = stored
    return str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)

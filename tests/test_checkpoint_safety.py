"""Checkpoints are read with torch's weights-only loader: a planted file runs nothing, is named in
a CheckpointError and is not used; a saved checkpoint restores the trainer exactly."""
import os
import pickle
import random

import numpy as np
import pytest
import torch

from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig, UserError
from trainer.loop import Trainer, train

TINY = dict(d_model=32, head_dim=16, n_layers=1, seq_len=32, batch_size=4, steps=8, eval_interval=4,
            eval_batches=1, warmup_steps=2, device="cpu")


class Planted:
    """Unpickling this would create the marker file (and could have done anything else)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant(tmp_path, how: str):
    folder = tmp_path / "ckpt" / "step_00000004"
    folder.mkdir(parents=True)
    marker = tmp_path / "marker"
    file = folder / "state.pt"
    if how == "pickle":
        file.write_bytes(pickle.dumps({"model": Planted(marker)}, protocol=2))
    else:  # torch's own zip format around the same object
        torch.save({"model": Planted(marker), "step": 4}, file)
    return folder, file, marker


@pytest.mark.parametrize("how", ["pickle", "torch"])
def test_a_planted_pickle_runs_nothing_and_is_named(tmp_path, how):
    folder, file, marker = plant(tmp_path, how)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(folder), TrainConfig(**TINY))
    assert not marker.exists()
    assert str(file) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, UserError)  # the CLI prints it as one line, exit 2


def test_resuming_a_run_from_a_planted_file_refuses_it(tmp_path):
    _, file, marker = plant(tmp_path, "torch")
    with pytest.raises(CheckpointError, match=str(file)):
        train(TrainConfig(**TINY), checkpoint_dir=str(tmp_path / "ckpt"), resume_from="latest")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "truncated", "list", "wrong shape", "bad rng"])
def test_a_broken_checkpoint_is_named_not_used(tmp_path, content):
    cfg = TrainConfig(**TINY)
    path = save_checkpoint(str(tmp_path), 4, Trainer(cfg).run.state_dict())
    file = os.path.join(path, "state.pt")
    if content == "truncated":
        data = open(file, "rb").read()
        open(file, "wb").write(data[: len(data) // 2])
    elif content == "list":
        torch.save([1, 2, 3], file)
    elif content == "wrong shape":
        state = torch.load(file, weights_only=True)
        torch.save({**state, "step": "four"}, file)
    elif content == "bad rng":
        state = torch.load(file, weights_only=True)
        torch.save({**state, "rng": {**state["rng"], "numpy": [1]}}, file)
    else:
        open(file, "wb").write(content)
    with pytest.raises(CheckpointError, match=file) as err:
        load_checkpoint(path, cfg)
    assert "\n" not in str(err.value)


def test_a_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "step_00000001"), TrainConfig(**TINY))


def test_saving_refuses_what_the_safe_loader_could_not_read(tmp_path):
    state = Trainer(TrainConfig(**TINY)).run.state_dict()
    state["history"] = [{"loss": np.float64(1.0)}]  # a float subclass pickled as numpy: refused on load
    with pytest.raises(TypeError, match="float64"):
        save_checkpoint(str(tmp_path), 1, state)
    assert not list(tmp_path.glob("step_*"))


@pytest.mark.parametrize("kw", [dict(), dict(optimizer="muon", multipliers="vector", scheme="mup")])
def test_a_round_trip_restores_the_trainer_exactly(tmp_path, kw):
    cfg = TrainConfig(**TINY, **kw)
    a = Trainer(cfg)
    for _ in range(3):
        a.train_step()
    a.run.history.append({"step": 3, "train_loss": 1.5, "note": "x", "nan": float("nan")})
    a.run.initial_loss, a.run.elapsed = 5.25, 1.5
    random.random(), np.random.random(), torch.rand(1)  # move every RNG off its seed
    path = save_checkpoint(str(tmp_path), a.step, a.run.state_dict())
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    steps_a = [a.train_step() for _ in range(2)]

    b = Trainer(cfg)
    b.run.load_state_dict(load_checkpoint(path, cfg))
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected
    assert (b.step, b.run.initial_loss, b.run.elapsed) == (3, 5.25, 1.5)
    assert b.run.history[-1]["note"] == "x" and np.isnan(b.run.history[-1]["nan"])
    assert [b.train_step() for _ in range(2)] == steps_a
    for (name, pa), pb in zip(a.run.model.state_dict().items(), b.run.model.state_dict().values()):
        assert torch.equal(pa, pb), name

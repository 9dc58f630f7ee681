"""What only a CUDA device shows about the trainer: a run on the GPU (bf16 autocast, MFU from
the device's known peak), a fused pack on it, and resuming a GPU checkpoint. Marked `cuda`
and skipped where torch sees no GPU; benchmarks/gpu_check.py runs them (`-m cuda`)."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import TINY_TRAIN
from trainer.config import TrainConfig
from trainer.estimate import PEAK_FLOPS
from trainer.fused import train_fused
from trainer.loop import train

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ON_GPU = {**TINY_TRAIN, "device": "cuda"}


def config(**overrides) -> TrainConfig:
    return TrainConfig.build({**ON_GPU, **overrides}, source="test")


def test_a_run_on_the_gpu_finishes_and_reports_mfu_on_a_known_device():
    result = train(config())
    m = result.metrics
    assert result.status == "finished" and math.isfinite(m["final_val_loss"])
    assert m["tokens_per_s"] > 0
    if any(name in torch.cuda.get_device_name() for name in PEAK_FLOPS):
        assert 0 < m["mfu"] < 1


def test_a_fused_pack_trains_on_the_gpu():
    cfgs = [config(seed=k, lr=1e-3 * (k + 1)) for k in range(3)]
    results = train_fused(cfgs)
    assert [r.status for r in results] == ["finished"] * 3
    assert len({round(r.metrics["final_val_loss"], 6) for r in results}) == 3  # members differ


class Crash(Exception):
    pass


def test_a_gpu_checkpoint_resumes_exactly(tmp_path):
    full = train(config(), checkpoint_dir=str(tmp_path / "a"))

    def crash_at_16(metrics, path):
        if metrics["step"] == 16:
            raise Crash()
    with pytest.raises(Crash):
        train(config(), report=crash_at_16, checkpoint_dir=str(tmp_path / "b"))
    seen = []
    resumed = train(config(), report=lambda m, p: seen.append(m["step"]), checkpoint_dir=str(tmp_path / "b"),
                    resume_from="latest")
    assert seen == [24]  # continued from step 16 on the GPU, not from scratch
    assert resumed.metrics["final_val_loss"] == pytest.approx(full.metrics["final_val_loss"], rel=1e-3)

"""The training loop: reports, exact resume, divergence, coordinate check."""
import math

import pytest

from helpers import TINY_TRAIN as TINY
from trainer.config import TrainConfig
from trainer.loop import train


class Crash(Exception):
    pass


def test_reports_carry_the_contract_keys():
    reports = []
    result = train(TrainConfig(**TINY, multipliers="vector", scheme="mup"), report=lambda m, p: reports.append(m))
    assert [r["step"] for r in reports] == [8, 16, 24]
    assert reports[-1]["final"] is True and result.status == "finished"
    for key in ("train_loss", "val_loss", "lr", "grad_norm", "mult_grad_norm", "tokens", "tokens_per_s", "flops",
                "weight_rms/attn_q.0", "eff_rms/embedding", "mult/attn_q.0/row_rms", "mult/embedding/col_max",
                "norm/final_norm/mean", "act/block.0", "act/logits"):
        assert math.isfinite(reports[0][key]), key
    assert "mult/head/row_rms" not in reports[0]  # paper placement: no multipliers on the LM head
    assert reports[-1]["val_loss"] < reports[0]["val_loss"] < math.log(256)
    assert result.metrics["final_val_loss"] == reports[-1]["val_loss"]
    assert result.metrics["tokens"] == 24 * 4 * 32
    rows = {(r["layer"], r["kind"]) for r in result.multipliers}
    assert ("attn_q.0", "row") in rows and ("embedding", "col") in rows and len(rows) == 16


@pytest.mark.parametrize("kw", [dict(), dict(optimizer="muon", multipliers="scalar", schedule="cosine")])
def test_resume_from_a_mid_run_checkpoint_is_exact(tmp_path, kw):
    cfg = TrainConfig(**TINY, **kw)
    full = train(cfg, checkpoint_dir=str(tmp_path / "a"))

    def crash_at_16(metrics, path):
        if metrics["step"] == 16:
            raise Crash()
    with pytest.raises(Crash):
        train(cfg, report=crash_at_16, checkpoint_dir=str(tmp_path / "b"))
    seen = []
    resumed = train(cfg, report=lambda m, p: seen.append(m["step"]), checkpoint_dir=str(tmp_path / "b"),
                    resume_from="latest")
    assert seen == [24]  # continued from step 16, not from scratch
    for a, b in zip(full.history, resumed.history, strict=True):
        assert (a["step"], a["train_loss"], a["val_loss"]) == (b["step"], b["train_loss"], b["val_loss"])
    assert resumed.metrics["final_val_loss"] == full.metrics["final_val_loss"]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    from trainer.config import UserError
    train(TrainConfig(**TINY), checkpoint_dir=str(tmp_path))
    with pytest.raises(UserError, match="different config"):
        train(TrainConfig(**{**TINY, "lr": 1e-2}), checkpoint_dir=str(tmp_path), resume_from="latest")


def test_divergence_is_detected_and_reported():
    reports = []
    result = train(TrainConfig(**{**TINY, "steps": 60, "warmup_steps": 0}, lr=30.0, grad_clip=0.0),
                   report=lambda m, p: reports.append(m))
    assert result.status == "diverged"
    assert reports[-1]["final"] and reports[-1]["status"] == "diverged"
    assert result.metrics["diverged_at_step"] < 60


@pytest.mark.slow  # trains 12 models up to width 512
def test_coordinate_check_flat_under_mup_grows_under_sp():
    from analysis.coordcheck import coord_check_rows
    from trainer import coordcheck
    base = TrainConfig(**coordcheck.DEFAULTS)
    rows = coordcheck.run(base, [64, 128, 256, 512], ["sp", "mup", "mup+vector"], steps=4, seeds=1)
    fit = coord_check_rows(rows, max_steps=5)
    s = {(g.label, sl.name, sl.step): sl.fit.exponent for g in fit.groups for sl in g.slopes}
    for block in ("block.0", "block.1"):
        assert s[("sp", block, 4)] > 1.0, s        # SP: activations grow with width after a few steps
        assert abs(s[("mup", block, 4)]) < 0.25, s  # µP: flat in width
        assert abs(s[("mup+vector", block, 4)]) < 0.25, s
        assert abs(s[("sp", block, 0)]) < 0.1, s   # at init every scheme is flat

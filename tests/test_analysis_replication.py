"""The analyses behind the paper-replication sweeps (sweeps/paper_*.yaml): equilibrium norms of a
sweep of the hidden matrices alone, and the penalty of mis-set fixed multipliers with and
without learnable multipliers, on synthetic runs with a known answer."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import synthetic as syn
from analysis.fits import FitOptions
from analysis.freedom import fit_freedom, setting_name
from analysis.norms import fit_norms
from analysis.report import render
from analysis.stats import jsonable
from trainer.config import UserError


def hidden_only_norm_sweep(seed: int = 0, weight_slope: float = 1.0) -> pd.DataFrame:
    """A sqrt(η/λ) sweep moved through lr_mult_hidden / wd_mult_hidden at fixed base lr and WD:
    the embedding's η/λ does not move, and neither does its norm."""
    frame, _ = syn.norm_trials(syn.NormSpec(weight_slope=weight_slope), syn.TransferSpec(), np.random.default_rng(seed))
    S_rel = np.sqrt(frame["lr"] / frame["weight_decay"]) / np.sqrt(3e-3 / 0.3)
    frame["lr_mult_hidden"], frame["wd_mult_hidden"] = S_rel, 1 / S_rel
    frame["lr"], frame["weight_decay"] = 3e-3, 0.3
    frame["weight_rms/embedding"] = 0.5
    frame["eff_rms/embedding"] = 0.5
    return frame


def test_hidden_only_sweep_fits_the_hidden_matrices_and_leaves_the_embedding_out():
    result = fit_norms(hidden_only_norm_sweep())
    assert len(result.sweeps) == 2
    for sweep in result.sweeps:
        assert "embedding" not in sweep.swept_roles and "attn_q" in sweep.swept_roles
        assert {s.role for s in sweep.series} == set(sweep.swept_roles)
        assert sweep.S_values[-1] / sweep.S_values[0] == pytest.approx(64)
        assert sweep.pooled["weight_rms"].fit.exponent == pytest.approx(1.0, abs=0.03)
        assert sweep.verdict.met, sweep.verdict
    (comparison,) = result.comparisons
    assert comparison.smaller_with_multipliers and comparison.ratio < 0.2


def test_norm_criteria_fail_when_the_norm_does_not_follow_S():
    result = fit_norms(hidden_only_norm_sweep(weight_slope=0.5))
    plain = next(s for s in result.sweeps if not s.lrm)
    lrm = next(s for s in result.sweeps if s.lrm)
    assert plain.verdict.slope == pytest.approx(0.5, abs=0.03) and not plain.verdict.met
    # the synthetic multiplier compensates 1/S while the matrix only grows S^0.5: eff slope −0.5
    assert lrm.verdict.slope == pytest.approx(-0.5, abs=0.03) and not lrm.verdict.met


def kinked_norm_sweep(S_kink: float, low: float, high: float, noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """The hidden-only sweep with every hidden matrix RMS ∝ S^low below S_kink and S^high above
    it (continuous at S_kink), 2% log-normal scatter."""
    frame = hidden_only_norm_sweep(seed)
    rng = np.random.default_rng(seed + 1)
    S = np.sqrt(frame["lr"] * frame["lr_mult_hidden"] / (frame["weight_decay"] * frame["wd_mult_hidden"])).to_numpy()
    log_ratio = np.log(S / S_kink)
    curve = 0.3 * np.exp(np.where(log_ratio < 0, low, high) * log_ratio)
    for col in [c for c in frame.columns if c.startswith(("weight_rms/", "eff_rms/")) and "embedding" not in c]:
        frame[col] = curve * np.exp(rng.normal(0, noise, len(frame)))
    return frame


def test_two_segment_norm_fit_finds_a_known_kink():
    """S from 0.125 to 8 (7 values, 2 seeds); slope 0.5 below S = 0.7 and 1.0 above."""
    result = fit_norms(kinked_norm_sweep(0.7, 0.5, 1.0))
    plain = next(s for s in result.sweeps if not s.lrm)
    pooled = plain.pooled["weight_rms"]
    seg = pooled.segments
    assert 0.5 < pooled.fit.exponent < 1.0                    # one line averages the two
    assert seg.breakpoint_S == pytest.approx(0.7, rel=0.35)
    assert seg.slope_low_ci[0] <= 0.5 <= seg.slope_low_ci[1] and abs(seg.slope_low - 0.5) < 0.1
    assert seg.slope_high_ci[0] <= 1.0 <= seg.slope_high_ci[1] and abs(seg.slope_high - 1.0) < 0.1
    assert seg.rms_two_segments < seg.rms_one_line
    assert seg.n_low + seg.n_high >= pooled.fit.n_runs
    for series in plain.series:                               # every swept role gets its own
        assert series.segments is not None and series.segments.slope_high > series.segments.slope_low


def test_two_segment_slopes_agree_on_a_straight_line_and_reach_the_report():
    result = fit_norms(hidden_only_norm_sweep())
    seg = next(s for s in result.sweeps if not s.lrm).pooled["weight_rms"].segments
    assert seg.slope_low == pytest.approx(1.0, abs=0.1) and seg.slope_high == pytest.approx(1.0, abs=0.1)
    data = jsonable(result.to_dict())
    assert "segments" in data["sweeps"][0]["pooled"]["weight_rms"]
    assert type(result).from_dict(json.loads(json.dumps(data))) == result
    text = render({"results": {"norms": result}, "experiments": ["x"], "generated_utc": "now", "source": "test",
                   "n_trials": 1, "outcomes": {}, "sweeps": [], "options": {"level": 0.95, "seed": 0},
                   "figures": {}, "skipped_figures": {}, "skipped": {}, "treatment": {}})
    assert "slope below S_b" in text


def test_norm_segments_need_four_values_of_S():
    from analysis.norms import segmented_fit
    S = np.repeat([0.01, 0.02, 0.04], 2)
    assert segmented_fit(S, S ** 0.7, 0.95) is None
    assert segmented_fit(np.append(S, [0.08, 0.08]), np.append(S, [0.08, 0.08]) ** 0.7, 0.95) is not None


def freedom_runs(penalties: dict, seeds: int = 4, noise: float = 0.004, seed: int = 0) -> pd.DataFrame:
    """penalties: (parametrization, setting dict) -> true loss penalty (inf = diverged)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (label, setting), penalty in penalties.items():
        for s in range(seeds):
            diverged = not np.isfinite(penalty)
            rows.append({"parametrization": label, "mode": "grid", "seed": s, "alpha_emb": 1.0, "wd_mult_hidden": 1.0,
                         **dict(setting), "outcome": "diverged" if diverged else "finished",
                         "final_val_loss": np.nan if diverged else 2.0 + penalty + rng.normal(0, noise)})
    return pd.DataFrame(rows)


DEFAULT, SMALL_EMB, BIG_WD = (), (("alpha_emb", 1 / 16),), (("wd_mult_hidden", 16.0),)


def test_learnable_multipliers_relieve_a_mis_set_scale():
    runs = freedom_runs({("mup", DEFAULT): 0.0, ("mup", SMALL_EMB): 0.06, ("mup", BIG_WD): 0.02,
                         ("mup+vector", DEFAULT): 0.0, ("mup+vector", SMALL_EMB): 0.005, ("mup+vector", BIG_WD): 0.02})
    result = fit_freedom(runs)
    assert result.knobs == ["alpha_emb", "wd_mult_hidden"]
    (group,) = result.groups
    reliefs = {r.setting: r for r in group.reliefs}
    assert set(reliefs) == {"alpha_emb ×1/16", "wd_mult_hidden ×16"}
    small = reliefs["alpha_emb ×1/16"]
    assert small.relief == pytest.approx(0.055, abs=0.01) and small.relief_ci[0] > 0
    assert small.clearly_smaller_with_multipliers
    same = reliefs["wd_mult_hidden ×16"]   # the same penalty both ways: not clearly smaller
    assert abs(same.relief) < 0.015 and same.relief_ci[0] < 0
    assert not same.clearly_smaller_with_multipliers
    text = render({"results": {"freedom": jsonable(result)}, "figures": {}, "skipped_figures": {}, "skipped": {},
                   "outcomes": {}, "experiments": [], "generated_utc": "", "source": "", "n_trials": 0, "sweeps": [],
                   "options": {"level": 0.95, "seed": 0}, "treatment": {}})
    assert "| alpha_emb ×1/16 |" in text and "| yes |" in text


def test_a_setting_that_diverges_only_without_multipliers_counts_as_relieved():
    runs = freedom_runs({("mup", DEFAULT): 0.0, ("mup", SMALL_EMB): np.inf,
                         ("mup+vector", DEFAULT): 0.0, ("mup+vector", SMALL_EMB): 0.01})
    (group,) = fit_freedom(runs).groups
    (relief,) = group.reliefs
    assert relief.clearly_smaller_with_multipliers and relief.penalty_without == np.inf
    plain = next(p for p in group.penalties if p.parametrization == "mup")
    assert plain.n_diverged == plain.n == 4
    # in summary.json inf leaves as null, and the counts say why
    data = json.loads(json.dumps(jsonable(group), allow_nan=False))
    assert data["reliefs"][0]["penalty_without"] is None
    assert data["penalties"][group.penalties.index(plain)]["penalty"] is None


def test_freedom_needs_a_mis_set_knob_and_both_arms():
    with pytest.raises(UserError, match="varies a fixed multiplier"):
        fit_freedom(freedom_runs({("mup", DEFAULT): 0.0, ("mup+vector", DEFAULT): 0.0}))
    with pytest.raises(UserError, match="with and without learnable multipliers"):
        fit_freedom(freedom_runs({("mup", DEFAULT): 0.0, ("mup", SMALL_EMB): 0.1}))


def test_setting_names_are_ratios_to_the_default():
    assert setting_name(["alpha_emb", "wd_mult_hidden"], (0.0625, 1.0)) == "alpha_emb ×1/16"
    assert setting_name(["alpha_out", "init_std"], (8.0, 1.0)) == "alpha_out ×8"
    assert setting_name(["alpha_out"], (1.0,)) == "default"


@pytest.mark.slow  # a full report with every figure
def test_report_of_a_mis_set_multiplier_sweep(tmp_path):
    from analysis.report import build_report

    tables, truth = syn.synthetic_tables(seed=4, freedom=syn.FreedomSpec(), history=False)
    summary = build_report(tables, tmp_path, FitOptions(n_boot=200, n_boot_scaling=10))
    assert "mis_set_penalty" in summary["figures"], summary["skipped_figures"]
    assert (tmp_path / "figures" / "mis_set_penalty.png").read_bytes()[:4] == b"\x89PNG"
    group = next(g for g in summary["results"]["freedom"]["groups"] if g["group"]["sweep"] == "mis-set-multipliers")
    reliefs = {r["setting"]: r for r in group["reliefs"]}
    for setting, truth_penalty in truth["freedom"]["penalties"].items():
        label, knobs = setting
        if label == "mup" and knobs:
            name = setting_name([k for k, _ in knobs], tuple(v for _, v in knobs))
            expected = truth_penalty - truth["freedom"]["penalties"][("mup+vector", knobs)]
            assert reliefs[name]["relief"] == pytest.approx(expected, abs=0.01)
    report = (tmp_path / "report.md").read_text()
    assert "## Mis-set multipliers" in report and "figures/mis_set_penalty.png" in report

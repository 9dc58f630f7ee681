"""Fits recover the ground truth of synthetic sweeps within their stated intervals, and edge
cases (one width, one seed, all diverged, NaNs, missing columns) give clear messages."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from analysis import synthetic as syn
from analysis.comparison import compare
from analysis.coordcheck import coord_check
from analysis.multiplier_scaling import fit_multipliers
from analysis.norms import fit_norms
from analysis.scaling import fit_scaling
from analysis.stats import jsonable
from analysis.transfer import TransferCurve, TransferResult, asymmetric_optima, fit_transfer, parabola_optima
from analysis.tuning import tuning_cost
from trainer.config import UserError


def inside(value: float, ci: list) -> bool:
    return ci[0] is not None and ci[0] <= value <= ci[1]


@pytest.fixture(scope="module")
def world():
    """A transfer/width sweep (sp drifts with γ = −1, µP and µP+LRM transfer with γ = 0), a
    sqrt(η/λ) sweep and a µP search sweep, 5 seeds per grid point."""
    spec = syn.TransferSpec(seeds=5)
    tables, truth = syn.synthetic_tables(seed=1, transfer=spec, norms=syn.NormSpec(), tuning=syn.TuningSpec())
    return tables, truth


@pytest.fixture(scope="module")
def transfer(world):
    tables, _ = world
    # the synthetic curves are symmetric parabolas: the parabola estimator is exact for them (the
    # default asymmetric bowl is ~4x noisier there: test_default_estimator_on_symmetric_curves)
    return fit_transfer(tables.trials, n_boot=300, seed=0, estimator="parabola").map_values(jsonable)


def _transfer_curves(result: TransferResult) -> list[TransferCurve]:
    return [c for c in result.curves if c.group.get("sweep") == "transfer"]


# ---- hyperparameter transfer ---------------------------------------------------------------

def test_transfer_recovers_gamma_within_its_interval(world, transfer):
    _, truth = world
    gammas = {g.group["parametrization"]: g for g in transfer.groups if g.group.get("sweep") == "transfer"}
    for label, gamma in truth["transfer"]["gamma"].items():
        g = gammas[label]
        assert inside(gamma, g.gamma_ci), (label, g.gamma, g.gamma_ci)
        assert g.gamma_ci[1] - g.gamma_ci[0] < 0.15          # informative, not just wide
        assert g.ci_method == "bootstrap over seeds"
    # SP drifts by one grid step (a factor 2 of lr) per doubling of width: 3 steps over 128..1024
    assert gammas["sp"].drift_steps == pytest.approx(-3.0, abs=0.15)
    assert abs(gammas["mup"].drift_steps) < 0.2


def test_transfer_optima_are_parabola_vertices_close_to_the_truth(world, transfer):
    _, truth = world
    curves = _transfer_curves(transfer)
    covered = []
    for c in curves:
        true = truth["transfer"]["log2_opt"][c.group["parametrization"]][int(c.size)]
        assert c.log2_opt == pytest.approx(true, abs=0.06)
        covered.append(inside(true, c.log2_opt_ci))
        assert c.n_window >= 3 and c.convex and not c.at_edge
    assert np.mean(covered) >= 0.75, covered   # 95% intervals; a bootstrap over 5 seeds is a bit optimistic


def test_default_estimator_on_symmetric_curves(world):
    tables, truth = world
    result = fit_transfer(tables.trials, n_boot=100, seed=0)
    assert result.estimator == "asymmetric"
    for c in _transfer_curves(result):
        true = truth["transfer"]["log2_opt"][c.group["parametrization"]][int(c.size)]
        assert c.log2_opt == pytest.approx(true, abs=0.25)
    gammas = {g.group["parametrization"]: g.gamma for g in result.groups if g.group.get("sweep") == "transfer"}
    for label, gamma in truth["transfer"]["gamma"].items():
        assert gammas[label] == pytest.approx(gamma, abs=0.1)


def test_parabola_optimum_lies_between_grid_points():
    x = np.arange(-12.0, -2.0)
    true = -7.3
    means = 2.0 + 0.03 * (x - true) ** 2
    fit = parabola_optima(x, means[None, :], k=2)
    assert fit.vertex[0] == pytest.approx(true, abs=1e-9)       # exact for a noiseless parabola
    assert x[fit.best[0]] == -7.0                                  # bare argmin would say -7
    assert fit.n_used[0] == 5


def test_parabola_window_skips_diverged_points_and_keeps_three():
    x = np.arange(0.0, 6.0)
    means = 1.0 + 0.1 * (x - 3.2) ** 2
    means[4:] = np.inf                                             # diverged above the optimum
    fit = parabola_optima(x, means[None, :], k=1)
    assert fit.n_used[0] == 3 and fit.window[0].tolist() == [1.0, 3.0]
    assert fit.vertex[0] == pytest.approx(3.0)                    # clipped to the last stable point
    assert fit.clipped[0]


def test_lr_sensitivity_is_larger_for_a_sharper_basin():
    def sensitivity(curvature):
        spec = syn.TransferSpec(labels={"mup": syn.LabelTruth(c=-7.3, gamma=0)}, curvature=curvature,
                                seeds=3, diverge_above=100.0)
        return fit_transfer(syn.synthetic_tables(transfer=spec, history=False)[0].trials, n_boot=50).curves
    for flat, sharp in zip(sensitivity(0.01), sensitivity(0.05)):
        # E[κ(x − x*)²] − min: proportional to the curvature κ, up to noise
        assert 3 * flat.sensitivity < sharp.sensitivity < 7 * flat.sensitivity
        assert inside(sharp.sensitivity, sharp.sensitivity_ci)


def test_lr_sensitivity_formula_caps_diverged_points_at_the_initial_loss():
    x = np.arange(-10, -1)
    loss = 2.0 + 0.1 * (x + 7.0) ** 2
    diverged = x >= -4
    trials = pd.DataFrame({"parametrization": "mup", "outcome": np.where(diverged, "diverged", "finished"),
                           "d_model": 128, "lr": 2.0 ** x, "seed": 0,
                           "final_val_loss": np.where(diverged, np.nan, loss)})
    (curve,) = fit_transfer(trials, n_boot=20, init_loss=3.0).curves
    expected = np.mean(np.minimum(np.where(diverged, np.inf, loss), 3.0) - 2.0)
    assert curve.sensitivity == pytest.approx(expected)
    assert curve.n_diverged == 3 and curve.log2_opt == pytest.approx(-7.0)


def test_transfer_on_another_column(world):
    tables, _ = world
    swapped = tables.trials.rename(columns={"lr": "weight_decay", "weight_decay": "lr"})
    result = fit_transfer(swapped, hp="weight_decay", n_boot=50)
    assert result.hp == "weight_decay"
    assert any(g.gamma is not None for g in result.groups)
    # λ is constant in every sweep of this world: there is no optimum of it to find
    with pytest.raises(UserError, match="no group ran more than one value of weight_decay"):
        fit_transfer(tables.trials, hp="weight_decay", n_boot=50)


def test_groups_that_ran_one_value_of_the_hp_are_one_warning_not_one_per_curve():
    trials = _small(seeds=2)
    tuned = trials[trials["lr"].eq(trials["lr"].iloc[0])].assign(sweep="tuned", lr=1e-2)  # a transfer of tuned values
    result = fit_transfer(pd.concat([trials, tuned], ignore_index=True), n_boot=20)
    assert result.curves and not any("tuned" in c.label for c in result.curves)
    left_out = [w for w in result.warnings if "ran one value of lr" in w]
    assert len(left_out) == 1 and "sweep=tuned" in left_out[0], result.warnings
    assert not any("finite loss" in w for w in result.warnings)


# ---- transfer edge cases --------------------------------------------------------------------

def _small(**kw) -> pd.DataFrame:
    spec = syn.TransferSpec(labels={"sp": syn.LabelTruth(c=-6.6, gamma=-1.0), "mup": syn.LabelTruth(c=-7.3, gamma=0)},
                            **kw)
    return syn.synthetic_tables(transfer=spec, history=False)[0].trials


def test_one_width_gives_no_gamma_and_says_why():
    result = fit_transfer(_small(widths=(256,), seeds=3), n_boot=50)
    assert all(g.gamma is None for g in result.groups)
    assert any("≥ 2 values of d_model" in w and "[256]" in w for w in result.warnings)
    assert all(c.log2_opt is not None for c in result.curves)  # the optima are still there


def test_one_seed_gives_no_bootstrap_interval_but_an_ols_one_for_gamma():
    result = fit_transfer(_small(seeds=1), n_boot=50)
    assert all(c.log2_opt_ci == [None, None] for c in result.curves)
    assert any("one seed per grid point" in w for w in result.warnings)
    sp = next(g for g in result.groups if g.group["parametrization"] == "sp")
    assert sp.ci_method.startswith("OLS t-interval") and inside(-1.0, sp.gamma_ci)


def test_all_diverged_at_one_width_is_reported_and_gamma_uses_the_rest():
    trials = _small(seeds=3)
    wide = trials["d_model"].eq(1024) & trials["parametrization"].eq("mup")
    trials.loc[wide, "outcome"] = "diverged"
    trials.loc[wide, "final_val_loss"] = np.nan
    result = fit_transfer(trials, n_boot=50)
    curve = next(c for c in result.curves if c.label == "mup" and c.size == 1024)
    assert curve.log2_opt is None and curve.n_diverged == curve.n_runs
    assert any("mup d_model=1024: every run diverged" in w for w in result.warnings)
    mup = next(g for g in result.groups if g.label == "mup")
    assert mup.sizes == [128, 256, 512] and mup.gamma is not None
    assert any("no optimum at d_model=[1024]" in w for w in result.warnings)


def test_nan_losses_and_failed_runs_are_left_out_and_counted():
    trials = _small(seeds=3)
    trials.loc[trials.index[:4], "final_val_loss"] = np.nan           # finished, but no loss
    trials.loc[trials.index[10:13], "outcome"] = "failed"
    result = fit_transfer(trials, n_boot=50)
    assert result.outcomes["failed"] == 3
    assert sum(c.n_nan_loss for c in result.curves) == 4
    assert any("without a final_val_loss value" in w for w in result.warnings)
    assert sum(c.n_runs for c in result.curves) == len(trials) - 3 - 4


def test_missing_columns_name_what_is_missing():
    trials = _small(seeds=2).drop(columns=["final_val_loss"])
    with pytest.raises(UserError, match=r"needs column\(s\) \['final_val_loss'\]"):
        fit_transfer(trials)
    with pytest.raises(UserError, match="k=0"):
        fit_transfer(_small(seeds=2), k=0)
    with pytest.raises(UserError, match="'scheme' is not numeric"):
        fit_transfer(_small(seeds=2), hp="scheme")


# ---- learned multipliers, norms ----------------------------------------------------------------

def test_multiplier_exponents_recovered_beside_the_mup_prediction(world):
    tables, truth = world
    result = fit_multipliers(tables.trials)
    group = next(g for g in result.groups if g.group.get("sweep") == "transfer")
    series = {s.name: s for s in group.series}
    expected = dict(truth["transfer"]["mult_exponents"])
    expected["attn_q·attn_k"] = expected["attn_q"] + expected["attn_k"]
    covered = []
    for name, exponent in expected.items():
        assert series[name].fit.exponent == pytest.approx(exponent, abs=0.04), name
        covered.append(inside(exponent, series[name].fit.exponent_ci))
    assert np.mean(covered) >= 0.8, covered      # 95% intervals, 10 of them
    assert series["head"].prediction == -1.0 and series["attn_q·attn_k"].prediction == -2.0
    assert series["head"].source.startswith("norm/final_norm/mean")
    assert series["attn_q·attn_k"].minus_prediction == pytest.approx(series["attn_q·attn_k"].fit.exponent + 2)


def test_against_depth_the_width_predictions_are_not_drawn(world):
    tables, _ = world
    trials = tables.trials.assign(n_layers=tables.trials["d_model"])  # the same runs, read as a depth sweep
    result = fit_multipliers(trials, size="n_layers")
    series = [s for g in result.groups for s in g.series]
    assert series and all(s.prediction is None and s.minus_prediction is None for s in series)
    assert result.predictions == {} and "no prediction against n_layers" in result.prediction_note


def test_multipliers_need_learnable_multiplier_runs():
    trials = _small(seeds=2)
    trials = trials.drop(columns=[c for c in trials.columns if c.startswith("mult/")])
    with pytest.raises(UserError, match="mult/<layer>"):
        fit_multipliers(trials)


def test_equilibrium_norm_slopes(world):
    tables, truth = world
    result = fit_norms(tables.trials)
    assert {s.label for s in result.sweeps} == {"mup [sweep=sqrt-eta-over-lambda]",
                                                      "mup+scalar [sweep=sqrt-eta-over-lambda]"}
    covered = []
    for sweep in result.sweeps:
        for s in sweep.series:
            target = truth["norms"]["weight_slope"] if s.kind == "weight_rms" else truth["norms"]["eff_slope_lrm"]
            assert s.fit.exponent == pytest.approx(target, abs=0.03), (sweep.label, s.kind, s.role)
            covered.append(inside(target, s.fit.exponent_ci))
        assert any(s.kind == "eff_rms" for s in sweep.series) == sweep.lrm
    assert len(covered) == 24 and np.mean(covered) >= 0.8
    spreads = {s.lrm: s.loss.spread for s in result.sweeps}
    assert spreads[True] < 0.02 < spreads[False]    # flat with multipliers, a bowl without


def test_norms_without_a_sqrt_eta_over_lambda_sweep_is_a_clear_skip():
    with pytest.raises(UserError, match=r"sqrt\(η/λ\) sweep"):
        fit_norms(_small(seeds=2))


# ---- scaling laws and the comparison ----------------------------------------------------------

def test_scaling_law_recovers_E_A_alpha_within_intervals():
    spec = syn.TransferSpec(labels={"mup": syn.LabelTruth(c=-7.0, gamma=0)}, log2_lrs=(-7.0,),
                            widths=(64, 128, 256, 512, 1024, 2048), seeds=3, noise=0.003)
    trials = syn.synthetic_tables(seed=3, transfer=spec, history=False)[0].trials
    result = fit_scaling(trials, n_boot=60)
    (fit,) = result.fits
    assert result.model == "L = E + A/N^alpha"           # one token count: no D term
    for name, true in (("E", spec.E), ("A", spec.A), ("alpha", spec.alpha)):
        assert inside(true, getattr(fit, f"{name}_ci")), (name, getattr(fit, name), getattr(fit, f"{name}_ci"))
    assert fit.alpha_ci[1] - fit.alpha_ci[0] < 0.05


def test_scaling_law_with_varying_tokens_fits_the_data_term():
    rng = np.random.default_rng(0)
    N = np.repeat([1e6, 3e6, 1e7, 3e7, 1e8], 4)
    D = np.tile([1e7, 3e7, 1e8, 3e8], 5)
    E, A, alpha, B, beta = 1.7, 400.0, 0.34, 2000.0, 0.28
    L = (E + A / N ** alpha + B / D ** beta) * np.exp(rng.normal(0, 0.002, N.size))
    trials = pd.DataFrame({"parametrization": "mup", "outcome": "finished", "d_model": N, "n_params": N,
                           "tokens": D, "final_val_loss": L})
    result = fit_scaling(trials, n_boot=40)
    (fit,) = result.fits
    assert result.tokens_vary and "B/D^beta" in result.model
    assert fit.alpha == pytest.approx(alpha, abs=0.08) and fit.beta == pytest.approx(beta, abs=0.08)
    assert fit.residual_rms < 0.005


def _one_run_per_size(L: np.ndarray, N: np.ndarray, **extra) -> pd.DataFrame:
    return pd.DataFrame({"parametrization": "mup", "outcome": "finished", "d_model": N, "n_params": N,
                         "tokens": 1e9, "final_val_loss": L, **extra})


def test_scaling_law_with_one_run_per_size_has_real_intervals():
    """A single-seed (Chinchilla-style) sweep: resampling runs within cells would return the data
    itself; the residual bootstrap must give intervals of non-zero width around the estimate."""
    N = np.geomspace(1e6, 1e9, 7)
    L = (1.7 + 400 / N ** 0.34) * np.exp(np.random.default_rng(4).normal(0, 0.01, N.size))
    (fit,) = fit_scaling(_one_run_per_size(L, N), n_boot=40).fits
    for name in ("E", "A", "alpha"):
        value, (lo, hi) = getattr(fit, name), getattr(fit, f"{name}_ci")
        assert lo < value < hi, (name, value, lo, hi)
        assert (hi - lo) / value > 0.01       # 1% noise: intervals of percents, not of rounding


def test_scaling_law_on_noise_free_points_gives_no_interval_and_says_why():
    N = np.geomspace(1e6, 1e9, 5)
    result = fit_scaling(_one_run_per_size(1.7 + 400 / N ** 0.34, N), n_boot=20)
    (fit,) = result.fits
    assert fit.E == pytest.approx(1.7) and not fit.exact_fit
    assert fit.E_ci == fit.A_ci == fit.alpha_ci == [None, None]
    assert any("do not vary" in w and "no interval" in w for w in result.warnings)


def test_scaling_law_selection_says_what_was_done():
    N = np.geomspace(1e6, 1e9, 5)
    L = 1.7 + 400 / N ** 0.34
    untuned = fit_scaling(_one_run_per_size(L, N), n_boot=10)
    assert "no lr column" in untuned.selection and "best lr" not in untuned.selection
    tuned = fit_scaling(_one_run_per_size(L, N, lr=1e-3), n_boot=10)
    assert tuned.selection == "finished grid runs at the best lr of each model size (n_params)"
    rng = np.random.default_rng(0)
    N2, D2 = np.repeat([1e6, 1e7, 1e8], 2), np.tile([1e8, 1e9], 3)
    cells = pd.DataFrame({"parametrization": "mup", "outcome": "finished", "d_model": N2, "n_params": N2,
                          "tokens": D2, "lr": 1e-3,
                          "final_val_loss": (1.7 + 400 / N2 ** 0.34 + 2000 / D2 ** 0.28) * np.exp(rng.normal(0, 0.01, 6))})
    assert "(N, D) cell" in fit_scaling(cells, n_boot=10).selection


def test_five_cells_with_varying_tokens_give_an_exact_fit_without_intervals():
    N, D = np.array([1e6, 1e7, 1e8, 1e6, 1e8]), np.array([1e8, 1e8, 1e8, 1e9, 1e9])
    trials = pd.DataFrame({"parametrization": "mup", "outcome": "finished", "d_model": N, "n_params": N,
                           "tokens": D, "final_val_loss": 1.7 + 400 / N ** 0.34 + 2000 / D ** 0.28 + [0, .01, 0, .01, 0]})
    result = fit_scaling(trials, n_boot=10)
    (fit,) = result.fits
    assert fit.exact_fit and fit.beta_ci is None and "beta_ci" not in fit.to_dict()
    assert any("5 parameters" in w and "no interval" in w for w in result.warnings)


def test_scaling_needs_three_sizes():
    with pytest.raises(UserError, match="≥ 3 model sizes"):
        fit_scaling(_small(widths=(128, 256), seeds=2))


def test_loss_gap_to_mup_matches_the_offsets(world):
    tables, truth = world
    result = compare(tables.trials, n_boot=300)
    assert result.reference == "mup"
    offsets = truth["transfer"]["offsets"]
    # runs at the tuned grid point sit at most ~0.03 nats off the optimum: compare with a margin
    for gap in result.gaps:
        expected = offsets[gap["parametrization"]] - offsets["mup"]
        assert gap["gap"] == pytest.approx(expected, abs=0.02)
        assert gap["gap_ci"][0] < gap["gap"] < gap["gap_ci"][1]
    lrm = [g for g in result.gaps if g["parametrization"] == "mup+scalar"]
    assert sum(g["gap_ci"][1] < 0 for g in lrm) >= 3   # LRM is better at most widths, significantly


# ---- tuning cost and the coordinate check -------------------------------------------------------

def test_tuning_cost_curves(world):
    tables, _ = world
    result = tuning_cost(tables.trials)
    search = [c for c in result.curves if c.kind == "search"]
    assert len(search) == 1 and search[0].n_trials == syn.TuningSpec().n_trials
    best = [p.best_loss for p in search[0].points]
    compute = [p.compute for p in search[0].points]
    assert best == sorted(best, reverse=True) and compute == sorted(compute)
    finished = tables.trials[tables.trials["mode"].eq("search") & tables.trials["outcome"].eq("finished")]
    assert search[0].best_loss == pytest.approx(finished["final_val_loss"].min())
    assert search[0].total_compute == pytest.approx(tables.trials.loc[tables.trials["mode"].eq("search"), "flops"].sum())
    assert any(c.kind == "multipliers" for c in result.curves)


def test_tuning_cost_needs_search_or_multiplier_runs():
    trials = _small(seeds=2)
    with pytest.raises(UserError, match="search-sweep runs"):
        tuning_cost(trials)


def test_coordinate_check_slopes(world):
    tables, truth = world
    result = coord_check(tables.trials, tables.history)
    last = result.steps[-1]
    covered = []
    for g in result.groups:
        growth = truth["transfer"]["act_growth"][g.group["parametrization"]]
        for s in (s for s in g.slopes if s.step == last):
            assert s.fit.exponent == pytest.approx(growth, abs=0.03), (g.label, s)
            covered.append(inside(growth, s.fit.exponent_ci))
    assert np.mean(covered) >= 0.8, covered
    sp = next(g for g in result.groups if g.group["parametrization"] == "sp")
    mup = next(g for g in result.groups if g.group["parametrization"] == "mup")
    assert sp.max_abs_exponent_last_step > 0.4 > 0.1 > mup.max_abs_exponent_last_step


def test_coordinate_check_without_activations_says_how_to_get_them(world):
    tables, _ = world
    with pytest.raises(UserError, match="record_activations"):
        coord_check(tables.trials, tables.history[~tables.history["key"].str.startswith("act/")])


def test_three_sizes_give_an_exact_fit_without_intervals():
    """Three sizes for three parameters: the curve passes through every point, so a bootstrap
    would report zero-width intervals; the fit must say it has none instead."""
    rows = [{"parametrization": "mup", "d_model": d, "lr": 1e-3, "seed": 0, "outcome": "finished",
             "n_params": n, "tokens": 1e6, "final_val_loss": 1.5 + 20 / n ** 0.3}
            for d, n in ((64, 1e5), (128, 4e5), (256, 1.6e6))]
    result = fit_scaling(pd.DataFrame(rows))
    fit = result.fits[0]
    assert fit.exact_fit and fit.E is not None
    assert "E_ci" not in fit.to_dict() and "alpha_ci" not in fit.to_dict()
    assert any("no interval" in w for w in result.warnings)


def test_asymmetric_optimum_recovers_the_optimum_of_a_skewed_curve():
    """Steep above the optimum, flat below it: the parabola through best ± 2 lands on the flat side,
    the asymmetric bowl on the optimum (benchmarks/bench_estimators.py measures it on noisy curves)."""
    x = np.arange(-12.0, -2.0)
    true = -7.3
    u = x - true
    skewed = {"exponential": 2.0 + 0.05 * (np.expm1(1.3 * u) - 1.3 * u),
              "half-parabolas": 2.0 + 0.02 * u ** 2 * np.where(u > 0, 3.0, 1.0)}
    for name, means in skewed.items():
        fit = asymmetric_optima(x, means[None, :], k=2)
        assert fit.vertex[0] == pytest.approx(true, abs=0.03), name
        assert fit.convex[0] and not fit.clipped[0] and fit.n_used[0] == 5
        assert fit.loss[0] == pytest.approx(2.0, abs=1e-3)
        assert parabola_optima(x, means[None, :], k=2).vertex[0] < true - 0.2, name    # the bias it removes


def test_asymmetric_optimum_falls_back_to_the_parabola_with_three_points():
    x = np.arange(0.0, 6.0)
    means = 1.0 + 0.1 * (x - 2.2) ** 2
    means[3:] = np.inf
    fit = asymmetric_optima(x, means[None, :], k=2)
    assert fit.n_used[0] == 3
    assert fit.vertex[0] == pytest.approx(parabola_optima(x, means[None, :], k=1).vertex[0])

def test_a_four_point_window_does_not_dig_a_minimum_between_the_points():
    """The quickstart's sp curve at d = 256 (measured: lr 1e-3 … 3e-2). Four points leave the bowl no
    residual; with the mirror shapes allowed it put the optimum 0.10 below every measured loss."""
    x = np.log2([1e-3, 3e-3, 1e-2, 3e-2])
    means = np.array([[1.861, 1.809, 2.076, 2.313]])
    fit = asymmetric_optima(x, means, k=2)
    assert fit.n_used[0] == 4 and fit.convex[0]
    assert x[0] < fit.vertex[0] < x[2]
    assert fit.loss[0] > means.min() - 0.03
    # a fifth point lets the data choose a shape steeper below the optimum
    x5 = np.arange(0.0, 5.0)
    u = x5 - 2.3
    steep_below = 2.0 + 0.05 * (np.expm1(-1.3 * u) + 1.3 * u)
    assert asymmetric_optima(x5, steep_below[None, :], k=2).vertex[0] == pytest.approx(2.3, abs=0.05)



def test_transfer_estimator_is_named_and_checked():
    result = fit_transfer(_small(seeds=2), n_boot=20)
    assert result.estimator == "asymmetric"
    assert fit_transfer(_small(seeds=2), n_boot=20, estimator="parabola").estimator == "parabola"
    with pytest.raises(UserError, match="estimator 'cubic'"):
        fit_transfer(_small(seeds=2), estimator="cubic")


def test_scaling_interval_is_pairs_by_default_and_residual_on_request():
    N = np.geomspace(1e6, 1e9, 7)
    L = (1.7 + 400 / N ** 0.34) * np.exp(np.random.default_rng(4).normal(0, 0.01, N.size))
    pairs = fit_scaling(_one_run_per_size(L, N), n_boot=40)
    residual = fit_scaling(_one_run_per_size(L, N), n_boot=40, interval="residual")
    assert pairs.interval == "pairs" and "pairs bootstrap" in pairs.method
    assert residual.interval == "residual" and "residual bootstrap" in residual.method
    for fit in (pairs.fits[0], residual.fits[0]):
        assert fit.alpha_ci[0] < fit.alpha < fit.alpha_ci[1]
    assert pairs.fits[0].alpha == residual.fits[0].alpha          # the same point estimate
    with pytest.raises(UserError, match="interval 'jackknife'"):
        fit_scaling(_one_run_per_size(L, N), interval="jackknife")


def test_pairs_bootstrap_of_very_few_runs_says_to_use_the_residual_one():
    N = np.geomspace(1e6, 1e9, 4)
    L = (1.7 + 400 / N ** 0.34) * np.exp(np.random.default_rng(5).normal(0, 0.01, N.size))
    result = fit_scaling(_one_run_per_size(L, N), n_boot=40)
    assert any("pairs-bootstrap replicates" in w and "interval='residual'" in w for w in result.warnings)


def test_runs_that_differ_in_a_config_column_are_arms_not_seeds_of_one():
    trials = _small(seeds=2)
    other = trials.assign(depth_scaling="completep", final_val_loss=trials["final_val_loss"] + 0.1)
    result = compare(pd.concat([trials.assign(depth_scaling="none"), other], ignore_index=True))
    labels = {r["parametrization"] for r in result.best}
    assert labels == {f"{p} [depth_scaling={d}]" for p in ("mup", "sp") for d in ("none", "completep")}
    assert all(r["n"] == 2 for r in result.best)      # each arm's 2 seeds, not 4 pooled runs
    assert result.reference == "mup [depth_scaling=completep]"   # the first arm of the reference
    gaps = {g["parametrization"]: g["gap"] for g in result.gaps if g["d_model"] == result.best[0]["d_model"]}
    assert gaps["mup [depth_scaling=none]"] == pytest.approx(-0.1, abs=0.03)

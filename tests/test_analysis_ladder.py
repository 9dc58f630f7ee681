"""The tuning ladder (analysis/ladder.py) on synthetic levels with a known effect."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import report_md
from analysis import synthetic as syn
from analysis.ladder import LadderResult, applies, fit_ladder
from analysis.registry import load


@pytest.fixture(scope="module")
def ladder_world():
    spec = syn.LadderSpec(seeds=6, effects={"ladder-none": 0.0, "ladder-tuned": -0.03})
    tables, truth = syn.synthetic_tables(3, tuning=syn.TuningSpec(n_trials=5), ladder=spec, history=False)
    return tables.trials, truth


def test_each_level_compares_the_multipliers_with_their_parent(ladder_world):
    trials, truth = ladder_world
    result = fit_ladder(trials)
    levels = {r["level"]: r for r in result.levels}
    assert set(levels) == {"ladder-none", "ladder-tuned"}     # the LR-grid transfer sweep is no level
    tuned = levels["ladder-tuned"]
    assert tuned["study"] == "mup-tuning" and tuned["parent"] == "mup" and tuned["lrm"] == "mup+vector"
    assert tuned["parent_loss"]["n"] == 6 and tuned["lrm_loss"]["n"] == 6
    lo, hi = tuned["diff_ci"]
    assert lo < truth["ladder"]["effects"]["ladder-tuned"] < hi and hi < 0 and tuned["p_value"] < 0.05
    assert levels["ladder-none"]["diff_ci"][0] < 0 < levels["ladder-none"]["diff_ci"][1]
    assert [r["level"] for r in result.levels] == ["ladder-none", "ladder-tuned"]   # least tuned first


def test_a_level_costs_what_its_search_ran(ladder_world):
    trials, _ = ladder_world
    tuned = next(r for r in fit_ladder(trials).levels if r["study"])
    search = trials[trials["sweep"] == "mup-tuning"]
    assert tuned["tuned"] == ["alpha_out", "lr"]
    assert tuned["search_trials"] == len(search) == 5
    assert tuned["cpu_hours"] == pytest.approx(search["wall_time_s"].sum() / 3600)
    assert tuned["flops"] == pytest.approx(search["flops"].sum())


def test_untuned_multipliers_against_the_tuned_parent(ladder_world):
    trials, _ = ladder_world
    (row,) = fit_ladder(trials).untuned
    assert row["untuned_level"] == "ladder-none" and row["tuned_level"] == "ladder-tuned"
    none = trials[(trials["sweep"] == "ladder-none") & (trials["parametrization"] == "mup+vector")]
    parent = trials[(trials["sweep"] == "ladder-tuned") & (trials["parametrization"] == "mup")]
    assert row["diff"] == pytest.approx(none["final_val_loss"].mean() - parent["final_val_loss"].mean())


def test_a_search_missing_from_the_tables_is_said_not_guessed():
    tables, _ = syn.synthetic_tables(0, ladder=syn.LadderSpec(seeds=1), history=False)
    result = fit_ladder(tables.trials)
    tuned = next(r for r in result.levels if r["study"])
    assert tuned["search_trials"] is None and tuned["cpu_hours"] is None
    assert tuned["diff_ci"] == [None, None] and tuned["p_value"] is None      # one seed: no interval
    assert any("'mup-tuning' is not in these tables" in w for w in result.warnings)


def test_the_ladder_applies_only_to_tables_with_a_transfer_from_a_search():
    plain, _ = syn.synthetic_tables(0, history=False)
    assert not applies(plain.trials)
    tables, _ = syn.synthetic_tables(0, ladder=syn.LadderSpec(), history=False)
    assert applies(tables.trials)


def test_the_report_section_puts_arms_cost_and_difference_side_by_side(ladder_world):
    trials, _ = ladder_world
    result = fit_ladder(trials)
    text = report_md.ladder_section(result, {"figures": {}, "skipped_figures": {}})
    assert "| level | tuned | search runs | CPU-hours |" in text
    assert "alpha_out, lr" in text and "none (defaults)" in text
    assert "Learnable multipliers with less tuning against the parent with more" in text
    assert np.isfinite(result.levels[1]["diff"])


def test_the_ladder_is_in_summary_json_and_reads_back(ladder_world):
    trials, _ = ladder_world
    result = fit_ladder(trials)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    back = load(data)
    assert type(back) is LadderResult and back == result


def test_multipliers_at_each_level_meet_the_parent_of_every_level_that_tuned_strictly_more(ladder_world):
    trials, _ = ladder_world
    search = trials[trials["sweep"] == "mup-tuning"]
    more = search.assign(sweep="mup-tuning-more", lr_mult_emb=np.linspace(0.5, 2.0, len(search)))
    level = trials[trials["sweep"] == "ladder-tuned"].assign(sweep="ladder-more", from_study="mup-tuning-more")
    result = fit_ladder(pd.concat([trials, more, level], ignore_index=True))
    pairs = {(u["untuned_level"], u["tuned_level"]) for u in result.untuned}
    assert pairs == {("ladder-none", "ladder-tuned"), ("ladder-none", "ladder-more"), ("ladder-tuned", "ladder-more")}
    row = next(u for u in result.untuned if u["untuned_level"] == "ladder-tuned")
    assert row["untuned_keys"] == ["alpha_out", "lr"] and row["tuned"] == ["alpha_out", "lr", "lr_mult_emb"]

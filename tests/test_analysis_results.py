"""Typed fit results (each defined beside its fit, on the base in analysis/results.py): each fit
returns its dataclass, read by attribute; to_dict() is the JSON and registry.load reads it back."""
from __future__ import annotations

import dataclasses
import json

import pytest

from analysis import comparison, coordcheck, freedom, norms, scaling, stats, transfer, tuning
from analysis import multiplier_scaling as mult
from analysis import multiplier_updates
from analysis import synthetic as syn
from analysis.fits import FitOptions, run_fits
from analysis.registry import load
from analysis.results import Result


@pytest.fixture(scope="module")
def fitted():
    tables, _ = syn.synthetic_tables(seed=3, transfer=syn.TransferSpec(widths=(128, 256, 512), seeds=2),
                                     norms=syn.NormSpec(), tuning=syn.TuningSpec(), freedom=syn.FreedomSpec())
    return run_fits(tables, FitOptions(n_boot=30, n_boot_scaling=20))


TYPES = {"comparison": (comparison.Comparison, None), "transfer": (transfer.TransferResult, "groups"),
         "multipliers": (mult.MultiplierResult, "groups"),
         "multiplier_updates": (multiplier_updates.MultiplierUpdatesResult, "groups"), "norms": (norms.NormsResult, "sweeps"),
         "freedom": (freedom.FreedomResult, "groups"), "scaling": (scaling.ScalingResult, "fits"),
         "tuning": (tuning.TuningResult, "curves"), "search": (tuning.SearchResult, "sweeps"),
         "coord_check": (coordcheck.CoordCheckResult, "groups")}
PARTS = {"transfer": transfer.TransferGroup, "multipliers": mult.MultiplierGroup,
         "multiplier_updates": multiplier_updates.MultiplierUpdatesGroup, "norms": norms.NormsSweep,
         "freedom": freedom.FreedomGroup, "scaling": scaling.ScalingFit, "tuning": tuning.TuningCurve,
         "search": tuning.SearchSweep, "coord_check": coordcheck.CoordGroup}


def test_every_fit_returns_its_dataclass(fitted):
    assert fitted["skipped"] == {}
    results = fitted["results"]
    assert set(results) == set(TYPES)
    for name, (cls, parts) in TYPES.items():
        assert type(results[name]) is cls, name
        assert results[name].analysis == name
        if parts:
            assert getattr(results[name], parts) and all(type(p) is PARTS[name] for p in getattr(results[name], parts)), name
    assert all(type(c) is transfer.TransferCurve for c in results["transfer"].curves)


def _walk(result: Result):
    yield result
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]:
            if isinstance(item, Result):
                yield from _walk(item)


def test_to_dict_is_the_json_and_reads_back(fitted):
    for name, result in fitted["results"].items():
        data = result.to_dict()
        assert json.loads(json.dumps(data, allow_nan=False)) == data, name
        assert stats.jsonable(result) == data
        back = load(json.loads(json.dumps(data)))            # summary.json read back: the same result
        assert type(back) is type(result) and back.to_dict() == data and back == result
        for part in _walk(result):                           # every nested result reads back on its own
            assert type(part).from_dict(part.to_dict()) == part, (name, type(part).__name__)


def test_results_have_no_dict_access(fitted):
    """Readers use attributes: a JSON key is no attribute, and r["key"] is no way in."""
    relief = fitted["results"]["freedom"].groups[0].reliefs[0]
    with pytest.raises(TypeError):
        relief["setting"]
    with pytest.raises(AttributeError):
        getattr(relief, "with")
    assert not hasattr(relief, "get") and not hasattr(relief, "keys")


def test_optional_fields_leave_the_json_as_before(fitted):
    transfer = fitted["results"]["transfer"]
    assert list(transfer.to_dict()) == ["analysis", "hp", "size", "loss", "k", "estimator", "n_boot", "ci_level", "init_loss",
                                        "sensitivity_range_log2", "group_keys", "outcomes", "treatment", "curves",
                                        "groups", "warnings"]
    for g in transfer.groups:
        assert ("note" in g.to_dict()) == (g.note is not None)
    fits = fitted["results"]["scaling"].fits
    fit = next(f for f in fits if f.E is not None)          # 3 widths: the fit is exact, no interval
    data = fit.to_dict()
    assert fit.exact_fit and "E" in data and "E_ci" not in data and "B" not in data and fit.E_ci is None
    short = next(f for f in fits if f.E is None)
    assert list(short.to_dict()) == ["group", "label", "n_points", "n_sizes", "N_range", "points", "note"]
    sweep = fitted["results"]["norms"].sweeps[0]
    assert list(sweep.to_dict())[:4] == ["group", "label", "d_model", "sqrt_lr_wd"]
    data = sweep.to_dict()
    assert data["d_model"] == sweep.size and "size" not in data and "size_column" not in data


def test_a_mistyped_attribute_raises_and_results_are_frozen(fitted):
    transfer = fitted["results"]["transfer"]
    with pytest.raises(AttributeError):
        transfer.groups[0].gama
    with pytest.raises(AttributeError):
        transfer.curvs
    with pytest.raises(AttributeError):        # dataclasses.FrozenInstanceError
        transfer.hp = "weight_decay"


ROWS = {"multipliers": [("groups", "series", mult.MultiplierSeries), ("groups", "matrix_norms", mult.MatrixNorm)],
        "norms": [("sweeps", "series", norms.NormsSeries), ("sweeps", "pooled", norms.NormsSeries),
                  ("sweeps", "verdict", norms.NormsVerdict), ("sweeps", "loss", norms.LossProfile),
                  ("comparisons", None, norms.SpreadComparison)],
        "freedom": [("groups", "penalties", freedom.Penalty), ("groups", "reliefs", freedom.Relief)],
        "coord_check": [("groups", "slopes", coordcheck.CoordSlope), ("groups", "points", coordcheck.CoordPoint)],
        "transfer": [("curves", "points", transfer.TransferPoint)], "scaling": [("fits", "points", scaling.ScalingPoint)],
        "tuning": [("curves", "points", tuning.TuningPoint)]}


def _rows(parts: list, name: str | None) -> list:
    out = []
    for part in parts:
        value = part if name is None else getattr(part, name)
        out += list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    return [row for row in out if row is not None]


def test_fixed_key_rows_are_typed(fitted):
    results = fitted["results"]
    for analysis, specs in ROWS.items():
        for parts, name, cls in specs:
            rows = _rows(getattr(results[analysis], parts), name)
            assert rows and all(type(row) is cls for row in rows), (analysis, parts, name)
    series = results["multipliers"].groups[-1].series[0]
    assert type(series.fit) is stats.LogLogFit and type(series.points[0]) is mult.WidthPoint
    sweep = results["norms"].sweeps[0]
    assert all(type(p) is norms.NormPoint for p in sweep.series[0].points)
    assert all(type(p) is norms.LossPoint for p in sweep.loss.points)


def test_row_json_keeps_its_keys_and_reads_back(fitted):
    relief = fitted["results"]["freedom"].groups[0].reliefs[0]
    data = relief.to_dict()
    assert list(data)[:3] == ["setting", "with", "without"] and "with_" not in data
    assert data["with"] == relief.with_
    assert freedom.Relief.from_dict(data) == relief

    comparison = fitted["results"]["norms"].comparisons[0]
    data = comparison.to_dict()
    assert list(data) == ["with", "without", "d_model", "spread_with", "spread_without", "ratio",
                          "smaller_with_multipliers"]
    assert data["d_model"] == comparison.size and comparison.size_column == "d_model"
    assert norms.SpreadComparison.from_dict(data) == comparison

    series = next(s for g in fitted["results"]["multipliers"].groups for s in g.series)
    data = series.to_dict()      # the log-log fit's keys in the row's own object, between its names and points
    assert list(data) == ["name", "role", "source", "exponent", "exponent_ci", "prefactor", "n_runs", "n_x",
                          "ci_method", "prediction", "minus_prediction", "points"]
    assert data["exponent"] == series.fit.exponent
    assert mult.MultiplierSeries.from_dict(data) == series

    sweep = fitted["results"]["norms"].sweeps[0]
    pooled = sweep.pooled["weight_rms"]
    assert "kind" not in pooled.to_dict() and sweep.series[0].to_dict()["kind"] == sweep.series[0].kind
    back = load(json.loads(json.dumps(fitted["results"]["norms"].to_dict())))
    assert back.sweeps[0].pooled == sweep.pooled and back.comparisons == fitted["results"]["norms"].comparisons
    back = load(json.loads(json.dumps(fitted["results"]["freedom"].to_dict())))
    assert back.groups[0].penalties == fitted["results"]["freedom"].groups[0].penalties

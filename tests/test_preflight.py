"""Pre-flight warnings: which analyses a grid cannot feed (`scalelab validate` and `plan`)."""
from __future__ import annotations

import yaml

from orchestrator.cli import main
from orchestrator.preflight import analysis_warnings
from orchestrator.spec import load_sweep


def warnings_of(tiny_sweep, **sections) -> list[str]:
    return analysis_warnings(load_sweep(str(tiny_sweep("g", **sections))).trials())


def test_full_grid_feeds_every_analysis(tiny_sweep):
    path = tiny_sweep("full", seeds=[0, 1], grid={"d_model": [32, 48, 64], "lr": [1e-3, 2e-3, 4e-3]})
    doc = yaml.safe_load(path.read_text())
    del doc["base"]["d_model"]  # the grid sets it
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert analysis_warnings(load_sweep(str(path)).trials()) == []


def test_small_grid_says_what_is_missing(tiny_sweep):
    lines = warnings_of(tiny_sweep, grid={"lr": [1e-3, 2e-3]})
    assert len(lines) == 3
    assert "fewer than 3 lr values in 1 of 1" in lines[0] and "no optimum lr" in lines[0]
    assert "1 width(s)" in lines[1] and "scaling exponent" in lines[1]
    assert lines[2].startswith("one seed")


def test_enough_lr_values_and_seeds(tiny_sweep):
    lines = warnings_of(tiny_sweep, seeds=[0, 1], grid={"lr": [1e-3, 2e-3, 4e-3]})
    assert lines == [lines[0]] and "width" in lines[0]


def test_weight_decay_only_when_swept(tiny_sweep):
    lines = warnings_of(tiny_sweep, seeds=[0, 1], grid={"lr": [1e-3, 2e-3, 4e-3], "weight_decay": [0.0, 0.1]})
    assert any("weight_decay values" in line for line in lines)
    assert not any("lr values" in line for line in lines)


def test_a_grid_that_sweeps_only_weight_decay_is_not_warned_about_lr(tiny_sweep):
    lines = warnings_of(tiny_sweep, seeds=[0, 1], grid={"weight_decay": [0.01, 0.1]})
    assert any("weight_decay values" in line for line in lines)
    assert not any("lr" in line.split(":")[0] for line in lines), lines


def test_a_grid_that_sweeps_no_tuned_hyperparameter_says_so_once(tiny_sweep):
    lines = warnings_of(tiny_sweep, seeds=[0, 1], grid={"multipliers": ["none", "vector"]})
    assert [line for line in lines if "is swept" in line] == [lines[0]]
    assert "no lr or weight_decay is swept" in lines[0]
    assert not any("values in" in line for line in lines)


def test_search_sweep_gets_none():
    assert analysis_warnings([]) == []


def test_validate_warns_on_stderr_exit_unchanged(tiny_sweep, capsys):
    path = tiny_sweep("small", grid={"lr": [1e-3, 2e-3]})
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("OK:")
    assert captured.err.count("scalelab validate: warning:") == 3

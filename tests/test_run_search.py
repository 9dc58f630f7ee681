"""Optuna search mode through Ray Tune: a persistent study, runs tagged as search, reruns that
only complete the samples still owed. `postgres`: the lab's database, an MLflow server over
PostgreSQL and the study in that PostgreSQL (tests/postgres_server.py)."""
from __future__ import annotations

import io

import pytest

from helpers import complete_trials, study_storage, sweep_runs, write_search_sweep
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.spec import load_sweep
from orchestrator.trial import trial_hash

pytestmark = pytest.mark.timeout(600)


def search_sweep(folder, num_samples: int, storage: str | None = None):
    return write_search_sweep(folder, "search-lr", num_samples, storage=storage)


def trial_runs(uri: str):
    _, parents, trials = sweep_runs(uri, "search-lr")
    return trials, parents


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_search_uses_persistent_study_and_reruns_complete_only_what_is_owed(store, ray_local, tmp_path, request):
    if store == "postgres":
        tracking_uri, study = (request.getfixturevalue("postgres_mlflow_server"),
                               request.getfixturevalue("postgres").new_database("optuna"))
    else:
        tracking_uri, study = request.getfixturevalue("tracking_uri"), study_storage(tmp_path)
    first = io.StringIO()
    opts = RunOptions(tracking_uri=tracking_uri, storage=str(tmp_path / "store"), out=first)
    spec = load_sweep(str(search_sweep(tmp_path, 3, study)))
    summary = run_sweep(spec, opts)
    assert summary.count("finished") == 3

    runs, parents = trial_runs(tracking_uri)
    assert len(runs) == 3 and len(parents) == 1
    values = {}
    for run in runs:
        tags = run.data.tags
        assert tags["scalelab.mode"] == "search" and tags["scalelab.outcome"] == "finished"
        lr = float(run.data.params["lr"])
        assert 1e-3 <= lr <= 1e-2
        # the run is the trial that `spec.resolve` makes of the sampled point
        assert tags["scalelab.trial_hash"] == trial_hash(spec.resolve({"lr": lr}).config)
        values[lr] = run.data.metrics["final_val_loss"]
    study_trials = complete_trials(study)
    assert len(study_trials) == 3
    # Optuna was told each trial's final_val_loss
    assert sorted(t.value for t in study_trials) == pytest.approx(sorted(values.values()))
    assert parents[0].data.metrics["tuning_trials"] == 3
    # two-way links: the Optuna trial names its run, the run names the study and trial number
    number_of = {t.user_attrs["mlflow_run_id"]: t.number for t in study_trials if "mlflow_run_id" in t.user_attrs}
    # every sample, also through an MLflow server on PostgreSQL, where short samples used to finish
    # before their link was made (the linker now waits for it at the final report)
    assert len(number_of) == 3
    assert {r.info.run_id: (r.data.tags["scalelab.optuna_study"], int(r.data.tags["scalelab.optuna_trial"]))
            for r in runs if r.info.run_id in number_of} == {run_id: ("lr-study", n) for run_id, n in number_of.items()}
    parent = parents[0].data
    assert parent.params["search.lr"] and parent.params["mode"] == "search"
    assert parent.tags["scalelab.optuna_study"] == "lr-study"
    assert parent.metrics["best_final_val_loss"] == pytest.approx(min(values.values()))
    assert parents[0].data.metrics["tuning_flops"] == pytest.approx(sum(r.data.metrics["flops"] for r in runs))

    # same file again: nothing owed, nothing run
    out = io.StringIO()
    summary = run_sweep(load_sweep(str(search_sweep(tmp_path, 3, study))),
                        RunOptions(tracking_uri=tracking_uri, storage=str(tmp_path / "store"), out=out))
    assert summary.ran == 0 and "3 of 3 samples done, 0 to run" in out.getvalue()
    assert len(trial_runs(tracking_uri)[0]) == 3 and len(complete_trials(study)) == 3

    # one more sample asked for: exactly one more trial, in the same study and parent run
    summary = run_sweep(load_sweep(str(search_sweep(tmp_path, 4, study))), opts)
    assert summary.ran == 1
    runs, parents = trial_runs(tracking_uri)
    assert len(runs) == 4 and len(parents) == 1
    assert len({r.data.tags["scalelab.trial_hash"] for r in runs}) == 4
    study_trials = complete_trials(study)
    assert len(study_trials) == 4
    assert len({tuple(sorted(t.params.items())) for t in study_trials}) == 4     # no sample drawn twice
    assert parents[0].data.metrics["tuning_trials"] == 4
    if store == "postgres":
        password = request.getfixturevalue("postgres").password
        assert password not in first.getvalue() + out.getvalue(), "the PostgreSQL password was printed"

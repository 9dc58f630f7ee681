"""`scalelab validate` / `scalelab plan` through the real CLI entry point, done-detection
against a real SQLite MLflow store, and the ready sweeps in sweeps/."""
from __future__ import annotations

import json
import pathlib
import textwrap

import optuna
import yaml
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.layout import TAG_IDENTITY
from orchestrator.spec import load_sweep
from orchestrator.trial import IDENTITY_VERSION
from orchestrator.tracking_query import finished_hashes

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "sweeps").rglob("*.yaml"))   # sweeps/ladder/ too

SMALL = """
name: small
experiment: small-exp
base: {n_layers: 1, steps: 10, warmup_steps: 2}
grid:
  d_model: [64, 128]
  lr: [1e-3, 3e-3]
concurrency: 2
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return str(path)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A SQLite MLflow store where the first trial of SMALL finished, the second diverged, the
    third failed, and the fourth finished — but in another experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    sweep = folder / "small.yaml"
    sweep.write_text(SMALL)
    trials = load_sweep(str(sweep)).trials()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("small-exp")
    other = client.create_experiment("other-exp")
    parent = client.create_run(exp, tags={"scalelab.kind": "sweep", "scalelab.sweep": "small"})

    def child(experiment, trial, outcome):
        run = client.create_run(experiment, tags={
            "mlflow.parentRunId": parent.info.run_id, "scalelab.kind": "trial",
            "scalelab.trial_hash": trial.hash, "scalelab.outcome": outcome, "scalelab.mode": "grid",
            TAG_IDENTITY: str(IDENTITY_VERSION)})
        client.set_terminated(run.info.run_id, "FINISHED" if outcome != "failed" else "FAILED")

    child(exp, trials[0], "finished")
    child(exp, trials[1], "diverged")
    child(exp, trials[1], "failed")    # a failed retry does not undo the diverged result
    child(exp, trials[2], "failed")
    child(other, trials[3], "finished")
    return {"uri": uri, "trials": trials, "sweep": str(sweep)}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- tracking_query ------------------------------------------------------------------------------
def test_finished_hashes_reads_outcomes(tracked):
    trials = tracked["trials"]
    done = finished_hashes(tracked["uri"], "small-exp")
    assert done == {trials[0].hash: "finished", trials[1].hash: "diverged"}
    assert finished_hashes(tracked["uri"], "no-such-experiment") == {}


def test_finished_hashes_does_not_create_a_database(tmp_path):
    db = tmp_path / "sub" / "mlflow.db"
    assert finished_hashes(f"sqlite:///{db}", "anything") == {}
    assert not db.exists() and not db.parent.exists()


# --- plan --------------------------------------------------------------------------------------
def test_plan_json_marks_done_trials_and_totals(tracked, capsys):
    code, out, _ = run_cli(capsys, "plan", tracked["sweep"], "--json", "--tracking-uri", tracked["uri"])
    assert code == 0
    plan = json.loads(out)
    rows = {r["hash"]: r for r in plan["trials"]}
    trials = tracked["trials"]
    assert [rows[t.hash]["done"] for t in trials] == ["finished", "diverged", None, None]
    assert plan["experiment"] == "small-exp" and plan["tracking_uri"] == tracked["uri"]
    totals = plan["totals"]
    assert (totals["trials"], totals["done"], totals["to_run"]) == (4, 2, 2)
    todo = [rows[t.hash] for t in trials[2:]]
    assert totals["flops_to_run"] == pytest.approx(sum(r["flops"] for r in todo))
    assert totals["wall_seconds_at_concurrency"] == pytest.approx(sum(r["seconds"] for r in todo) / 2)
    row = rows[trials[0].hash]
    assert row["label"] == trials[0].label and row["n_params"] > 0 and row["tokens"] == 10 * 16 * 128
    assert row["memory_bytes"] > 0 and row["seconds"] > 0


def test_plan_table_lists_every_trial(tracked, capsys):
    code, out, err = run_cli(capsys, "plan", tracked["sweep"], "--tracking-uri", tracked["uri"])
    assert code == 0
    for trial in tracked["trials"]:
        assert trial.hash in out and trial.label in out
    assert "finished" in out and "diverged" in out and "to run" in out
    assert "total: 4 trials, 2 done, 2 to run" in out
    assert "checking MLflow" in err


def test_plan_without_a_database_creates_none(sweep_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out, _ = run_cli(capsys, "plan", sweep_file, "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert plan["totals"]["done"] == 0 and plan["totals"]["to_run"] == 4
    assert not (tmp_path / "mlflow.db").exists()


def test_tracking_uri_precedence(tmp_path, capsys, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(SMALL + f"tracking_uri: sqlite:///{tmp_path / 'from-file.db'}\n")

    def uri(*extra):
        return json.loads(run_cli(capsys, "plan", str(path), "--json", *extra)[1])["tracking_uri"]

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uri().endswith("from-file.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'from-env.db'}")
    assert uri().endswith("from-env.db")
    assert uri("--tracking-uri", f"sqlite:///{tmp_path / 'from-flag.db'}").endswith("from-flag.db")


def test_plan_of_a_search_sweep(tmp_path, capsys):
    path = tmp_path / "tune.yaml"
    path.write_text(textwrap.dedent("""
        name: tune
        base: {d_model: 64, steps: 10, warmup_steps: 2}
        seeds: [1]
        search:
          num_samples: 5
          space:
            lr: {log_uniform: [1e-4, 1e-2]}
    """))
    code, out, _ = run_cli(capsys, "plan", str(path), "--json", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 0
    plan = json.loads(out)
    assert plan["mode"] == "search" and plan["trials"] == []
    assert plan["search"]["space"] == {"lr": "log_uniform[0.0001, 0.01]"}
    assert plan["totals"]["trials"] == 5  # one seed per sampled point
    assert plan["totals"]["flops_to_run"] == pytest.approx(5 * plan["per_sample_at_base"]["flops"])


# --- validate -----------------------------------------------------------------------------------
def test_validate_ok(sweep_file, capsys):
    code, out, _ = run_cli(capsys, "validate", sweep_file)
    assert code == 0
    assert out.startswith("OK: 4 trials (grid: d_model 2 × lr 2; 1 seed)")


def test_validate_error_exit_2_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid:\n  lr: [1e-3, -1]\n")
    code, out, err = run_cli(capsys, "validate", str(bad))
    assert code == 2 and out == ""
    assert "bad.yaml" in err and "grid.lr[1] (line 3)" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "plan", str(bad))
    assert code == 2 and "grid.lr[1] (line 3)" in err


# --- the ready sweeps -------------------------------------------------------------------------------
@pytest.fixture
def tuned_study(tmp_path, monkeypatch):
    """A transfer reads its search's study from ./optuna.db (mup_transfer.yaml: mup_tune's; the
    ladder's transfers: its searches'): give every search sweep a finished one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for path in SWEEPS:
        if "search" not in yaml.safe_load(path.read_text()):   # a transfer cannot load before its study exists
            continue
        tune = load_sweep(str(path))
        study = optuna.create_study(study_name=tune.search.study_name, storage="sqlite:///optuna.db")
        space = tune.search.space
        params = {k: getattr(d, "low", None) or d.choices[0] for k, d in space.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=1.0))
    return tmp_path


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(REPO / "sweeps")))
def test_ready_sweeps_validate_and_plan(path, tuned_study, capsys):
    code, out, err = run_cli(capsys, "validate", str(path))
    assert code == 0, err
    assert out.startswith("OK: ")
    code, out, err = run_cli(capsys, "plan", str(path), "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["totals"]["trials"] >= 1
    assert not (tuned_study / "mlflow.db").exists()


def test_expected_sweeps_are_present():
    names = {p.name for p in SWEEPS}
    assert {"quickstart.yaml", "lr_transfer.yaml", "mup_tune.yaml", "mup_transfer.yaml",
            "multiplier_width.yaml", "sqrt_eta_lambda.yaml", "adam_vs_muon.yaml"} <= names


def test_quickstart_is_cpu_sized():
    spec = load_sweep(str(REPO / "sweeps" / "quickstart.yaml"))
    trials = spec.trials()
    assert {t.label.split()[0] for t in trials} == {"sp", "mup", "mup+vector"}
    from trainer.estimate import estimate
    cpu_seconds = sum(estimate(t.config)["seconds_cpu"] for t in trials)
    assert cpu_seconds / spec.concurrency < 600  # the README promises ≤ 10 minutes on 2 cores
    assert all(t.resources["gpu"] == 0 and t.config.d_model <= 256 and t.config.steps <= 150
               for t in trials)


def test_sqrt_eta_lambda_keeps_the_product_fixed():
    trials = load_sweep(str(REPO / "sweeps" / "sqrt_eta_lambda.yaml")).trials()
    products = {round((t.config.lr * t.config.weight_decay) ** 0.5, 12) for t in trials}
    ratios = sorted({round((t.config.lr / t.config.weight_decay) ** 0.5, 9) for t in trials})
    assert len(products) == 1
    assert ratios[0] == pytest.approx(1 / 64) and ratios[-1] == pytest.approx(64) and len(ratios) == 7

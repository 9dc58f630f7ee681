"""One owner for where a sweep's results live: `validate`, `plan` and `run` name the same
tracking URI, storage directory and Optuna study for the same flags, environment and file."""
from __future__ import annotations

import io
import json
import textwrap

import pytest

from orchestrator import runner
from orchestrator.cli import main
from orchestrator.locations import Locations
from orchestrator.spec import load_sweep

SEARCH = """
name: tune
{tracking}
base: {{d_model: 32, head_dim: 16, n_layers: 1, seq_len: 32, batch_size: 4, steps: 4, warmup_steps: 1}}
search:
  num_samples: 2
  {storage}
  space:
    lr: {{log_uniform: [1e-3, 1e-2]}}
"""


def write_search(folder, tracking: str = "", storage: str = "") -> str:
    path = folder / "tune.yaml"
    path.write_text(textwrap.dedent(SEARCH.format(tracking=tracking, storage=storage)))
    return str(path)


def plan_locations(argv: list[str], capsys) -> tuple[str, str, str]:
    assert main(["plan", *argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    return plan["tracking_uri"], plan["storage"], plan["search"]["storage"]


def run_locations(argv: list[str], monkeypatch) -> tuple[str, str, str]:
    """What `scalelab run` resolves, taken where run_sweep takes it (no Ray, no MLflow)."""
    seen = []

    def fake_run_sweep(spec, opts):
        seen.append(opts.locations(spec))
        return runner.SweepSummary(spec.name, 0)

    monkeypatch.setattr(runner, "run_sweep", fake_run_sweep)
    assert main(["run", *argv]) == 0
    where, = seen
    return where.tracking_uri, where.storage, where.study_url


CASES = {
    # the sweep file's SQLite store: the study sits next to it
    "file": dict(tracking="tracking_uri: sqlite:///{tmp}/file/mlflow.db", flags=[], env=None,
                 expect=("sqlite:///{tmp}/file/mlflow.db", "{tmp}/.scalelab", "sqlite:///{tmp}/file/optuna.db")),
    # the flag overrides the file: the study follows the flag, not the file
    "flag": dict(tracking="tracking_uri: sqlite:///{tmp}/file/mlflow.db",
                 flags=["--tracking-uri", "sqlite:///{tmp}/flag/mlflow.db"], env="sqlite:///{tmp}/env/mlflow.db",
                 expect=("sqlite:///{tmp}/flag/mlflow.db", "{tmp}/.scalelab", "sqlite:///{tmp}/flag/optuna.db")),
    # the environment overrides the file
    "env": dict(tracking="tracking_uri: sqlite:///{tmp}/file/mlflow.db", flags=[], env="sqlite:///{tmp}/env/mlflow.db",
                expect=("sqlite:///{tmp}/env/mlflow.db", "{tmp}/.scalelab", "sqlite:///{tmp}/env/optuna.db")),
    # a tracking server: the study goes to the storage directory
    "server": dict(tracking="", flags=["--storage", "{tmp}/store"], env="http://127.0.0.1:9/",
                   expect=("http://127.0.0.1:9/", "{tmp}/store", "sqlite:///{tmp}/store/optuna.db")),
    # nothing given: the working directory's defaults
    "defaults": dict(tracking="", flags=[], env=None,
                     expect=("sqlite:///{tmp}/mlflow.db", "{tmp}/.scalelab", "sqlite:///{tmp}/optuna.db")),
}


@pytest.mark.parametrize("case", CASES)
def test_plan_and_run_resolve_the_same_locations(case, tmp_path, monkeypatch, capsys):
    c = {k: (v.format(tmp=tmp_path) if isinstance(v, str) else v) for k, v in CASES[case].items()}
    monkeypatch.chdir(tmp_path)
    if c["env"]:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", c["env"])
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("orchestrator.tracking_query.finished_hashes", lambda uri, experiment: {})
    sweep = write_search(tmp_path, tracking=c["tracking"])
    flags = [f.format(tmp=tmp_path) for f in c["flags"]]
    expected = tuple(e.format(tmp=tmp_path) for e in c["expect"])

    assert plan_locations([sweep, *flags], capsys) == expected
    assert run_locations([sweep, *flags], monkeypatch) == expected
    if not flags:  # validate takes no flags: it agrees when none are given
        assert main(["validate", sweep]) == 0
        assert f"at {expected[2]} — " in capsys.readouterr().out


def test_an_explicit_study_storage_is_used_by_plan_and_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("orchestrator.tracking_query.finished_hashes", lambda uri, experiment: {})
    sweep = write_search(tmp_path, storage="storage: sqlite:///studies/optuna.db")
    expected = ("sqlite:///" + str(tmp_path / "mlflow.db"), str(tmp_path / ".scalelab"),
                "sqlite:///" + str(tmp_path / "studies" / "optuna.db"))
    assert plan_locations([sweep], capsys) == expected
    assert run_locations([sweep], monkeypatch) == expected


def test_run_with_an_address_keeps_state_in_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spec = load_sweep(write_search(tmp_path, tracking="tracking_uri: http://127.0.0.2:5000"))
    where = runner.RunOptions(address="auto").locations(spec)
    assert where == Locations("http://127.0.0.2:5000", str(tmp_path / "home" / ".scalelab"),
                              "sqlite:///" + str(tmp_path / "home" / ".scalelab" / "optuna.db"))


def test_run_sweep_prints_the_study_that_plan_names(tmp_path, monkeypatch, capsys):
    """The real run_sweep (MLflow and Optuna in tmp_path; Tune itself left out) opens the study
    plan names, when the flag points elsewhere than the sweep file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = write_search(tmp_path, tracking=f"tracking_uri: sqlite:///{tmp_path}/file/mlflow.db")
    flag = f"sqlite:///{tmp_path}/flag/mlflow.db"
    (tmp_path / "flag").mkdir()
    _, _, study = plan_locations([sweep, "--tracking-uri", flag], capsys)
    monkeypatch.setattr(runner, "_execute", lambda *args: False)
    out = io.StringIO()
    runner.run_sweep(load_sweep(sweep), runner.RunOptions(tracking_uri=flag, out=out))
    assert f"(study 'tune' at {study})" in out.getvalue()
    assert study == f"sqlite:///{tmp_path}/flag/optuna.db" and (tmp_path / "flag" / "optuna.db").is_file()
    assert not (tmp_path / "file").exists()

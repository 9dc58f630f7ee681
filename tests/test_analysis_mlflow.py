"""analysis.tables reads runs written with the CONTRACTS.md MLflow layout back correctly, and
`scalelab report` / `scalelab export` work against a real (temporary SQLite) MLflow store."""
from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest
import yaml

from analysis.tables import Tables
from trainer.config import TrainConfig, UserError

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

WIDTHS = (64, 128, 256)
LRS = (2.0 ** -9, 2.0 ** -8, 2.0 ** -7, 2.0 ** -6)


def _loss(width: int, lr: float, label: str) -> float:
    base = 2.0 + 20.0 / width + (0.0 if label == "mup" else -0.01)
    return base + 0.05 * (math.log2(lr) + 7.6) ** 2


def _config_params(cfg: TrainConfig) -> list[Param]:
    flat = cfg.model_dump()
    return [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in flat.items()]


def _log_trial(client: MlflowClient, exp_id: str, parent: str, tmp_path, label: str, width: int, lr: float,
               outcome: str, index: int) -> str:
    scheme, _, mult = label.partition("+")
    cfg = TrainConfig.build({"d_model": width, "lr": lr, "scheme": scheme, "multipliers": mult or "none",
                             "steps": 100, "eval_interval": 50, "seed": 0})
    run = client.create_run(exp_id, tags={"mlflow.parentRunId": parent})
    run_id = run.info.run_id
    n_params = 12 * 2 * width ** 2
    tags = [RunTag("scalelab.kind", "trial"), RunTag("scalelab.sweep", "quick"),
            RunTag("scalelab.trial_hash", f"{index:016x}"), RunTag("scalelab.outcome", outcome),
            RunTag("scalelab.mode", "grid"), RunTag("scalelab.code_version", "test")]
    if outcome == "failed":
        tags.append(RunTag("scalelab.error", "RuntimeError: boom"))
    params = _config_params(cfg) + [Param("parametrization", label), Param("n_params", str(n_params))]
    metrics = []
    if outcome != "failed":
        final = _loss(width, lr, label) if outcome == "finished" else float("nan")
        for step in (0, 50, 100):
            val = math.log(256) if step == 0 else (final if step == 100 else 3.0)
            values = {"val_loss": val, "train_loss": val + 0.01, "lr": lr * (1 - step / 100),
                      "tokens": float(step * 16 * 128), "act/block.0": 1.0 + width / 1000 * step,
                      "weight_rms/attn_q.0": 0.1 + step / 1000}
            if mult:
                values["mult/attn_q.0/scalar"] = 1.0 - step / 1000
                values["mult/attn_k.0/scalar"] = 1.0 - step / 2000
            metrics += [Metric(k, v, 1000 + step, step) for k, v in values.items()]
        finals = {"final_val_loss": final, "min_val_loss": 3.0 if outcome == "diverged" else final,
                  "final_train_loss": final + 0.01, "n_params": float(n_params), "tokens": 100 * 16 * 128.0,
                  "flops": 6.0 * n_params * 100 * 16 * 128, "wall_time_s": 1.5}
        metrics += [Metric(k, v, 2000, 100) for k, v in finals.items()]
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    art = tmp_path / "art" / run_id
    art.mkdir(parents=True)
    (art / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    if mult and outcome == "finished":
        pd.DataFrame([{"layer": "attn_q.0", "role": "attn_q", "block": 0, "kind": "scalar", "mean": 0.9,
                       "rms": 0.9, "min": 0.9, "max": 0.9, "size": 1},
                      {"layer": "attn_k.0", "role": "attn_k", "block": 0, "kind": "scalar", "mean": 0.95,
                       "rms": 0.95, "min": 0.95, "max": 0.95, "size": 1}]).to_csv(art / "multipliers.csv", index=False)
    client.log_artifacts(run_id, str(art))
    client.set_terminated(run_id, "FAILED" if outcome == "failed" else "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("quick-exp", artifact_location=str(tmp_path / "artifacts"))
    client.create_experiment("other-exp", artifact_location=str(tmp_path / "artifacts2"))
    parent = client.create_run(exp_id, tags={"scalelab.kind": "sweep", "scalelab.sweep": "quick"}).info.run_id
    runs = {}
    index = 0
    for label in ("mup", "mup+scalar"):
        for width in WIDTHS:
            for lr in LRS:
                outcome = "diverged" if lr == LRS[-1] and width == WIDTHS[-1] else "finished"
                runs[(label, width, lr)] = _log_trial(client, exp_id, parent, tmp_path, label, width, lr, outcome, index)
                index += 1
    runs["failed"] = _log_trial(client, exp_id, parent, tmp_path, "mup", 64, 1e-3, "failed", index)
    client.set_terminated(parent)
    return {"uri": uri, "parent": parent, "runs": runs, "tmp": tmp_path}


@pytest.fixture(scope="module")
def tables(store) -> Tables:
    return Tables.from_mlflow(["quick-exp"], store["uri"])


def test_trials_table_has_one_typed_row_per_child_run(store, tables):
    t = tables.trials
    assert len(t) == 2 * len(WIDTHS) * len(LRS) + 1        # the parent run is not a trial
    assert store["parent"] not in set(t["run_id"])
    assert t["d_model"].dtype.kind == "i" and t["seed"].dtype.kind == "i"
    assert t["lr"].dtype.kind == "f" and t["freeze_norms"].dtype == bool
    assert set(t["parametrization"]) == {"mup", "mup+scalar"}
    assert t["cache_dir"].isna().all()                     # 'None' params become missing
    row = t[t["run_id"] == store["runs"][("mup", 128, 2.0 ** -8)]].iloc[0]
    assert row["lr"] == 2.0 ** -8                          # the param, not the scheduled LR metric
    assert row["last_lr"] == 0.0                           # the LR metric's last value keeps its own name
    assert row["final_val_loss"] == pytest.approx(_loss(128, 2.0 ** -8, "mup"))
    assert row["weight_rms/attn_q.0"] == pytest.approx(0.2)
    assert row["outcome"] == "finished" and row["sweep"] == "quick" and row["mode"] == "grid"
    assert row["experiment"] == "quick-exp" and row["parent_run_id"] == store["parent"]


def test_outcomes_and_failures_are_kept(store, tables):
    t = tables.trials.set_index("run_id")
    failed = t.loc[store["runs"]["failed"]]
    assert failed["outcome"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert pd.isna(failed["final_val_loss"])
    diverged = t.loc[store["runs"][("mup", 256, LRS[-1])]]
    assert diverged["outcome"] == "diverged" and math.isnan(diverged["final_val_loss"])


def test_history_multipliers_and_meta(store, tables):
    h = tables.history
    run = store["runs"][("mup+scalar", 64, LRS[0])]
    mine = h[(h["run_id"] == run) & (h["key"] == "mult/attn_q.0/scalar")].sort_values("step")
    assert mine["step"].tolist() == [0, 50, 100]
    assert mine["value"].tolist() == pytest.approx([1.0, 0.95, 0.9])
    assert set(mine["trial_hash"]) == {tables.trials.set_index("run_id").loc[run, "trial_hash"]}
    diverged = store["runs"][("mup", 256, LRS[-1])]
    final = h[(h["run_id"] == diverged) & (h["key"] == "val_loss") & (h["step"] == 100)]["value"]
    assert final.isna().all() and len(final) == 1            # a NaN value is kept as NaN
    m = tables.multipliers
    assert set(m["run_id"]) == {store["runs"][("mup+scalar", w, lr)] for w in WIDTHS for lr in LRS
                                if not (w == WIDTHS[-1] and lr == LRS[-1])}
    assert set(m["role"]) == {"attn_q", "attn_k"}
    assert [s["run_id"] for s in tables.meta["sweeps"]] == [store["parent"]]


def test_unknown_experiment_lists_the_existing_ones(store):
    with pytest.raises(UserError) as err:
        Tables.from_mlflow(["nope"], store["uri"])
    assert "'nope' not found" in str(err.value)
    assert "'quick-exp'" in str(err.value) and "'other-exp'" in str(err.value)


def test_missing_database_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no MLflow database"):
        Tables.from_mlflow(["x"], f"sqlite:///{tmp_path}/absent.db")
    assert not (tmp_path / "absent.db").exists()


def _cli(argv: list[str], monkeypatch) -> int:
    import orchestrator.cli as cli
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("analysis.cli",))  # only the commands under test
    return cli.main(argv)


@pytest.mark.slow  # a full report with every figure
def test_report_attaches_artifacts_to_the_parent_run(store, monkeypatch, tmp_path, capsys):
    out = tmp_path / "rep"
    code = _cli(["report", "quick-exp", "--tracking-uri", store["uri"], "--out", str(out), "--n-boot", "40"],
                monkeypatch)
    assert code == 0
    (report_id,) = os.listdir(out)   # each report in its own folder: OUT/<report id>
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / report_id / "report.html")
    summary = json.loads((out / report_id / "summary.json").read_text())
    assert summary["n_trials"] == 2 * len(WIDTHS) * len(LRS) + 1
    assert "transfer" in summary["results"]
    client = MlflowClient(store["uri"])
    folder = f"report/{report_id}"
    attached = {f.path for f in client.list_artifacts(store["parent"], folder)}
    assert {f"{folder}/report.html", f"{folder}/report.md", f"{folder}/summary.json", f"{folder}/figures"} <= attached
    figures = {f.path for f in client.list_artifacts(store["parent"], f"{folder}/figures")}
    assert f"{folder}/figures/loss_vs_hp.png" in figures

    # again (--no-history: quicker): a new folder beside the first, locally and on the run; the first unchanged
    first = {p.name: p.stat().st_mtime_ns for p in (out / report_id).rglob("*")}
    assert _cli(["report", "quick-exp", "--tracking-uri", store["uri"], "--out", str(out), "--n-boot", "20",
                 "--no-history"], monkeypatch) == 0
    second = sorted(set(os.listdir(out)) - {report_id})
    assert len(second) == 1 and second[0] != report_id
    assert {p.name: p.stat().st_mtime_ns for p in (out / report_id).rglob("*")} == first
    assert {os.path.basename(f.path) for f in client.list_artifacts(store["parent"], "report")} == {report_id, second[0]}
    # the second report has no training curves (no histories): no stale figure stands beside it
    assert not (out / second[0] / "figures" / "training_curves.png").exists()
    assert (out / report_id / "figures" / "training_curves.png").exists()


@pytest.mark.slow  # a full report with every figure
def test_export_then_report_offline(store, monkeypatch, tmp_path, capsys):
    snap = tmp_path / "snap.parquet"
    assert _cli(["export", "quick-exp", str(snap), "--tracking-uri", store["uri"]], monkeypatch) == 0
    back = Tables.load(snap)
    original = Tables.from_mlflow(["quick-exp"], store["uri"])
    pd.testing.assert_frame_equal(back.trials, original.trials)
    assert len(back.history) == len(original.history) and len(back.multipliers) == len(original.multipliers)
    # offline: a tracking URI that cannot be reached must not matter
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    out = tmp_path / "offline"
    assert _cli(["report", str(snap), "--out", str(out), "--n-boot", "40"], monkeypatch) == 0
    (folder,) = out.iterdir()
    assert (folder / "report.md").exists() and (folder / "figures" / "loss_vs_hp.svg").exists()


def test_cli_errors_are_clean(store, monkeypatch, tmp_path, capsys):
    code = _cli(["report", "missing-exp", "--tracking-uri", store["uri"], "--out", str(tmp_path / "r")], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "'missing-exp' not found" in err and "quick-exp" in err and "Traceback" not in err
    code = _cli(["report", str(tmp_path / "absent.parquet")], monkeypatch)
    assert code == 2 and "snapshot file not found" in capsys.readouterr().err
    code = _cli(["report", "quick-exp", "--tracking-uri", store["uri"], "--k", "0"], monkeypatch)
    assert code == 2 and "--k 0" in capsys.readouterr().err
    os.makedirs(tmp_path / "adir", exist_ok=True)
    code = _cli(["export", "quick-exp", str(tmp_path / "adir"), "--tracking-uri", store["uri"]], monkeypatch)
    assert code == 2 and "is a directory" in capsys.readouterr().err


def test_bulk_history_query_matches_the_public_api(store):
    """The SQL fast path and MlflowClient.get_metric_history (the path for tracking servers)
    return the same points."""
    from analysis import mlflow_read

    client = MlflowClient(store["uri"])
    runs = mlflow_read.search_all_runs(client, [client.get_experiment_by_name("quick-exp").experiment_id])
    ids = [r.info.run_id for r in runs]
    bulk = mlflow_read._history_from_sql_store(client, ids)
    api = mlflow_read._history_from_api(client, runs, lambda _m: None)
    key = ["run_id", "key", "step", "timestamp"]
    bulk = bulk.sort_values(key).reset_index(drop=True)[key + ["value"]]
    api = api.sort_values(key).reset_index(drop=True)[key + ["value"]]
    assert len(bulk) > 100
    pd.testing.assert_frame_equal(bulk, api, check_dtype=False)

"""Read MLflow experiments (the layout of docs/CONTRACTS.md, names from orchestrator/layout.py)
into the frames of `Tables`.

Runs come from `MlflowClient.search_runs` (paged); their latest metric values are the
trials' final metrics. Histories come from one bulk query per chunk of runs when the
tracking store is a database (see `_history_from_sql_store`), else from
`MlflowClient.get_metric_history` per (run, key) on a thread pool.
"""
from __future__ import annotations

import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable

import pandas as pd

from orchestrator.layout import (KIND_SWEEP, KIND_TRIAL, MULTIPLIERS_ARTIFACT, OUTCOME_FAILED, OUTCOME_FINISHED,
                                 TAG_COLUMNS, TAG_KIND, TAG_PARENT, TAG_SWEEP, probe_tracking, search_all, sqlite_lock, sqlite_path)
from orchestrator.uri_auth import redact, redact_text
from trainer.config import UserError

from .columns import (HISTORY_COLUMNS, IDENTITY_COLUMNS, MULTIPLIER_NUMBERS, empty_history,
                      empty_multipliers, order_columns)

SQL_CHUNK = 500      # run ids per IN (...) clause
THREADS = 8          # REST calls and artifact downloads wait on I/O, so threads help

Progress = Callable[[str], None]


def read_experiments(names: list[str], tracking_uri: str, *, history: bool = True,
                     artifacts: bool = True, progress: Progress | None = None) -> dict:
    """The fields of `Tables` (trials, history, multipliers, meta) read from the experiments."""
    say = progress or (lambda _msg: None)
    client = open_client(tracking_uri)
    try:
        experiments = {find_experiment(client, name, tracking_uri).experiment_id: name for name in names}
    except UserError:
        raise
    except Exception as err:  # unreachable server, bad URI scheme, corrupt database, ...
        raise UserError(f"cannot read the MLflow store at {redact(tracking_uri)}: {type(err).__name__}: "
                        f"{redact_text(str(err).splitlines()[0][:300], tracking_uri) if str(err) else ''}") from None
    runs = search_all_runs(client, list(experiments), say)
    trial_runs = [r for r in runs if _kind(r) == KIND_TRIAL]
    sweep_runs = [r for r in runs if _kind(r) == KIND_SWEEP]
    say(f"read {len(trial_runs)} trial run(s) and {len(sweep_runs)} sweep run(s) "
        f"from {', '.join(names)}")
    trials, param_columns = trials_frame(trial_runs, experiments)
    hashes = dict(zip(trials["run_id"], trials["trial_hash"])) if len(trials) else {}
    hist = read_history(client, trial_runs, hashes, say) if history and trial_runs else empty_history()
    mults = read_multipliers(tracking_uri, trial_runs, hashes, say) if artifacts and trial_runs else empty_multipliers()
    meta = {"source": "mlflow", "experiments": list(names), "param_columns": param_columns,
            "sweeps": [_sweep_info(r, experiments) for r in sweep_runs],
            "ignored_runs": len(runs) - len(trial_runs) - len(sweep_runs)}
    return {"trials": trials, "history": hist, "multipliers": mults, "meta": meta}


def open_client(tracking_uri: str):
    from mlflow import MlflowClient  # seconds to import: snapshots and --help never need it

    db_path = sqlite_path(tracking_uri)
    if db_path is not None and not os.path.exists(db_path):  # MlflowClient would create an empty db
        raise UserError(f"no MLflow database at {db_path} (tracking URI {tracking_uri}); run a sweep "
                        "first, or pass --tracking-uri / set MLFLOW_TRACKING_URI to the one you used")
    probe_tracking(tracking_uri)  # seconds, not MLflow's minutes of retries, against a dead server
    with sqlite_lock(tracking_uri):  # a `scalelab run` may be creating the schema right now
        return MlflowClient(tracking_uri)


def find_experiment(client, name: str, tracking_uri: str):
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        existing = sorted(e.name for e in client.search_experiments())
        listing = ", ".join(repr(n) for n in existing) or "(none)"
        raise UserError(f"experiment {name!r} not found at {redact(tracking_uri)}; experiments there: {listing}. "
                        "Pass one of them (or --tracking-uri for another MLflow store)")
    return experiment


def search_all_runs(client, experiment_ids: list[str], say: Progress | None = None) -> list:
    on_page = (lambda n: say(f"  searched {n} runs ...")) if say else None
    return list(search_all(client, experiment_ids, on_page=on_page))


def _kind(run) -> str:
    tags = run.data.tags
    kind = tags.get(TAG_KIND)
    if kind:
        return kind
    return KIND_TRIAL if TAG_PARENT in tags else "other"


def _sweep_info(run, experiments: dict[str, str]) -> dict:
    return {"experiment": experiments.get(run.info.experiment_id), "run_id": run.info.run_id,
            "sweep": run.data.tags.get(TAG_SWEEP), "run_name": run.info.run_name}


# ---- trials ------------------------------------------------------------------------------

def trials_frame(runs: list, experiments: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per run: identity, typed params, last metric values."""
    param_order: dict[str, None] = {}
    records = []
    for run in runs:
        params = run.data.params
        param_order.update(dict.fromkeys(params))
        records.append({**_identity(run, experiments), **params, **_metric_columns(run, params)})
    frame = pd.DataFrame.from_records(records)
    metric_keys = set().union(*(r.data.metrics for r in runs)) if runs else set()
    params = [c for c in param_order if c not in IDENTITY_COLUMNS or c == "parametrization"]
    for col in params:
        if col in metric_keys:  # n_params: logged as a param and a metric, same number
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        elif col in frame.columns:
            frame[col] = typed_param_column(frame[col])
    return order_columns(frame, params), params


def _identity(run, experiments: dict[str, str]) -> dict:
    tags = run.data.tags
    row = {"run_id": run.info.run_id, "experiment": experiments.get(run.info.experiment_id),
           "run_status": run.info.status, "start_time": _time(run.info.start_time),
           "end_time": _time(run.info.end_time)}
    row.update({col: tags.get(tag) for tag, col in TAG_COLUMNS.items()})
    if not row["outcome"]:
        row["outcome"] = _outcome_from_status(run)
    return row


def _outcome_from_status(run) -> str:
    """A trial whose outcome tag was never written (orchestrator crashed, still running)."""
    status = run.info.status
    if status in ("FAILED", "KILLED"):
        return OUTCOME_FAILED
    if status == "RUNNING" or status == "SCHEDULED":
        return "running"
    return OUTCOME_FINISHED if "final_val_loss" in run.data.metrics else "unknown"


def _metric_columns(run, params: dict) -> dict:
    out = {}
    for key, value in run.data.metrics.items():
        # `lr` is both a param (the base LR) and a metric (the scheduled LR, 0 at the end of
        # WSD): the param keeps the name, the metric becomes last_lr. n_params: same number.
        name = f"last_{key}" if (key in params and key != "n_params") or key in IDENTITY_COLUMNS else key
        out[name] = value
    return out


def _time(ms: int | None):
    """Naive UTC timestamps: pyarrow's pandas conversion of tz-aware columns is deprecated."""
    return pd.NaT if ms is None else pd.Timestamp(ms, unit="ms")


def typed_param_column(series: pd.Series) -> pd.Series:
    """MLflow params are strings: turn numbers into numbers and True/False into booleans;
    'None' (an unset optional) becomes missing. JSON lists/dicts and labels stay strings."""
    values = series.where(series != "None")
    present = values.dropna()
    if present.empty:
        return values
    if present.isin(["True", "False"]).all():
        return values.map({"True": True, "False": False}).astype("boolean" if values.isna().any() else bool)
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all():
        whole = present.str.fullmatch(r"[+-]?\d+").all()
        out = pd.to_numeric(values, errors="coerce")
        return out.astype("int64") if whole and out.notna().all() else out.astype("float64")
    return values.astype("str").where(values.notna())


# ---- history -----------------------------------------------------------------------------

def read_history(client, runs: list, hashes: dict, say: Progress) -> pd.DataFrame:
    run_ids = [r.info.run_id for r in runs]
    try:
        frame = _history_from_sql_store(client, run_ids, say)
    except Exception:  # MLflow's internal schema moved on: the public path is slower but right
        frame = None
    if frame is None:
        frame = _history_from_api(client, runs, say)
    say(f"read {len(frame)} metric history point(s) of {len(runs)} run(s)")
    if frame.empty:
        return empty_history()
    frame = (frame.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
             .drop_duplicates(["run_id", "key", "step"], keep="last"))  # a step re-logged after a restore
    frame.insert(1, "trial_hash", frame["run_id"].map(hashes))
    return frame[HISTORY_COLUMNS].reset_index(drop=True)


def _history_from_sql_store(client, run_ids: list[str], say: Progress | None = None) -> pd.DataFrame | None:
    """All histories in one query per chunk of runs, for database-backed stores (SQLite here).

    MLflow's public API has get_metric_history (one run and one key per call, ~1 ms each on
    SQLite: minutes for thousands of runs x hundreds of keys). We query MLflow's own ORM
    model of the metrics table through the store's session instead; any other store (a
    tracking server) takes the public per-key path."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None or not hasattr(store, "ManagedSessionMaker"):
        return None
    try:
        # MLflow's own SQL models: the fast path for an SQLite/PostgreSQL store only
        from mlflow.store.tracking.dbmodels.models import SqlMetric
        from sqlalchemy import select
    except ImportError:
        return None
    columns = [SqlMetric.run_uuid, SqlMetric.key, SqlMetric.step, SqlMetric.timestamp,
               SqlMetric.value, SqlMetric.is_nan]
    parts = []
    with store.ManagedSessionMaker() as session:
        connection = session.connection()
        for chunk in _chunks(run_ids, SQL_CHUNK):   # pandas builds the columns: ~3x faster than ORM rows
            parts.append(pd.read_sql(select(*columns).where(SqlMetric.run_uuid.in_(chunk)), connection))
            if say and len(run_ids) > SQL_CHUNK:
                say(f"  history: {min(len(parts) * SQL_CHUNK, len(run_ids))}/{len(run_ids)} runs")
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True).rename(columns={"run_uuid": "run_id"})
    frame["value"] = frame["value"].astype("float64").where(~frame["is_nan"].astype(bool), math.nan)
    frame["step"] = frame["step"].astype("int64")
    return frame.drop(columns="is_nan")


def _history_from_api(client, runs: list, say: Progress) -> pd.DataFrame:
    jobs = [(r.info.run_id, key) for r in runs for key in r.data.metrics]

    def fetch(job):
        run_id, key = job
        return [(run_id, key, m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]

    rows = []
    with ThreadPoolExecutor(THREADS) as pool:
        for i, part in enumerate(pool.map(fetch, jobs), 1):
            rows.extend(part)
            if i % max(1, len(jobs) // 10) == 0:
                say(f"  history: {i}/{len(jobs)} (run, metric) pairs")
    return pd.DataFrame.from_records(rows, columns=["run_id", "key", "step", "timestamp", "value"])


# ---- multipliers.csv artifacts ------------------------------------------------------------

def read_multipliers(tracking_uri: str, runs: list, hashes: dict, say: Progress) -> pd.DataFrame:
    # By artifact URI: MlflowClient.download_artifacts(run_id, ...) looks the run up again on
    # every call, ~7x slower for thousands of runs.
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(prefix="scalelab-mult-") as tmp, _quiet_downloads():
        def fetch(run):
            run_id = run.info.run_id
            try:
                path = download_artifacts(artifact_uri=f"{run.info.artifact_uri}/{MULTIPLIERS_ARTIFACT}",
                                          dst_path=os.path.join(tmp, run_id), tracking_uri=tracking_uri)
            except Exception:  # no such artifact (sp runs, failed runs): MlflowException or OSError
                return None
            table = pd.read_csv(path)
            table.insert(0, "run_id", run_id)
            table.insert(1, "trial_hash", hashes.get(run_id))
            return table

        with ThreadPoolExecutor(THREADS) as pool:
            parts = [p for p in pool.map(fetch, runs) if p is not None]
    say(f"read multipliers.csv of {len(parts)}/{len(runs)} run(s)")
    if not parts:
        return empty_multipliers()
    frame = pd.concat(parts, ignore_index=True)
    for col in (*MULTIPLIER_NUMBERS, "block"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


@contextmanager
def _quiet_downloads():
    """MLflow draws a progress bar per artifact download: thousands of them for a sweep."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]

"""The MLflow layout of a sweep (docs/CONTRACTS.md, "MLflow layout"): where runs are tracked, tag
names, outcomes, artifact names and columns and the paged run search, in one place for the writer
(orchestrator) and the readers (plan, analysis). No heavy imports: `scalelab plan` and the
analysis load this without Ray or MLflow."""
from __future__ import annotations

import fcntl
import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Callable, Iterator

from trainer import metrics
from trainer.config import UserError

from . import uri_auth
from .uri_check import SERVER_DIALECTS

TAG_KIND = "scalelab.kind"                    # KIND_SWEEP (parent run) | KIND_TRIAL (child run)
TAG_SWEEP = "scalelab.sweep"
TAG_HASH = "scalelab.trial_hash"
TAG_IDENTITY = "scalelab.identity_version"    # the trial-identity rule TAG_HASH was computed with
TAG_PREVIOUS_HASH = "scalelab.trial_hash_v1"  # set by `scalelab migrate`: the hash before re-keying
TAG_CODE = "scalelab.code_version"
TAG_OUTCOME = "scalelab.outcome"
TAG_ERROR = "scalelab.error"
TAG_MODE = "scalelab.mode"
TAG_LABEL = "scalelab.label"
TAG_FROM_STUDY = "scalelab.from_study"       # a grid sweep whose base came from a search: that study's name
TAG_LOGGED_STEP = "scalelab.logged_step"
TAG_OWNER = "scalelab.owner"                 # "host:pid:id" of the `scalelab run` holding the trial (search: the parent)
TAG_HEARTBEAT = "scalelab.heartbeat"          # epoch ms its owner last renewed the claim; 0 = released
TAG_TRAINING_STARTED = "scalelab.training_started"  # epoch ms a trial's run last moved to RUNNING (training began)
TAG_REPLACES = "scalelab.replaces"            # a trial's run made at training start: the claim's run it replaced
TAG_RAY_JOB = "scalelab.ray_job_id"           # the Ray Job (submission id) the sweep ran in, when it ran as one
TAG_OPTUNA_STUDY = "scalelab.optuna_study"    # search sweeps: the study (parent and trial runs)
TAG_OPTUNA_TRIAL = "scalelab.optuna_trial"    # search sweeps: the Optuna trial number of a trial run
TAG_BEST_TRIAL = "scalelab.best_trial"        # parent: label of the trial with the lowest final val loss
TAG_BEST_RUN = "scalelab.best_run_id"         # parent: that trial's run id
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_GIT_COMMIT = "mlflow.source.git.commit"   # MLflow's own: the UI shows it as the run's source version
TAG_NOTE = "mlflow.note.content"              # MLflow's own: the run's description in the UI
TAG_LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"  # MLflow's own: which artifacts its UI shows as tables

KIND_SWEEP, KIND_TRIAL = "sweep", "trial"

# A trial run's TAG_OUTCOME (the first two are also the trainer's `result.status`).
OUTCOME_FINISHED, OUTCOME_DIVERGED, OUTCOME_FAILED = metrics.FINISHED, metrics.DIVERGED, "failed"
OUTCOMES = (OUTCOME_FINISHED, OUTCOME_DIVERGED, OUTCOME_FAILED)
DONE_OUTCOMES = (OUTCOME_FINISHED, OUTCOME_DIVERGED)  # a diverged trial is a result too: do not rerun it
USABLE_OUTCOMES = DONE_OUTCOMES  # what the analysis fits (a diverged trial as loss +inf); failed is an error

# A trial run's artifacts.
CONFIG_ARTIFACT = "config.yaml"            # the resolved TrainConfig
MULTIPLIERS_ARTIFACT = "multipliers.csv"   # the final multiplier table, MULTIPLIER_COLUMNS
# A sweep's parent run's artifacts (its answer, written at the end of every `scalelab run`).
SWEEP_ARTIFACT = "sweep.yaml"              # the sweep file as it was run last
RESULTS_TABLE_ARTIFACT = "results_table.json"  # the results table (results_table.py rows), an MLflow table
# parent: the lowest final val loss; per parametrization × width: BEST_METRIC/<param>/d<width>
BEST_METRIC = "best_" + metrics.FINAL_VAL_LOSS

# Tags the analysis reads into columns of its trials table.
TAG_COLUMNS = {TAG_SWEEP: "sweep", TAG_HASH: "trial_hash", TAG_OUTCOME: "outcome", TAG_MODE: "mode",
               TAG_ERROR: "error", TAG_CODE: "code_version", TAG_LABEL: "label", TAG_FROM_STUDY: "from_study", TAG_PARENT: "parent_run_id"}

MULTIPLIER_COLUMNS = ("layer", "role", "block", "kind", "mean", "rms", "min", "max", "size")  # MULTIPLIERS_ARTIFACT

# --- where runs are tracked ----------------------------------------------------------------
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_DB = "mlflow.db"
LOCK_SUFFIX = ".lock"   # <db>.lock: sqlite_lock's file next to an SQLite tracking database
ARTIFACT_DIR = "mlartifacts"  # next to an SQLite database: its experiments' artifacts


def resolve_tracking_uri(flag: str | None, sweep_uri: str | None = None) -> str:
    """First match wins: --tracking-uri, $MLFLOW_TRACKING_URI, the sweep file's `tracking_uri`,
    the SQLite default in the working directory (absolute, so Ray workers agree on it).
    `tracking_uri_help` says the same in words."""
    for uri in (flag, os.environ.get(TRACKING_URI_ENV), sweep_uri):
        if uri:
            return uri_auth.adopt(uri)  # an HTTP server's user:password moves to MLflow's variables
    return "sqlite:///" + os.path.abspath(DEFAULT_TRACKING_DB)


def tracking_uri_help(sweep_file: bool = True) -> str:
    """The --tracking-uri help of every command, in the order `resolve_tracking_uri` applies."""
    sweep = "then the sweep's tracking_uri, " if sweep_file else ""
    return (f"MLflow tracking URI (default: ${TRACKING_URI_ENV}, {sweep}"
            f"then sqlite:///{DEFAULT_TRACKING_DB} in the working directory)")


def sqlite_path(url: str) -> str | None:
    """The file behind an SQLite URL (relative paths are relative to the working directory),
    or None for other databases."""
    if not url.startswith("sqlite:///"):
        return None
    return url[len("sqlite:///"):].split("?", 1)[0]


PROBE_TIMEOUT_S = 5.0


class TrackingUnreachable(UserError):
    """An MLflow server that does not answer: one line for the user (`scalelab run`: exit 1)."""


def probe_tracking(tracking_uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds, in one line, when an MLflow server or database server does not answer
    (MLflow's own client retries for minutes). Any HTTP answer counts as up; a database server
    must take one connection; SQLite is not probed."""
    if tracking_uri.split("://", 1)[0].split("+", 1)[0].lower() in SERVER_DIALECTS:
        return _probe_database(tracking_uri, timeout)
    if not tracking_uri.startswith(("http://", "https://")):
        return
    request = urllib.request.Request(tracking_uri.rstrip("/") + "/health", headers=uri_auth.basic_auth_header())
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError:  # it answers (perhaps asking for a token): it is up
        return
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise TrackingUnreachable(f"MLflow at {uri_auth.redact(tracking_uri)} is unreachable ({reason}); start it or pass another "
                        "--tracking-uri") from None


def _probe_database(uri: str, timeout: float) -> None:
    import sqlalchemy  # a fraction of a second; only database tracking URIs get here

    timeout_arg = {"connect_timeout": max(1, round(timeout))} if uri.lower().startswith(("postgresql", "mysql")) else {}
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool, connect_args=timeout_arg)
    try:
        with engine.connect():
            return
    except Exception as err:  # noqa: BLE001 - any driver's error: refused, timed out, bad password, no database
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise TrackingUnreachable(f"MLflow's database at {uri_auth.redact(uri)} is unreachable "
                                  f"({uri_auth.redact_text(reason, uri)}); start it, or set another tracking_uri "
                                  "(or --tracking-uri)") from None
    finally:
        engine.dispose()


@contextmanager
def sqlite_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock next to an SQLite tracking database (`<db>.lock`), held while
    MLflow creates or migrates its schema: two processes creating one new database at once
    otherwise race (`duplicate column name: step`). No-op for other stores."""
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    parent = os.path.dirname(os.path.abspath(db))
    os.makedirs(parent, exist_ok=True)
    with open(os.path.abspath(db) + LOCK_SUFFIX, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- reading runs --------------------------------------------------------------------------
PAGE_SIZE = 1000


def quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + value.replace("'", "\\'") + "'"


def unfinished_replacements(runs: list) -> dict[str, dict]:
    """{run id: tags of the run it replaces} for each run made to replace a claim's run (TAG_REPLACES)
    while that run still exists: mid-swap, or cut short by a crash. The replaced run is the
    trial's (run_writes.SweepTracker._replace_claimed_run); readers skip the replacement."""
    tags_of = {run.info.run_id: run.data.tags for run in runs}
    return {run.info.run_id: tags_of[run.data.tags[TAG_REPLACES]] for run in runs
            if run.data.tags.get(TAG_REPLACES) in tags_of}


def without_unfinished_replacements(runs: list) -> list:
    strays = unfinished_replacements(runs)
    return [run for run in runs if run.info.run_id not in strays]


def search_all(client, experiment_ids: str | list[str], filter_string: str = "",
               order_by: list[str] | None = None, on_page: Callable[[int], None] | None = None):
    """Every run matching the filter, through MLflow's pages; `on_page(runs so far)` after each
    page but the last."""
    ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
    token, seen = None, 0
    while True:
        page = client.search_runs(ids, filter_string=filter_string, max_results=PAGE_SIZE,
                                  order_by=order_by, page_token=token)
        yield from page
        seen += len(page)
        token = page.token
        if not token:
            return
        if on_page:
            on_page(seen)

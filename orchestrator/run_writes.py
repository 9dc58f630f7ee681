"""The MLflow writes of a sweep (layout in docs/CONTRACTS.md), made only from the Ray driver.

`SweepTracker` owns the runs: one parent run per sweep (found again by its tags on reruns), one
child run per trial hash (found again by parent + hash, so no sequence of interruptions makes a
duplicate); the claims on them are claims.py's, the Tune callback that feeds it is
tune_callback.py's. Ray's own MLflowLoggerCallback is not used: it makes flat runs, logs one
key per call and duplicates runs after a restore.

Metrics go through `MlflowClient.log_batch` in chunks of MLflow's per-call limits. Each report
carries the timestamp the worker stamped on it, so re-sending a report after a crash writes
identical rows (which the SQL store ignores); the tag `scalelab.logged_step` records the last
step fully written so replays after a resume are skipped outright.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from trainer.config import UserError

from . import sweep_answer
from .claims import (CLAIM_SETTLE_S, SCHEDULED, Claims, held_by_other, lease_seconds, new_owner_id,
                     tags_held_by_other)
from .layout import (ARTIFACT_DIR, CONFIG_ARTIFACT, MULTIPLIER_COLUMNS, MULTIPLIERS_ARTIFACT, OUTCOME_FAILED,
                     RESULTS_TABLE_ARTIFACT, SWEEP_ARTIFACT, KIND_SWEEP, KIND_TRIAL, TAG_BEST_RUN, TAG_BEST_TRIAL,
                     TAG_CODE, TAG_ERROR, TAG_FROM_STUDY, TAG_GIT_COMMIT, TAG_HASH, TAG_HEARTBEAT, TAG_IDENTITY,
                     TAG_KIND, TAG_LABEL, TAG_LOGGED_ARTIFACTS, TAG_LOGGED_STEP, TAG_MODE, TAG_NOTE, TAG_OPTUNA_STUDY,
                     TAG_OUTCOME, TAG_OWNER, TAG_PARENT, TAG_RAY_JOB, TAG_REPLACES, TAG_RUN_NAME, TAG_SWEEP,
                     TAG_TRAINING_STARTED,
                     quote as _quote, search_all, sqlite_lock, sqlite_path, unfinished_replacements)
from .trial import IDENTITY_VERSION, parametrization_label

# MLflow's limits per log_batch call (mlflow.utils.validation).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_TAG_CHARS = 8000


# --- small helpers ------------------------------------------------------------------------

# Set by `scalelab submit` (code_env): the job's upload has no .git to ask.
CODE_VERSION_ENV, GIT_COMMIT_ENV = "SCALELAB_CODE_VERSION", "SCALELAB_GIT_COMMIT"
# Ray sets this in a Ray Job's driver: the job's config, whose metadata names its submission id.
RAY_JOB_CONFIG_ENV, RAY_JOB_ID_KEY = "RAY_JOB_CONFIG_JSON_ENV_VAR", "job_submission_id"


def _git(*args: str) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def code_version() -> str:
    """`git describe` of the source tree (+ '-dirty'), else SCALELAB_CODE_VERSION (set by
    `scalelab submit`, whose upload has no .git), else the package version."""
    if os.environ.get(CODE_VERSION_ENV):
        return os.environ[CODE_VERSION_ENV]
    described = _git("describe", "--always", "--dirty", "--tags")
    if described:
        return described
    try:
        return f"scalelab-{version('scalelab')}"
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    """The full commit hash of the source tree (TAG_GIT_COMMIT; code_version says whether the
    tree was dirty), else SCALELAB_GIT_COMMIT (set by `scalelab submit`), else None."""
    return os.environ.get(GIT_COMMIT_ENV) or _git("rev-parse", "HEAD")


def code_env() -> dict[str, str]:
    """What a Ray Job needs in its environment to name the code it runs (no .git travels)."""
    commit = git_commit()
    return {CODE_VERSION_ENV: code_version(), **({GIT_COMMIT_ENV: commit} if commit else {})}


def ray_job_id() -> str | None:
    """The submission id of the Ray Job this process is the driver of, else None."""
    try:
        config = json.loads(os.environ.get(RAY_JOB_CONFIG_ENV) or "{}")
    except ValueError:
        return None
    job = (config.get("metadata") or {}).get(RAY_JOB_ID_KEY) if isinstance(config, dict) else None
    return str(job) if job else None


def trial_note(trial, sweep: str) -> str:
    """The one line the MLflow UI shows as a trial run's description."""
    return f"{trial.label} — sweep {sweep}"


def flat_params(cfg) -> dict[str, str]:
    """Every TrainConfig field as an MLflow param (lists/dicts as JSON)."""
    out = {}
    for key, value in cfg.model_dump().items():
        out[key] = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)
    return out


def numeric_metrics(report: dict) -> dict[str, float]:
    """The numeric keys of a trainer report (drops `status`, the `final` flag and non-numbers)."""
    return {k: float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class ChildRun:
    run_id: str
    logged_step: int = -1          # last step whose metrics are all in MLflow
    outcome: str | None = None
    n_params: int = 0              # params stored; fewer than expected after a crash in setup
    owner: str = ""                # TAG_OWNER: the invocation that claimed the trial
    heartbeat_ms: int = 0          # TAG_HEARTBEAT
    status: str = "RUNNING"        # the run's MLflow status (SCHEDULED while its trial waits)
    replacement: str | None = None  # the run made to replace this claim's run, once created (a retried swap reuses it)

    def held_by_other(self, me: str, now_ms: int, lease_s: float) -> bool:
        return held_by_other(self.owner, self.heartbeat_ms, me, now_ms, lease_s)

    def is_placeholder(self) -> bool:
        """A claim's run, queued, that holds nothing yet: no params, metrics or outcome."""
        return self.status == SCHEDULED and self.n_params == 0 and self.logged_step < 0 and self.outcome is None


# --- the tracker ------------------------------------------------------------------------------

class SweepTracker(Claims):
    """Parent and child runs of one sweep in one experiment (and the claims on them, claims.py)."""

    def __init__(self, tracking_uri: str, experiment: str, sweep: str, mode: str, from_study: str | None = None):
        self.tracking_uri, self.sweep, self.mode = tracking_uri, sweep, mode
        self.from_study = from_study      # the study a grid sweep's base came from (links tuning to transfer)
        self.code_version = code_version()
        # Where this invocation's code and job are: on every run it creates or (re)starts.
        self.provenance = {TAG_CODE: self.code_version, TAG_GIT_COMMIT: git_commit(), TAG_RAY_JOB: ray_job_id()}
        self.provenance = {k: v for k, v in self.provenance.items() if v}
        self.owner = new_owner_id()
        self.claimed: list[str] = []      # run ids this invocation claimed (trials, or the parent)
        self.sweep_claimed = False        # the claim is on the parent run (search sweeps)
        with sqlite_lock(tracking_uri):  # MLflow creates a new database's schema with its client
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.experiment_id = self._experiment_id(experiment)
            self.parent_id = self._parent_run()
        self.children: dict[str, ChildRun] = self._load_children()

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage != "active":
                raise UserError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments "
                                "restore) or set another `experiment:` in the sweep file")
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location_for(self.tracking_uri))

    def _search(self, filter_string: str, order_by: list[str] | None = None) -> list:
        return list(search_all(self.client, self.experiment_id, filter_string, order_by))

    def _oldest_first(self, filter_string: str) -> list:
        """Runs by start time, then run id: every reader agrees which one is the oldest."""
        return sorted(self._search(filter_string), key=lambda r: (r.info.start_time, r.info.run_id))

    def _parent_run(self) -> str:
        query = f"tags.`{TAG_KIND}` = {_quote(KIND_SWEEP)} and tags.`{TAG_SWEEP}` = {_quote(self.sweep)}"
        found = self._oldest_first(query)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.set_tags(run_id, self.provenance)
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=self.sweep, tags={
            TAG_KIND: KIND_SWEEP, TAG_SWEEP: self.sweep, TAG_MODE: self.mode, **self.provenance})
        # Another invocation may have created one at the same time: the oldest wins, ours goes.
        # (SQLite: we hold the database's lock, nobody else can have.)
        if sqlite_path(self.tracking_uri) is None:
            time.sleep(CLAIM_SETTLE_S)
        oldest = self._oldest_first(query)[0].info.run_id
        if oldest != run.info.run_id:
            self.client.delete_run(run.info.run_id)
        return oldest

    def _load_children(self, drop_unfinished_swaps: bool = False) -> dict[str, ChildRun]:
        """The run of each trial hash: the oldest. With `drop_unfinished_swaps` (claims, which
        hold the SQLite lock), a run made to replace a claim's run that still exists is deleted
        unless a live invocation other than this one holds its claim (it may be mid-swap,
        `_replace_claimed_run`): that swap was cut short by a crash, and the old run holds."""
        children: dict[str, ChildRun] = {}
        runs = self._oldest_first(f"tags.`{TAG_PARENT}` = {_quote(self.parent_id)}")
        strays = unfinished_replacements(runs)
        now, lease = int(time.time() * 1000), lease_seconds()
        for run in runs:
            tags = run.data.tags
            replaced = strays.get(run.info.run_id)
            if replaced is not None:  # mid-swap or cut short: the old run is the trial's and holds its claim
                if drop_unfinished_swaps and not tags_held_by_other(replaced, "", now, lease):
                    try:
                        self.client.delete_run(run.info.run_id)
                    except Exception:  # noqa: BLE001 - MLflow unreachable: readers skip it, the next claim retries
                        pass
                continue
            trial_hash = tags.get(TAG_HASH)
            if trial_hash and trial_hash not in children:  # the oldest run of a hash is the one
                children[trial_hash] = ChildRun(run.info.run_id, int(tags.get(TAG_LOGGED_STEP, -1)),
                                                tags.get(TAG_OUTCOME), n_params=len(run.data.params),
                                                owner=tags.get(TAG_OWNER, ""),
                                                heartbeat_ms=int(tags.get(TAG_HEARTBEAT) or 0),
                                                status=run.info.status)
        return children

    def _identity_tags(self, trial) -> dict[str, str]:
        return {TAG_PARENT: self.parent_id, TAG_KIND: KIND_TRIAL, TAG_HASH: trial.hash,
                TAG_IDENTITY: str(IDENTITY_VERSION), TAG_SWEEP: self.sweep,
                TAG_MODE: self.mode, TAG_LABEL: trial.label, TAG_NOTE: trial_note(trial, self.sweep),
                **({TAG_FROM_STUDY: self.from_study} if self.from_study else {}), **self.provenance}

    def refresh(self) -> None:
        """Re-read the children (Tune works on a copy of the callback, hence of this tracker)."""
        self.children = self._load_children()

    def child_runs(self) -> list:
        """Full MLflow runs of this sweep's trials (metrics included)."""
        return self._search(f"tags.`{TAG_PARENT}` = {_quote(self.parent_id)}")

    # --- trial runs ---
    def start_child(self, trial, n_params: int | None) -> ChildRun:
        """Training of `trial` begins: create its run; params and CONFIG_ARTIFACT are written once.

        A grid trial's claim made its run when the sweep started (SCHEDULED, empty). MLflow
        cannot move a run's start time (UpdateRun sets status, end time and name only), so that
        run is replaced now by one that starts now (`_replace_claimed_run`): the UI's start time
        and Duration are the training's. A run that holds results of an earlier attempt is kept
        and moved back to RUNNING (`mark_running`): its start is the first attempt's."""
        child = self.children.get(trial.hash)
        if child is not None and child.is_placeholder():
            self._replace_claimed_run(child, trial)
        elif child is not None:
            self.mark_running(child)
        else:
            # One call creates the run with the tags that identify it: no half-identified runs.
            now = int(time.time() * 1000)
            run = self.client.create_run(self.experiment_id, run_name=trial.label, start_time=now,
                                         tags={**self._identity_tags(trial), TAG_TRAINING_STARTED: str(now)})
            child = self.children[trial.hash] = ChildRun(run.info.run_id)
        params = flat_params(trial.config)
        params["parametrization"] = parametrization_label(trial.config)
        if n_params is not None:
            params["n_params"] = str(int(n_params))
        if child.n_params < len(params):  # new, or a crash cut its setup short (re-logging is a no-op)
            self.log_text(child.run_id, yaml.safe_dump(trial.config.model_dump(), sort_keys=True), CONFIG_ARTIFACT)
            self.log_params(child.run_id, params)
            child.n_params = len(params)
        return child

    def _replace_claimed_run(self, child: ChildRun, trial) -> None:
        """Swap the claim's empty run for one that starts now, with the same tags (identity and
        claim: owner, heartbeat) plus TAG_REPLACES, then delete the old one. A rival reading the
        sweep in between sees two runs of the hash, both with our live claim, and the older one
        wins: either way the trial is ours. On SQLite the swap holds the database's lock, as
        claims do. A crash between the two calls leaves the new run beside the old one:
        `_load_children` deletes it (the old run still holds the claim)."""
        old = child.run_id
        with sqlite_lock(self.tracking_uri):
            if child.replacement is None:  # (a retry after an outage between the two calls reuses it)
                tags = {k: v for k, v in self.client.get_run(old).data.tags.items() if k != TAG_RUN_NAME}
                now = int(time.time() * 1000)
                child.replacement = self.client.create_run(
                    self.experiment_id, run_name=trial.label, start_time=now, tags={
                        **tags, **self._identity_tags(trial), TAG_TRAINING_STARTED: str(now), TAG_REPLACES: old,
                    }).info.run_id
            self.client.delete_run(old)
        child.run_id, child.status, child.replacement = child.replacement, "RUNNING", None
        self.move_claim(old, child.run_id)

    def mark_running(self, child: ChildRun) -> None:
        """The trial's training (re)starts: RUNNING, with this invocation's provenance."""
        self.client.update_run(child.run_id, status="RUNNING")
        self.set_tags(child.run_id, {**self.provenance, TAG_TRAINING_STARTED: str(int(time.time() * 1000))})
        child.status = "RUNNING"

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in sorted(params.items())]
        for part in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=part, synchronous=True)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        items = [RunTag(k, str(v)[:MAX_TAG_CHARS]) for k, v in sorted(tags.items())]
        for part in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=part, synchronous=True)

    def log_changed_metrics(self, run_id: str, values: dict[str, float]) -> None:
        """Log the values that differ from the run's latest ones (at step 0): re-running a
        finished sweep adds no rows to the metric histories."""
        current = self.client.get_run(run_id).data.metrics
        now = int(time.time() * 1000)
        changed = [Metric(k, float(v), now, 0) for k, v in sorted(values.items()) if current.get(k) != float(v)]
        for part in chunks(changed, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=part, synchronous=True)

    def log_report(self, child: ChildRun, report: dict, timestamp_ms: int) -> bool:
        """Write one trainer report at its step; False when that step is already in MLflow."""
        step = int(report["step"])
        if step <= child.logged_step:
            return False
        metrics = [Metric(k, v, timestamp_ms, step) for k, v in sorted(numeric_metrics(report).items())]
        done_tag = RunTag(TAG_LOGGED_STEP, str(step))
        # The logged-step tag rides in the last call: once it is stored, the whole step is.
        parts = list(chunks(metrics, MAX_METRICS_PER_BATCH - 1)) or [[]]
        for i, part in enumerate(parts):
            tags = [done_tag] if i == len(parts) - 1 else []
            self.client.log_batch(child.run_id, metrics=part, tags=tags, synchronous=True)
        child.logged_step = step
        return True

    def finish_child(self, child: ChildRun, outcome: str, error: str | None = None,
                     multipliers: list[dict] | None = None) -> None:
        if multipliers is not None:
            self.log_text(child.run_id, multipliers_csv(multipliers), MULTIPLIERS_ARTIFACT)
        self.client.set_tag(child.run_id, TAG_OUTCOME, outcome)
        if error is not None:
            self.client.set_tag(child.run_id, TAG_ERROR, error[-MAX_TAG_CHARS:])
        elif child.outcome == OUTCOME_FAILED:  # a failed trial that now succeeded: drop the old error
            try:
                self.client.delete_tag(child.run_id, TAG_ERROR)
            except Exception:  # noqa: BLE001 - the tag may not exist; nothing to clean then
                pass
        child.outcome = outcome
        self.client.set_terminated(child.run_id, "FAILED" if outcome == OUTCOME_FAILED else "FINISHED")

    # --- the parent ---
    def finish_parent(self, log_cost: bool = True) -> dict[str, float]:
        """Record the tuning cost (trials run, their summed FLOPs) and close the parent run."""
        cost = {}
        if log_cost:
            runs = [r for r in self.child_runs() if r.data.tags.get(TAG_OUTCOME)]
            flops = sum(r.data.metrics.get("flops", 0.0) for r in runs
                        if math.isfinite(r.data.metrics.get("flops", 0.0)))
            cost = {"tuning_trials": float(len(runs)), "tuning_flops": float(flops)}
            self.log_changed_metrics(self.parent_id, cost)
        self.client.set_terminated(self.parent_id, "FINISHED")
        return cost

    def record_answer(self, spec, rows: list[dict]) -> list[str]:
        """The sweep's answer on its parent run (sweep_answer.py): the sweep file, the results
        table `rows` (results_table.py) as an MLflow table, the best final val loss overall and
        per parametrization × width, the sweep's settings as params. Every `scalelab run`
        rewrites the artifacts and logs only metrics that changed. MLflow params cannot change:
        returns the names of those whose value in the sweep file differs from the recorded one."""
        run_id = self.parent_id
        if os.path.isfile(spec.source):
            self.log_text(run_id, Path(spec.source).read_text(encoding="utf-8"), SWEEP_ARTIFACT)
        self.log_text(run_id, json.dumps(sweep_answer.table(rows)), RESULTS_TABLE_ARTIFACT)
        run = self.client.get_run(run_id)
        shown = json.loads(run.data.tags.get(TAG_LOGGED_ARTIFACTS) or "[]")
        tags = {TAG_OPTUNA_STUDY: spec.search.study_name if spec.search else None, TAG_NOTE: spec.description}
        entry = {"path": RESULTS_TABLE_ARTIFACT, "type": "table"}  # what makes the UI show it as a table
        if entry not in shown:
            tags[TAG_LOGGED_ARTIFACTS] = json.dumps([*shown, entry])
        best = sweep_answer.best_row(rows)
        if best is not None:
            tags.update({TAG_BEST_TRIAL: best["label"], TAG_BEST_RUN: best["run_id"]})
        self.set_tags(run_id, {k: v for k, v in tags.items() if v})
        self.log_changed_metrics(run_id, sweep_answer.best_metrics(rows))
        params = sweep_answer.sweep_params(spec)
        recorded = run.data.params
        self.log_params(run_id, {k: v for k, v in params.items() if k not in recorded})
        return sorted(k for k, v in params.items() if k in recorded and recorded[k] != v)


def artifact_location_for(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite-tracked experiment live next to the database file, not in the
    working directory of whoever created the experiment; servers choose their own."""
    db_path = sqlite_path(tracking_uri)
    if db_path is None:
        return None
    return (Path(db_path).resolve().parent / ARTIFACT_DIR).as_uri()


def multipliers_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MULTIPLIER_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()

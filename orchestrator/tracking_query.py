"""Read-only questions to MLflow about a sweep's experiment (shared by `plan` and the runner).
Nothing here creates a database, an experiment or a run."""
from __future__ import annotations

import os

from trainer.config import UserError

from .layout import (DONE_OUTCOMES, OUTCOME_FINISHED, KIND_SWEEP, KIND_TRIAL, TAG_HASH, TAG_IDENTITY, TAG_KIND, TAG_OUTCOME,
                     TAG_PARENT, TAG_SWEEP, probe_tracking, quote, search_all, sqlite_lock, sqlite_path,
                     without_unfinished_replacements)
from .trial import IDENTITY_VERSION
from .uri_auth import redact


def _read_client(tracking_uri: str):
    """An MlflowClient on an existing store, or None when the SQLite file is not there yet
    (nothing recorded; the database is never created as a side effect)."""
    db = sqlite_path(tracking_uri)
    if db is not None and not os.path.isfile(db):
        return None
    from mlflow.tracking import MlflowClient  # here and below: seconds to import, only with a store to read

    with sqlite_lock(tracking_uri):  # a `scalelab run` may be creating its schema right now
        return MlflowClient(tracking_uri=tracking_uri)


def _search(tracking_uri: str, experiment: str, where: str) -> list | None:
    """The runs of `experiment` that match `where` (metrics, params and tags included); None when
    the store or the experiment is not there (neither is created)."""
    probe_tracking(tracking_uri)  # a dead server in seconds, before MLflow's import (seconds more)
    from mlflow.exceptions import MlflowException  # mlflow: seconds to import; not for --help or validate

    try:
        client = _read_client(tracking_uri)
        found = client.get_experiment_by_name(experiment) if client else None
        return None if found is None else list(search_all(client, found.experiment_id, where))
    except MlflowException as err:
        raise UserError(f"cannot read MLflow at {redact(tracking_uri)}: {err.message}") from None


def finished_hashes(tracking_uri: str, experiment: str) -> dict[str, str]:
    """{trial_hash: outcome} of the trial runs in `experiment` whose `scalelab.outcome` tag is
    finished or diverged (finished wins when both exist). A missing SQLite file or experiment
    means nothing is done; the database is never created as a side effect. Runs recorded under
    an older trial-identity rule are refused with the command that re-keys them: matching them
    by hash would silently rerun every finished trial."""
    done: dict[str, str] = {}
    legacy = 0
    for run in _search(tracking_uri, experiment, f"tags.`{TAG_KIND}` = {quote(KIND_TRIAL)}") or []:
        tags = run.data.tags
        if tags.get(TAG_IDENTITY) != str(IDENTITY_VERSION):
            legacy += 1
        elif tags.get(TAG_HASH) and tags.get(TAG_OUTCOME) in DONE_OUTCOMES and done.get(tags[TAG_HASH]) != OUTCOME_FINISHED:
            done[tags[TAG_HASH]] = tags[TAG_OUTCOME]
    if legacy:
        uri = redact(tracking_uri)
        raise UserError(
            f"experiment {experiment!r} at {uri} holds {legacy} trial run(s) recorded under an older "
            f"trial identity (before version {IDENTITY_VERSION}: runtime options such as threads or cache_dir "
            f"were part of the hash), so finished trials would not be recognised. Re-key them once with "
            f"`scalelab migrate {experiment} --tracking-uri {uri}` (add --storage DIR to carry "
            "checkpoints along; --dry-run shows what changes), or use a new `experiment:` name")
    return done


def sweep_runs(tracking_uri: str, experiment: str, sweep: str) -> list:
    """The trial runs of sweep `sweep` itself (children of its parent run: the oldest run tagged
    as that sweep, as `scalelab run` finds it), metrics included; [] when it has none yet."""
    parents = _search(tracking_uri, experiment,
                      f"tags.`{TAG_KIND}` = {quote(KIND_SWEEP)} and tags.`{TAG_SWEEP}` = {quote(sweep)}") or []
    parent = min(parents, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
    if parent is None:
        return []
    return without_unfinished_replacements(
        _search(tracking_uri, experiment, f"tags.`{TAG_PARENT}` = {quote(parent.info.run_id)}") or [])


def trial_runs(tracking_uri: str, experiment: str, sweep: str | None = None) -> list | None:
    """The trial runs of `experiment` (only those tagged as sweep `sweep` when given), metrics and
    params included; None when the experiment is not in the store (none is created)."""
    where = f"tags.`{TAG_KIND}` = {quote(KIND_TRIAL)}"
    if sweep:
        where += f" and tags.`{TAG_SWEEP}` = {quote(sweep)}"
    runs = _search(tracking_uri, experiment, where)
    return None if runs is None else without_unfinished_replacements(runs)

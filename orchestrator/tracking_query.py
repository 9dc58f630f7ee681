"""Read-only questions to MLflow about a sweep's experiment (shared by `plan` and the runner)."""
from __future__ import annotations

import os

from trainer.config import UserError

from .layout import (DONE_OUTCOMES, KIND_TRIAL, TAG_HASH, TAG_IDENTITY, TAG_KIND, TAG_OUTCOME, probe_tracking, quote,
                     search_all, sqlite_lock, sqlite_path)
from .spec import IDENTITY_VERSION


def finished_hashes(tracking_uri: str, experiment: str) -> dict[str, str]:
    """{trial_hash: outcome} of the trial runs in `experiment` whose `scalelab.outcome` tag is
    finished or diverged (finished wins when both exist). A missing SQLite file or experiment
    means nothing is done; the database is never created as a side effect. Runs recorded under
    an older trial-identity rule are refused with the command that re-keys them: matching them
    by hash would silently rerun every finished trial."""
    db = sqlite_path(tracking_uri)
    if db is not None and not os.path.isfile(db):
        return {}
    probe_tracking(tracking_uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        with sqlite_lock(tracking_uri):  # a `scalelab run` may be creating its schema right now
            client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return {}
        done: dict[str, str] = {}
        legacy = 0
        for run in search_all(client, found.experiment_id, f"tags.`{TAG_KIND}` = {quote(KIND_TRIAL)}"):
            tags = run.data.tags
            if tags.get(TAG_IDENTITY) != str(IDENTITY_VERSION):
                legacy += 1
            elif tags.get(TAG_HASH) and tags.get(TAG_OUTCOME) in DONE_OUTCOMES and done.get(tags[TAG_HASH]) != "finished":
                done[tags[TAG_HASH]] = tags[TAG_OUTCOME]
    except MlflowException as err:
        raise UserError(f"cannot read MLflow at {tracking_uri}: {err.message}") from None
    if legacy:
        raise UserError(
            f"experiment {experiment!r} at {tracking_uri} holds {legacy} trial run(s) recorded under an older "
            f"trial identity (before version {IDENTITY_VERSION}: runtime options such as threads or cache_dir "
            f"were part of the hash), so finished trials would not be recognised. Re-key them once with "
            f"`scalelab migrate {experiment} --tracking-uri {tracking_uri}` (add --storage DIR to carry "
            "checkpoints along; --dry-run shows what changes), or use a new `experiment:` name")
    return done

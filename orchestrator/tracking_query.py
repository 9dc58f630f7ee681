"""Read-only questions to MLflow about a sweep's experiment (shared by `plan` and the runner)."""
from __future__ import annotations

import os

from trainer.config import UserError

from .from_study import sqlite_path

DONE_OUTCOMES = ("finished", "diverged")  # a diverged trial is a result too: do not rerun it


def finished_hashes(tracking_uri: str, experiment: str) -> dict[str, str]:
    """{trial_hash: outcome} of the trial runs in `experiment` whose `scalelab.outcome` tag is
    finished or diverged (finished wins when both exist). A missing SQLite file or experiment
    means nothing is done; the database is never created as a side effect."""
    db = sqlite_path(tracking_uri)
    if db is not None and not os.path.isfile(db):
        return {}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return {}
        done: dict[str, str] = {}
        for outcome in reversed(DONE_OUTCOMES):  # "finished" last, so it overwrites
            for run in _all_runs(client, found.experiment_id, f"tags.`scalelab.outcome` = '{outcome}'"):
                trial = run.data.tags.get("scalelab.trial_hash")
                if trial:
                    done[trial] = outcome
        return done
    except MlflowException as err:
        raise UserError(f"cannot read MLflow at {tracking_uri}: {err.message}") from None


def _all_runs(client, experiment_id: str, filter_string: str):
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string,
                                  max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return

"""The MLflow layout of a sweep (docs/CONTRACTS.md, "MLflow layout"): tag names, outcomes and
artifact columns, in one place for the writer (orchestrator) and the readers (plan, analysis).
No heavy imports: `scalelab plan` and the analysis load this without Ray."""
from __future__ import annotations

TAG_KIND = "scalelab.kind"                    # "sweep" (parent run) | "trial" (child run)
TAG_SWEEP = "scalelab.sweep"
TAG_HASH = "scalelab.trial_hash"
TAG_IDENTITY = "scalelab.identity_version"    # the trial-identity rule TAG_HASH was computed with
TAG_PREVIOUS_HASH = "scalelab.trial_hash_v1"  # set by `scalelab migrate`: the hash before re-keying
TAG_CODE = "scalelab.code_version"
TAG_OUTCOME = "scalelab.outcome"
TAG_ERROR = "scalelab.error"
TAG_MODE = "scalelab.mode"
TAG_LABEL = "scalelab.label"
TAG_LOGGED_STEP = "scalelab.logged_step"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"

DONE_OUTCOMES = ("finished", "diverged")  # a diverged trial is a result too: do not rerun it

MULTIPLIER_COLUMNS = ("layer", "role", "block", "kind", "mean", "rms", "min", "max", "size")


def quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + value.replace("'", "\\'") + "'"


def search_all(client, experiment_id: str, filter_string: str, order_by: list[str] | None = None):
    """Every run matching the filter, through MLflow's pages."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  order_by=order_by, page_token=token)
        yield from page
        token = page.token
        if not token:
            return

"""`scalelab ui`: the MLflow UI over the runs the other commands track (the links a sweep prints
are in links.py). The tracking URI follows the one precedence rule of
`layout.resolve_tracking_uri`.

`scalelab ui EXPERIMENT` opens the answer: the experiment's trial runs sorted by final
validation loss, with the loss, the outcome and the swept parameters as columns. MLflow 3's run
list takes its sort and filter from the URL (searchFilter, orderByKey, orderByAsc) but its
columns only from local storage or from a shared view: an experiment tag
`mlflow.sharedViewState.<key>` holding the view as JSON, opened by `?viewStateShareKey=<key>`
(what the UI's own "Share" writes). So the view is written as that tag; where the store refuses
the write, the URL carries the sort and the filter alone."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.parse

from trainer import metrics
from trainer.config import UserError

from .layout import (ARTIFACT_DIR, KIND_TRIAL, TAG_KIND, TAG_OUTCOME, quote, resolve_tracking_uri, sqlite_path,
                     tracking_uri_help)
from .tracking_query import trial_runs
from .uri_auth import redact

DEFAULT_PORT = 5000
SHARED_VIEW_TAG = "mlflow.sharedViewState."   # the MLflow UI's prefix of a shared view's experiment tag
VIEW_KEY = "scalelab-by-loss"                  # our view: SHARED_VIEW_TAG + VIEW_KEY
LOSS = metrics.FINAL_VAL_LOSS


def register(subparsers: argparse._SubParsersAction) -> None:
    ui = subparsers.add_parser(
        "ui", help="browse the tracked runs in the MLflow UI (served on 127.0.0.1)",
        description="Serve the MLflow UI over the local tracking store (sqlite:///mlflow.db in the "
                    "working directory by default) on 127.0.0.1 and print its URL; with an http(s) "
                    "tracking URI (an MLflow server) just print that URL. With EXPERIMENT the URL opens "
                    "its trials sorted by final_val_loss, with the loss, the outcome and the swept "
                    "parameters as columns (saved on the experiment as the shared view "
                    f"'{VIEW_KEY}'). Ctrl-C stops it.")
    ui.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                    help="open this experiment's trials sorted by final_val_loss, with the loss, the outcome "
                         "and the swept parameters as columns (e.g. `scalelab ui quickstart`)")
    ui.add_argument("--tracking-uri", default=None, help=tracking_uri_help(sweep_file=False))
    ui.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    ui.set_defaults(func=run_ui)


def server_command(uri: str, port: int) -> list[str]:
    """`mlflow server` over `uri` on 127.0.0.1:port, one worker, with the artifact root the
    writer uses next to an SQLite database (layout.ARTIFACT_DIR). The URI itself goes in its
    environment (MLFLOW_BACKEND_STORE_URI, set by run_ui): a password stays off the process list."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--workers", "1",
           "--host", "127.0.0.1", "--port", str(port)]
    db = sqlite_path(uri)
    if db:
        cmd += ["--default-artifact-root", os.path.join(os.path.dirname(os.path.abspath(db)), ARTIFACT_DIR)]
    return cmd


def column(kind: str, key: str) -> str:
    """A run-list column (and sort key) as the MLflow UI names it: metrics.`final_val_loss`."""
    return f"{kind}.`{key}`"


def trials_filter() -> str:
    return f"tags.`{TAG_KIND}` = {quote(KIND_TRIAL)}"


def swept_params(runs: list) -> list[str]:
    """The params that differ between the runs, sorted (a search sweep's sampled ones included)."""
    values: dict[str, set] = {}
    for run in runs:
        for key, value in run.data.params.items():
            values.setdefault(key, set()).add(value)
    return sorted(k for k, v in values.items() if len(v) > 1)


def loss_view(swept: list[str]) -> dict:
    """The run list of the answer: the trials (not their parent), best loss first, with the loss,
    the outcome and the swept params as columns."""
    loss, outcome = column("metrics", LOSS), column("tags", TAG_OUTCOME)
    return {"searchFilter": trials_filter(), "orderByKey": loss, "orderByAsc": True,
            "selectedColumns": [loss, outcome] + [column("params", p) for p in swept],
            # widths apply to the columns the order names: the loss after the run's name, wide enough for its digits
            "columnOrder": [column("attributes", "Run Name"), loss, outcome],
            "columnWidths": {loss: 150, outcome: 150}}


def loss_view_path(uri: str, experiment: str) -> str:
    """The URL path (after the server's address) of `experiment`'s loss view, written as a shared
    view on the experiment; without write access, the sort and filter in the URL alone."""
    from mlflow.exceptions import MlflowException  # seconds to import: only when an experiment is named
    from mlflow.tracking import MlflowClient

    runs = trial_runs(uri, experiment)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if runs is None or found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UserError(f"no experiment {experiment!r} at {redact(uri)}; experiments there: "
                        f"{', '.join(names) or 'none'} (the name is the sweep file's `experiment:`, else its `name:`)")
    runs_page = f"/#/experiments/{found.experiment_id}/runs"
    view = loss_view(swept_params(runs))
    try:
        client.set_experiment_tag(found.experiment_id, SHARED_VIEW_TAG + VIEW_KEY, json.dumps(view))
    except MlflowException as err:
        print(f"scalelab ui: could not save the view on the experiment ({err.message.splitlines()[0][:200]}); "
              "the link sorts and filters, add the columns in the UI", file=sys.stderr)
        query = {k: str(view[k]).lower() if isinstance(view[k], bool) else view[k]
                 for k in ("searchFilter", "orderByKey", "orderByAsc")}
        return f"{runs_page}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
    return f"{runs_page}?viewStateShareKey={VIEW_KEY}"


def run_ui(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    if db and not os.path.exists(db):
        raise UserError(f"no MLflow database at {db}: run a sweep first (`scalelab run SWEEP.yaml`) "
                        "or pass --tracking-uri")
    path = loss_view_path(uri, args.experiment) if args.experiment else ""
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {redact(uri).rstrip('/')}{path}")
        return 0
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_BACKEND_STORE_URI=uri)
    print(f"MLflow UI: http://127.0.0.1:{args.port}{path}  (runs from {redact(uri)}; Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(server_command(uri, args.port), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0

"""`scalelab ui`: the MLflow UI over the runs the other commands track, and the links from a sweep
to where researchers browse it (MLflow UI, optuna-dashboard, Ray job metadata). The tracking URI
follows the one precedence rule of `layout.resolve_tracking_uri`."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import uri_auth
from .layout import ARTIFACT_DIR, resolve_tracking_uri, sqlite_path, tracking_uri_help

DEFAULT_PORT = 5000


def register(subparsers: argparse._SubParsersAction) -> None:
    ui = subparsers.add_parser(
        "ui", help="browse the tracked runs in the MLflow UI (served on 127.0.0.1)",
        description="Serve the MLflow UI over the local tracking store (sqlite:///mlflow.db in the "
                    "working directory by default) on 127.0.0.1 and print its URL; with an http(s) "
                    "tracking URI (an MLflow server) just print that URL. Ctrl-C stops it.")
    ui.add_argument("--tracking-uri", default=None, help=tracking_uri_help(sweep_file=False))
    ui.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    ui.set_defaults(func=run_ui)


def server_command(uri: str, port: int) -> list[str]:
    """`mlflow server` over `uri` on 127.0.0.1:port, one worker, with the artifact root the
    writer uses next to an SQLite database (layout.ARTIFACT_DIR)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--workers", "1",
           "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", uri]
    db = sqlite_path(uri)
    if db:
        cmd += ["--default-artifact-root", os.path.join(os.path.dirname(os.path.abspath(db)), ARTIFACT_DIR)]
    return cmd


def run_ui(args: argparse.Namespace) -> int:
    from trainer.config import UserError

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {uri.rstrip('/')}")
        return 0
    db = sqlite_path(uri)
    if db and not os.path.exists(db):
        raise UserError(f"no MLflow database at {db}: run a sweep first (`scalelab run SWEEP.yaml`) "
                        "or pass --tracking-uri")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    print(f"MLflow UI: http://127.0.0.1:{args.port}  (runs from {uri}; Ctrl-C stops it)", flush=True)
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


# --- links from a sweep to where it is browsed ----------------------------------------------

def experiment_url(tracking_uri: str, experiment: str, timeout: float = 5.0) -> str:
    """The MLflow UI page of `experiment` on an http(s) tracking server: `<server>/#/experiments/<id>`
    once the experiment exists, else the server URL and the experiment's name (also when the
    server does not answer within `timeout`: no MLflow client retries here)."""
    import json
    import urllib.parse
    import urllib.request

    base = tracking_uri.rstrip("/")
    query = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}",
                                         headers=uri_auth.basic_auth_header())
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            exp_id = json.load(answer)["experiment"]["experiment_id"]
        return f"{base}/#/experiments/{exp_id}"
    except Exception:  # noqa: BLE001 - not created yet (404) or not reachable from here
        return f"{base} (experiment {experiment!r})"


def announce_experiment(entrypoint: str, url: str) -> str:
    """A Ray Job entrypoint whose first log line names the sweep's MLflow experiment."""
    import shlex

    return f"echo {shlex.quote('MLflow experiment: ' + url)} && {entrypoint}"


def optuna_dashboard_hint(study_url: str | None) -> str | None:
    """The command that opens a search sweep's Optuna study in optuna-dashboard."""
    if not study_url:
        return None
    return f"  optuna: optuna-dashboard {study_url}   (pip install -e .[dashboard])"


def print_study_hint(study_url: str | None, out=None) -> None:
    hint = optuna_dashboard_hint(study_url)
    if hint:
        print(hint, file=out or sys.stdout, flush=True)


def tag_trial_with_run(trial, run_id: str | None) -> None:
    """Put the MLflow child run's id on an Optuna trial (user attribute `mlflow_run_id`)."""
    if trial is not None and run_id:
        trial.set_user_attr("mlflow_run_id", run_id)


def study_links(mode, tracking) -> list:
    """For a search sweep: a Tune callback that puts each trial's MLflow run id on its Optuna
    trial (user attribute `mlflow_run_id`, see `StudyRunLinker`); nothing for a grid sweep."""
    url = getattr(mode, "study_url", None)
    if not url:
        return []
    from .study_link import StudyRunLinker  # imports Ray: only `scalelab run` gets here

    return [StudyRunLinker(url, mode.search.study_name, tracking)]


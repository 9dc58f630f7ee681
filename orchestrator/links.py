"""Links from a sweep to where researchers browse it: the MLflow UI (a store's command, or a
server's experiment page), a Ray Job's first log line, and optuna-dashboard for a search
sweep's study. Plain text and one HTTP call; used by `run`, `plan`, `validate` and `submit`."""
from __future__ import annotations

import json
import shlex
import sys
import urllib.parse
import urllib.request

from . import uri_auth


def browse_hint(tracking_uri: str) -> str:
    """Where to look at the runs: the server itself, or the command that serves a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return uri_auth.redact(tracking_uri)
    return f"mlflow ui --backend-store-uri {uri_auth.redact(tracking_uri)}"


def experiment_url(tracking_uri: str, experiment: str, timeout: float = 5.0) -> str:
    """The MLflow UI page of `experiment` on an http(s) tracking server: `<server>/#/experiments/<id>`
    once the experiment exists, else the server URL and the experiment's name (also when the
    server does not answer within `timeout`: no MLflow client retries here)."""
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
    return f"echo {shlex.quote('MLflow experiment: ' + url)} && {entrypoint}"


def optuna_dashboard_hint(study_url: str | None) -> str | None:
    """The command that opens a search sweep's Optuna study in optuna-dashboard."""
    if not study_url:
        return None
    return f"  optuna: optuna-dashboard {uri_auth.redact(study_url)}   (pip install -e .[dashboard])"


def print_study_hint(study_url: str | None, out=None) -> None:
    hint = optuna_dashboard_hint(study_url)
    if hint:
        print(hint, file=out or sys.stdout, flush=True)

"""`scalelab ui`: the MLflow UI over the runs the other commands track (the links a sweep prints
are in links.py). The tracking URI follows the one precedence rule of
`layout.resolve_tracking_uri`."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from trainer.config import UserError

from .layout import ARTIFACT_DIR, resolve_tracking_uri, sqlite_path, tracking_uri_help
from .uri_auth import redact

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
    writer uses next to an SQLite database (layout.ARTIFACT_DIR). The URI itself goes in its
    environment (MLFLOW_BACKEND_STORE_URI, set by run_ui): a password stays off the process list."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--workers", "1",
           "--host", "127.0.0.1", "--port", str(port)]
    db = sqlite_path(uri)
    if db:
        cmd += ["--default-artifact-root", os.path.join(os.path.dirname(os.path.abspath(db)), ARTIFACT_DIR)]
    return cmd


def run_ui(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {redact(uri).rstrip('/')}")
        return 0
    db = sqlite_path(uri)
    if db and not os.path.exists(db):
        raise UserError(f"no MLflow database at {db}: run a sweep first (`scalelab run SWEEP.yaml`) "
                        "or pass --tracking-uri")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_BACKEND_STORE_URI=uri)
    print(f"MLflow UI: http://127.0.0.1:{args.port}  (runs from {redact(uri)}; Ctrl-C stops it)", flush=True)
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

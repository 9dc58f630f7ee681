"""`scalelab run | submit | status | logs` (registered by orchestrator/cli.py). Heavy imports
(ray, mlflow) happen inside the handlers."""
from __future__ import annotations

import argparse
import json
import os
import sys

from trainer.config import UserError

from .faults import FAULT_ENV, check_faults
from .fuse import FUSE_HELP, parse_fuse_flag
from .jobs import job_status_text, print_logs, submit_sweep
from .layout import TrackingUnreachable, resolve_tracking_uri, tracking_uri_help
from .locations import STORAGE_HELP
from .results_table import format_rows, sweep_rows, trial_rows
from .spec import load_sweep
from .tracking_query import trial_runs
from .uri_auth import redact

RUN_HELP = "run a sweep: local embedded Ray by default, or an existing cluster with --address"


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help=RUN_HELP, description=RUN_HELP + ". Trials that already "
                                "finished or diverged in the experiment are skipped; interrupted ones "
                                "resume from their last checkpoint.")
    run.add_argument("sweep", help="sweep YAML file")
    run.add_argument("--tracking-uri", help=tracking_uri_help())
    run.add_argument("--address", help="Ray cluster to use ('auto' inside a Ray Job, or ray://HOST:10001); "
                     "default: start a local Ray for this command")
    run.add_argument("--storage", default=None, help=STORAGE_HELP)
    run.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once "
                     "(default: the sweep's concurrency, else as many as the CPUs/GPUs allow)")
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    run.add_argument("--tracking-grace", type=float, default=None, metavar="SECONDS",
                     help="while MLflow is unreachable trials keep training and reports are queued; stop "
                     "the sweep (exit 1, nothing lost) after this long (default: $SCALELAB_TRACKING_GRACE, "
                     "else 1800)")
    run.add_argument("--fuse", default=None, metavar="auto|off|N", help=FUSE_HELP)
    run.set_defaults(func=cmd_run)

    submit = subparsers.add_parser("submit", help="submit a sweep to a Ray cluster as a Ray Job",
                                   description="Submit `scalelab run SWEEP --address auto` as a Ray Job; "
                                   "the working directory is uploaded (without .venv, .git, mlflow.db, "
                                   ".scalelab, reports, and what .gitignore and .scalelabignore list); files "
                                   "that look like credentials are refused. Tracking must be an MLflow "
                                   "server (http://...). Before the sweep, a tiny job checks that the "
                                   "cluster's Python imports the project.")
    submit.add_argument("sweep", help="sweep YAML file (inside the working directory)")
    _address_arg(submit)
    submit.add_argument("--tracking-uri", help="an MLflow server reachable from the cluster, e.g. "
                        "http://HOST:5000; " + tracking_uri_help())
    submit.add_argument("--storage", default=None, help="storage directory on the cluster (a shared "
                        "filesystem for multi-node clusters; default: ~/.scalelab on the driver node)")
    submit.add_argument("--max-concurrent", type=int, default=None, help="passed on to `scalelab run`")
    submit.add_argument("--fuse", default=None, metavar="auto|off|N", help="passed on to `scalelab run`")
    submit.add_argument("--working-dir", default=".", help="project directory to upload (default: .)")
    submit.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded and the "
                        "command that would run; contact no cluster")
    submit.set_defaults(func=cmd_submit)

    status = subparsers.add_parser(
        "status", help="results table of a sweep or experiment; or the state of a submitted Ray job",
        description="SWEEP.yaml or an MLflow experiment name: one row per trial read from MLflow (no Ray "
        "needed), sorted by final validation loss, the best of each parametrization × width marked *. "
        "A job id printed by `scalelab submit` (with --address or RAY_ADDRESS): that job's state; "
        "nothing: every job on the cluster.")
    status.add_argument("job_id", nargs="?", metavar="SWEEP_OR_EXPERIMENT_OR_JOB",
                        help="sweep YAML file, MLflow experiment name, or Ray job id (default: list jobs)")
    _address_arg(status)
    status.add_argument("--tracking-uri", help=tracking_uri_help())
    status.add_argument("--json", action="store_true", help="print the results rows as JSON (for scripts)")
    status.set_defaults(func=cmd_status)

    logs = subparsers.add_parser("logs", help="logs of a submitted sweep")
    logs.add_argument("job_id", help="job id printed by `scalelab submit`")
    _address_arg(logs)
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs.set_defaults(func=cmd_logs)


def _address_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None, help="Ray dashboard address, e.g. http://HEAD:8265 "
                        "(default: env RAY_ADDRESS)")


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be at least 1, got {value}")


def cmd_run(args) -> int:
    from .runner import RunOptions, TrackingOutage, run_sweep  # Ray and MLflow: seconds, which --help does not need

    check_faults(os.environ.get(FAULT_ENV))  # before anything: a typo would fail trials after their retries

    _positive(args.max_concurrent, "--max-concurrent")
    _positive(args.num_cpus, "--num-cpus")
    spec = load_sweep(args.sweep)
    if args.address:  # the cluster's machines may hold corpora this one does not
        for line in spec.missing_corpora():
            print(f"scalelab run: warning: {line}", file=sys.stderr)
    else:
        spec.check_corpora()
    opts = RunOptions(tracking_uri=args.tracking_uri, storage=args.storage, address=args.address,
                      max_concurrent=args.max_concurrent, num_cpus=args.num_cpus,
                      tracking_grace=args.tracking_grace, fuse=parse_fuse_flag(args.fuse))
    from mlflow.exceptions import MlflowException  # loaded by run_sweep anyway; not for --help
    from ray.exceptions import RayError
    from ray.tune.error import TuneError

    if args.tracking_grace is not None and args.tracking_grace < 0:
        raise UserError(f"--tracking-grace must be at least 0, got {args.tracking_grace:g}")
    try:
        summary = run_sweep(spec, opts)
    except TrackingOutage as err:
        print(f"scalelab run: {err}", file=sys.stderr)
        return 1
    except TrackingUnreachable as err:  # infrastructure (exit 1), said in one line
        print(f"scalelab run: {err}; nothing is lost: run the same command again once it answers", file=sys.stderr)
        return 1
    except (OSError, MlflowException, RayError, TuneError) as err:  # infrastructure, not the sweep
        print(f"scalelab run: infrastructure error: {type(err).__name__}: {err}\n"
              "nothing is lost: fix the problem and run the same command again", file=sys.stderr)
        return 1
    return 130 if summary.interrupted else 0


def cmd_submit(args) -> int:
    _positive(args.max_concurrent, "--max-concurrent")
    job_id = submit_sweep(args.sweep, address=args.address, tracking_uri=args.tracking_uri,
                          storage=args.storage, max_concurrent=args.max_concurrent, working_dir=args.working_dir,
                          dry_run=args.dry_run, fuse=parse_fuse_flag(args.fuse), check_python=True)
    if job_id is None:  # --dry-run
        return 0
    print(job_id)
    print(f"follow it with: scalelab logs {job_id} --follow" + (f" --address {args.address}" if args.address else ""),
          file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    rows = _results(args) if args.job_id else None
    if rows is None:
        print(job_status_text(args.address, args.job_id))
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_rows(rows))
    return 0


def _results(args) -> list[dict] | None:
    """The results rows when `job_id` names a sweep file or (without --address) an MLflow
    experiment; None for a Ray job id."""
    target = args.job_id
    if target.endswith((".yaml", ".yml")) and os.path.isfile(target):
        spec = load_sweep(target)
        return sweep_rows(resolve_tracking_uri(args.tracking_uri, spec.tracking_uri), spec)
    if args.address:  # a job id, as before the results table existed
        return None
    uri = resolve_tracking_uri(args.tracking_uri)
    runs = trial_runs(uri, target)
    if runs is not None:
        return trial_rows(runs)
    if os.environ.get("RAY_ADDRESS"):
        return None
    raise UserError(f"{target!r} is neither a sweep file nor an MLflow experiment at {redact(uri)}; for a Ray job id "
                    "pass --address http://HEAD:8265 (or set RAY_ADDRESS)")


def cmd_logs(args) -> int:
    return print_logs(args.address, args.job_id, follow=args.follow)

"""`scalelab validate` and `scalelab plan` (dry runs of sweep files; nothing is started)."""
from __future__ import annotations

import argparse
import json
import sys

from .layout import tracking_uri_help
from .locations import STORAGE_HELP, Locations
from .ui_cli import print_study_hint


def register(subparsers: argparse._SubParsersAction) -> None:
    validate = subparsers.add_parser(
        "validate", help="check sweep file(s) and count their trials",
        description="Check sweep YAML file(s): keys, types, values and every grid point. "
                    "Prints 'OK: N trials (...)' per file; exit status 2 on the first bad file.")
    validate.add_argument("sweeps", nargs="+", metavar="SWEEP.yaml")
    validate.set_defaults(func=run_validate)

    plan = subparsers.add_parser(
        "plan", help="dry run: the trials a sweep would run, their cost, which are done",
        description="List a sweep's trials with size, tokens, FLOPs, memory and time estimates, "
                    "and which are already finished in MLflow (read-only; no database is created).")
    plan.add_argument("sweep", metavar="SWEEP.yaml")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (for scripts)")
    plan.add_argument("--tracking-uri", default=None, help=tracking_uri_help())
    plan.add_argument("--storage", default=None, help=STORAGE_HELP + "; as given to `scalelab run`")
    plan.set_defaults(func=run_plan)


def run_validate(args: argparse.Namespace) -> int:
    from .spec import load_sweep

    for path in args.sweeps:
        spec = load_sweep(path)  # ConfigError -> the CLI prints it, exit 2
        spec.check_corpora()
        study_url = Locations.resolve(spec).study_url
        print(f"OK: {spec.summary(study_url)} — {path}")
        print_study_hint(study_url)
        if spec.from_study:
            taken = ", ".join(f"{k}={v!r}" for k, v in spec.from_study["params"].items())
            print(f"    from study {spec.from_study['study']!r}: {taken}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from .plan import build_plan, format_plan
    from .spec import load_sweep
    from .tracking_query import finished_hashes

    spec = load_sweep(args.sweep)
    spec.check_corpora()
    where = Locations.resolve(spec, args.tracking_uri, args.storage)
    if not args.json:
        print(f"checking MLflow at {where.tracking_uri} for finished trials ...", file=sys.stderr)
    plan = build_plan(spec, where, finished_hashes(where.tracking_uri, spec.experiment))
    if args.json:
        json.dump(plan, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(format_plan(plan))
    return 0


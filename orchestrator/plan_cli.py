"""`scalelab validate` and `scalelab plan` (dry runs of sweep files; nothing is started)."""
from __future__ import annotations

import argparse
import json
import sys

from . import tracking_query
from .fuse import FUSE_HELP, parse_fuse_flag
from .layout import tracking_uri_help
from .links import print_study_hint
from .locations import STORAGE_HELP, Locations
from .plan import build_plan, format_plan
from .preflight import analysis_warnings
from .spec import load_sweep
from .uri_auth import redact


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
    plan.add_argument("--fuse", default=None, metavar="auto|off|N", help=FUSE_HELP)
    plan.add_argument("--no-measure", action="store_true", help="do not time fused CPU packs against their "
                      "members one at a time (a few seconds per pack shape)")
    plan.set_defaults(func=run_plan)


def run_validate(args: argparse.Namespace) -> int:
    for path in args.sweeps:
        spec = load_sweep(path)  # ConfigError -> the CLI prints it, exit 2
        spec.check_corpora()
        warn_analyses("validate", path, spec)
        study_url = Locations.resolve(spec).study_url
        print(f"OK: {spec.summary(study_url)} — {path}")
        print_study_hint(study_url)
        if spec.from_study:
            taken = ", ".join(f"{k}={v!r}" for k, v in spec.from_study["params"].items())
            print(f"    from study {spec.from_study['study']!r}: {taken}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    spec = load_sweep(args.sweep)
    spec.check_corpora()
    warn_analyses("plan", args.sweep, spec)
    where = Locations.resolve(spec, args.tracking_uri, args.storage)
    if not args.json:
        print(f"checking MLflow at {redact(where.tracking_uri)} for finished trials ...", file=sys.stderr)
    done = tracking_query.finished_hashes(where.tracking_uri, spec.experiment)
    # the sweep's own results are among the experiment's: none there, none to look up
    own_runs = tracking_query.sweep_runs(where.tracking_uri, spec.experiment, spec.name) if done else []
    plan = build_plan(spec, where, done, measure=None if args.no_measure else _measure_pack, own_runs=own_runs,
                      fuse=parse_fuse_flag(args.fuse))
    if args.json:
        json.dump(plan, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(format_plan(plan))
    return 0


def warn_analyses(command: str, path: str, spec) -> None:
    """The analyses the grid cannot feed, on stderr (the exit status stays as it is)."""
    for line in analysis_warnings(spec.trials()):
        print(f"scalelab {command}: warning: {path}: {line}", file=sys.stderr)


def _measure_pack(cfgs: list, cpus: float) -> float:
    """A CPU pack's step-throughput ratio over its members alone, on the threads its trial gets."""
    # torch and Ray (through trainable): seconds to import, only when a pack is measured
    import torch

    from trainer.fused_probe import speedup

    from .trainable import set_threads

    print(f"measuring a fused pack of {len(cfgs)} (width {cfgs[0].d_model}) against its members one at a time ...",
          file=sys.stderr, flush=True)
    saved = torch.get_num_threads()
    set_threads(cfgs[0], cpus)
    try:
        return speedup(cfgs)
    finally:
        torch.set_num_threads(saved)

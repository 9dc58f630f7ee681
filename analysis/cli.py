"""`scalelab report`, `scalelab export` and `scalelab coord-check`. Heavy modules (pandas,
matplotlib, mlflow, torch) are imported inside the handlers so `scalelab --help` stays fast."""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

from orchestrator.layout import KIND_SWEEP, TAG_KIND, resolve_tracking_uri, tracking_uri_help
from orchestrator.locations import safe_component
from orchestrator.ray_local import quiet_startup
from trainer.config import TrainConfig, UserError
from trainer.paths import writable_dir, writable_file

from .options import FitOptions

REPORT_ARTIFACT = "report"   # a parent run's artifact folder of reports: report/<report id>/

REPORT_HELP = """\
Fit and plot a sweep: hyperparameter transfer (optima, γ, drift, LR sensitivity), learned
multipliers vs width, equilibrium norms, scaling laws, tuning cost, coordinate check. Each
report gets its own folder OUT/<report id> (the UTC time it was made, e.g. 20250101-120000):
report.html (figures embedded), report.md, summary.json (every number and interval) and
figures/*.png|svg. The folder is attached to the sweep's parent run in MLflow as the artifact
folder report/<report id>; reporting again adds a new folder and changes no earlier one.

SOURCE is one or more MLflow experiment names, or one snapshot file written by
`scalelab export` (then MLflow is not needed and nothing is attached)."""

EXPORT_HELP = """\
Snapshot one or more MLflow experiments into a single Parquet file (trials, metric histories,
multipliers.csv tables) that `scalelab report FILE.parquet` reads offline."""


def register(subparsers) -> None:
    report = subparsers.add_parser("report", help="fits, figures and report.md of a sweep",
                                   description=REPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("source", nargs="+", metavar="EXPERIMENT_OR_PARQUET")
    report.add_argument("--out", help="folder of the reports; each report writes OUT/<report id>/ (default "
                        "reports/<experiment>)")
    _tracking(report)
    default = FitOptions()   # the defaults are FitOptions'; %(default)s shows them in --help
    report.add_argument("--hp", default=default.hp, help="swept hyperparameter of the transfer fit (default "
                        "%(default)s; any numeric column, e.g. weight_decay)")
    report.add_argument("--size", default=default.size, help="size column (default %(default)s; n_layers for depth)")
    report.add_argument("--loss", default=default.loss, help="loss column (default %(default)s)")
    report.add_argument("--k", type=int, default=default.k,
                        help="window of the transfer optimum: best grid point ± k points (default %(default)s)")
    report.add_argument("--n-boot", type=int, default=default.n_boot, help="bootstrap replicates (default %(default)s)")
    report.add_argument("--level", type=float, default=default.level, help="confidence level (default %(default)s)")
    report.add_argument("--seed", type=int, default=default.seed, help="bootstrap RNG seed (default %(default)s)")
    report.add_argument("--reference", help="parametrization the loss gaps are measured against (default mup)")
    report.add_argument("--no-attach", action="store_true", help="do not log the report to the parent run")
    report.add_argument("--no-history", action="store_true",
                        help="skip metric histories (faster; no training curves or coordinate check)")
    report.set_defaults(func=run_report)

    export = subparsers.add_parser("export", help="snapshot experiments into one Parquet file",
                                   description=EXPORT_HELP)
    export.add_argument("experiments", nargs="+", metavar="EXPERIMENT")
    export.add_argument("file", metavar="FILE.parquet")
    _tracking(export)
    export.add_argument("--no-history", action="store_true", help="leave out metric histories")
    export.add_argument("--no-artifacts", action="store_true", help="leave out multipliers.csv tables")
    export.set_defaults(func=run_export)

    c = subparsers.add_parser("coord-check",
                              help="coordinate check: mean |activation| vs width for sp, mup, mup+LRM")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="base config overrides (e.g. lr=3e-2)")
    c.add_argument("--widths", default="64,128,256,512", help="comma-separated widths (default 64,128,256,512)")
    c.add_argument("--schemes", default="sp,mup,mup+vector", help="comma-separated: sp, mup, mup+vector")
    c.add_argument("--steps", type=int, default=5, help="training steps recorded (default 5)")
    c.add_argument("--seeds", type=int, default=2, help="seeds averaged per point (default 2)")
    c.add_argument("--out", default="coord_check", help="output directory (default ./coord_check)")
    c.set_defaults(func=run_coord_check)


def _tracking(parser) -> None:
    parser.add_argument("--tracking-uri", help=tracking_uri_help(sweep_file=False))


def _say(command: str):
    def say(message: str) -> None:
        print(f"scalelab {command}: {message}", file=sys.stderr, flush=True)
    return say


def is_snapshot(source: str) -> bool:
    return source.endswith(".parquet") or os.path.isfile(source)


def refuse_sweep_file(source: str) -> None:
    """A sweep file where an experiment name belongs: name the experiment to use instead."""
    if not source.endswith((".yaml", ".yml")) or not os.path.isfile(source):
        return
    import yaml  # only when a sweep file was given

    try:
        with open(source, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        doc = None
    experiment = (doc.get("experiment") or doc.get("name")) if isinstance(doc, dict) else None
    use = f"`scalelab report {experiment}`" if experiment else "the experiment name it sets (`experiment:`, else `name:`)"
    raise UserError(f"{source} is a sweep file; report reads the sweep's MLflow experiment: use {use}")


def run_report(args) -> int:
    # pandas, scipy and matplotlib: seconds to import, which `scalelab --help` and the other
    # commands (this module builds their parsers) do not need
    from .report import build_report
    from .tables import Tables

    say = _say("report")
    options = _options(args)
    for source in args.source:
        refuse_sweep_file(source)
    snapshots = [s for s in args.source if is_snapshot(s)]
    if snapshots and len(args.source) > 1:
        raise UserError(f"give one snapshot file, or one or more experiment names (got {args.source})")
    if args.out:  # before the (slow) read from MLflow
        writable_dir(args.out, "--out")
    if snapshots:
        say(f"loading {snapshots[0]}")
        tables, uri = Tables.load(snapshots[0]), None
        name = os.path.splitext(os.path.basename(snapshots[0]))[0]
    else:
        quiet_startup()  # MLflow's schema checks at INFO; the CLI shows its own progress
        uri = resolve_tracking_uri(args.tracking_uri)
        tables = Tables.from_mlflow(args.source, uri, history=not args.no_history, progress=say)
        name = "+".join(args.source)
    sweeps = tables.meta.get("sweeps", []) if uri and not args.no_attach else []
    out = args.out or os.path.join("reports", safe_component(name))
    report_id = new_report_id(out, attached_report_ids(uri, sweeps) if sweeps else set())
    folder = os.path.join(out, report_id)
    build_report(tables, folder, options, progress=say)
    if uri and not args.no_attach:
        attach_report(uri, sweeps, folder, report_id, say)
    elif snapshots:
        say("built from a snapshot: not attached to MLflow")
    print(os.path.join(folder, "report.html"))
    return 0


def new_report_id(out: str, taken: set[str] = frozenset(), now: datetime | None = None) -> str:
    """The UTC time, to the second (20250101-120000), with -2, -3, ... when that name is already
    a folder under `out` or among the parent runs' reports (`taken`): a report never reuses a folder."""
    base = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate in taken or os.path.exists(os.path.join(out, candidate)):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _options(args) -> FitOptions:
    if args.k < 1:
        raise UserError(f"--k {args.k}: the parabola window needs k ≥ 1 (3 points)")
    if args.n_boot < 20:
        raise UserError(f"--n-boot {args.n_boot}: use at least 20 replicates for an interval")
    if not 0 < args.level < 1:
        raise UserError(f"--level {args.level}: a confidence level is between 0 and 1, e.g. 0.95")
    # the scaling-law bootstrap refits per replicate: at most its default number of them
    return FitOptions(hp=args.hp, size=args.size, loss=args.loss, k=args.k, n_boot=args.n_boot,
                      n_boot_scaling=min(args.n_boot, FitOptions.n_boot_scaling), level=args.level, seed=args.seed,
                      reference=args.reference)


def attached_report_ids(tracking_uri: str, sweeps: list[dict]) -> set[str]:
    """The report ids already attached to these parent runs (the folders under REPORT_ARTIFACT)."""
    from mlflow import MlflowClient  # seconds to import; only when a report is attached

    client = MlflowClient(tracking_uri)
    return {os.path.basename(f.path) for s in sweeps for f in client.list_artifacts(s["run_id"], REPORT_ARTIFACT)
            if f.is_dir}


def attach_report(tracking_uri: str, sweeps: list[dict], folder: str, report_id: str, say) -> list[str]:
    """Log one report's folder to each sweep's parent run, as REPORT_ARTIFACT/<report id>."""
    from mlflow import MlflowClient  # seconds to import; only when a report is attached

    if not sweeps:
        say(f"no sweep parent run (tag {TAG_KIND}={KIND_SWEEP}) in these experiments: report not attached")
        return []
    client = MlflowClient(tracking_uri)
    path = f"{REPORT_ARTIFACT}/{report_id}"
    for sweep in sweeps:
        client.log_artifacts(sweep["run_id"], folder, artifact_path=path)
        say(f"attached to parent run {sweep['run_id']} (sweep {sweep.get('sweep')}, artifacts/{path}/report.html)")
    return [s["run_id"] for s in sweeps]


def run_export(args) -> int:
    from .tables import Tables  # pandas: see run_report

    say = _say("export")
    if os.path.isdir(args.file):
        raise UserError(f"{args.file} is a directory; give a file name such as {args.file.rstrip('/')}/snapshot.parquet")
    writable_file(args.file, "export FILE")  # before the (slow) read from MLflow
    quiet_startup()  # MLflow's schema checks at INFO; the CLI shows its own progress
    uri = resolve_tracking_uri(args.tracking_uri)
    tables = Tables.from_mlflow(args.experiments, uri, history=not args.no_history,
                                artifacts=not args.no_artifacts, progress=say)
    path = tables.save(args.file)
    say(f"wrote {path}: {len(tables.trials)} trials, {len(tables.history)} history points, "
        f"{len(tables.multipliers)} multiplier rows")
    return 0


def run_coord_check(args) -> int:
    """Train sp, mup and mup+vector for a few steps at each width (trainer.coordcheck), then
    write the figure and data (coord_figure) and print the exponents the report's coordinate
    check fits (analysis.coordcheck)."""
    # torch (training) and matplotlib: seconds to import, only for this command
    from trainer import coordcheck

    from .coord_figure import write_coord_check
    from .coordcheck import coord_check_rows

    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise UserError(f"--widths {args.widths!r}: give comma-separated integers, e.g. 64,128,256") from None
    schemes = [s.strip() for s in args.schemes.split(",")]
    unknown = [s for s in schemes if s not in coordcheck.SCHEMES]
    if unknown:
        raise UserError(f"--schemes: unknown {unknown}; choose from {list(coordcheck.SCHEMES)}")
    values = {**coordcheck.DEFAULTS, **TrainConfig.from_sources(None, args.overrides).model_dump(exclude_unset=True)}
    base = TrainConfig.build(values, source="coord-check")
    print(f"coord-check: {len(schemes)} schemes × {len(widths)} widths × {args.seeds} seeds, {args.steps} steps",
          file=sys.stderr)
    rows = coordcheck.run(base, widths, schemes, args.steps, args.seeds)
    paths = write_coord_check(rows, args.out)
    result = coord_check_rows(rows, max_steps=args.steps + 1)  # the report's fit: steps 0..steps
    print("exponent of mean|act| vs width at the last step, with its 95% interval (0 = flat):")
    for group in result.groups:
        for slope in group.slopes:
            if slope.step == args.steps and slope.fit.exponent is not None:
                lo, hi = slope.fit.exponent_ci
                ci = f"  [{lo:+.2f}, {hi:+.2f}]" if lo is not None else ""
                print(f"  {group.label:12s} {slope.name:10s} {slope.fit.exponent:+.2f}{ci}")
    print(f"wrote {paths['png']}, {paths['svg']}, {paths['csv']}")
    return 0

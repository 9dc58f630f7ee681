"""`scalelab train` and `scalelab coord-check`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import TrainConfig, UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model from a YAML config and/or key=value overrides",
                       description="Train one model. With no arguments: a small default model on the built-in "
                                   "King James corpus (about a minute on 2 cores).")
    p.add_argument("config", nargs="?", help="YAML file of TrainConfig keys (optional)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. d_model=256 lr=1e-3 scheme=mup")
    p.add_argument("--json", metavar="FILE", help="write the final metrics and multiplier table as JSON")
    p.add_argument("--checkpoint-dir", help="write checkpoints here; with --resume, continue from the latest")
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --checkpoint-dir")
    p.add_argument("--quiet", action="store_true", help="no per-eval progress lines")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and meaning")
    p.set_defaults(func=cmd_train)

    c = sub.add_parser("coord-check", help="coordinate check: mean |activation| vs width for sp, mup, mup+LRM")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="base config overrides (e.g. lr=3e-2)")
    c.add_argument("--widths", default="64,128,256,512", help="comma-separated widths (default 64,128,256,512)")
    c.add_argument("--schemes", default="sp,mup,mup+vector", help="comma-separated: sp, mup, mup+vector")
    c.add_argument("--steps", type=int, default=5, help="training steps recorded (default 5)")
    c.add_argument("--seeds", type=int, default=2, help="seeds averaged per point (default 2)")
    c.add_argument("--out", default="coord_check", help="output directory (default ./coord_check)")
    c.set_defaults(func=cmd_coord_check)


def cmd_train(args: argparse.Namespace) -> int:
    if args.help_config:
        for name, field in TrainConfig.model_fields.items():
            print(f"{name:30s} default={field.default!r:<12} {field.description or ''}")
        return 0
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # only overrides were given
        config, overrides = None, [config] + overrides
    cfg = TrainConfig.from_sources(config, overrides)
    from .loop import train

    if args.resume and not args.checkpoint_dir:
        raise UserError("--resume needs --checkpoint-dir (where the checkpoints are)")
    result = train(cfg, checkpoint_dir=args.checkpoint_dir, resume_from="latest" if args.resume else None,
                   progress=not args.quiet)
    m = result.metrics
    print(f"{result.status}: val loss {m['final_val_loss']:.4f} (min {m['min_val_loss']:.4f}), "
          f"{m['n_params']:,} params, {m['tokens']:,} tokens, {m['wall_time_s']:.1f}s")
    if result.multipliers:
        print(f"{'layer':14s} {'kind':6s} {'mean':>8s} {'rms':>8s} {'min':>8s} {'max':>8s}")
        for r in result.multipliers:
            print(f"{r['layer']:14s} {r['kind']:6s} {r['mean']:8.4f} {r['rms']:8.4f} {r['min']:8.4f} {r['max']:8.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"status": result.status, "config": cfg.model_dump(),
                                               "metrics": m, "multipliers": result.multipliers}, indent=1))
    return 0


def cmd_coord_check(args: argparse.Namespace) -> int:
    from . import coordcheck

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
    paths = coordcheck.write(rows, args.out)
    slopes = coordcheck.slopes(rows)
    print("slope of log2 mean|act| vs log2 width at the last step (0 = flat):")
    for (scheme, layer, step), s in sorted(slopes.items()):
        if step == args.steps:
            print(f"  {scheme:12s} {layer:10s} {s:+.2f}")
    print(f"wrote {paths['png']}, {paths['svg']}, {paths['csv']}")
    return 0

"""`scalelab train` (`scalelab coord-check` is in analysis/cli.py: it draws)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import TrainConfig, UserError
from .paths import writable_dir, writable_file


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


def check_fits_device(cfg: TrainConfig) -> None:
    """The estimated memory against the device the run will use (a batch of 10^8 would
    otherwise fail deep in torch with a 24 GiB allocation error)."""
    # torch (through loop and estimate's parametrization): seconds to import; --help-config and
    # config errors answer without it
    from .estimate import machine_memory_bytes, memory_problem
    from .loop import pick_device

    device = pick_device(cfg)
    if device.type == "cuda":
        import torch  # see above

        problem = memory_problem(cfg, torch.cuda.get_device_properties(device).total_memory, "GPU memory")
    else:
        problem = memory_problem(cfg, machine_memory_bytes(), "RAM on this machine")
    if problem:
        raise UserError(f"this config {problem}")


def cmd_train(args: argparse.Namespace) -> int:
    if args.help_config:
        for name, field in TrainConfig.model_fields.items():
            print(f"{name:30s} default={field.default!r:<12} {field.description or ''}")
        return 0
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # only overrides were given
        config, overrides = None, [config] + overrides
    cfg = TrainConfig.from_sources(config, overrides)
    from .loop import train  # torch: see check_fits_device

    if args.resume and not args.checkpoint_dir:
        raise UserError("--resume needs --checkpoint-dir (where the checkpoints are)")
    check_fits_device(cfg)
    if args.checkpoint_dir:  # fail now, not at the first checkpoint
        writable_dir(args.checkpoint_dir, "--checkpoint-dir")
    if args.json:
        writable_file(args.json, "--json")
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

"""The `scalelab` command. Each command group lives in its own module, which exposes
`register(subparsers)`; heavy imports (torch, ray, mlflow) happen inside the handlers so
`scalelab --help` and `scalelab validate` stay fast."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from trainer.config import UserError

# module -> registers its subcommands
COMMAND_MODULES = (
    "trainer.cli",            # train
    "orchestrator.plan_cli",  # validate, plan
    "orchestrator.run_cli",   # run, submit, status, logs
    "orchestrator.migrate",   # migrate
    "analysis.cli",           # report, export, coord-check
    "orchestrator.ui_cli",    # ui
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalelab",
        description="Scaling-law experiments: learnable multipliers vs tuned µP. "
                    "See README.md for the sweep YAML format.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency inside the module: surface it
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"scalelab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `scalelab plan ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"scalelab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

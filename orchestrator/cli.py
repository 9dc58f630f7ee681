"""The `scalelab` command. Each command group lives in its own module, which exposes
`register(subparsers)`; heavy imports (torch, ray, mlflow) happen inside the handlers so
`scalelab --help` and `scalelab validate` stay fast."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

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
                    "See docs/sweeps.md for the sweep YAML format.")
    parser.add_argument("--debug", action="store_true", default=None,
                        help="show the Python traceback behind an error message (or set SCALELAB_DEBUG=1)")
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
    debug = bool(args.debug) or os.environ.get("SCALELAB_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if debug:
            traceback.print_exc()
        print(f"scalelab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `scalelab plan ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if err.filename is None:  # not about a path the user gave (a network error, ...): a bug report
            raise
        if debug:
            traceback.print_exc()
        print(f"scalelab {args.command}: error: {path_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scalelab {args.command}: interrupted", file=sys.stderr)
        return 130


def path_error(err: OSError) -> str:
    """One line for a file the command could not read or write (`report --out /root/x`)."""
    what = err.strerror or type(err).__name__
    target = err.filename + (f" -> {err.filename2}" if err.filename2 else "")
    fix = {PermissionError: "pick a path you may write to (or fix its permissions)",
           FileNotFoundError: "check the path; its parent directory must exist",
           IsADirectoryError: "give a file name, not a directory",
           NotADirectoryError: "a part of the path is a file, not a directory"}.get(type(err), "check the path")
    return f"{target}: {what}; {fix} (--debug shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())

"""The `fuse` setting: its values, how a sweep file's and a `--fuse` flag's text become one, and
which wins (the flag). packing.py decides what each value does; the sweep file's schema
(spec_schema.py) and the commands' flags (plan_cli, run_cli) take the value from here."""
from __future__ import annotations

from trainer.config import UserError
from trainer.errors import brief

FUSE_CHOICES = ("auto", "off")
DEFAULT_FUSE = "off"      # fused training has not yet been run on a GPU by this project
MAX_FUSE = 64
FUSE_HELP = ("fused packs: 'off', 'auto' (GPU trials in packs sized from their memory, CPU trials alone) "
             "or N (at most N same-shaped trials per pack); overrides the sweep's `fuse` (default off)")


def check_fuse(value):
    """The sweep file's `fuse` value, or ValueError saying what is allowed."""
    if value is False:  # YAML 1.1 reads an unquoted `off` as false
        return "off"
    if isinstance(value, str) and value in FUSE_CHOICES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_FUSE:
        return value
    raise ValueError(f"expected 'auto', 'off' or a pack size from 1 to {MAX_FUSE}, got {brief(value)}")


def parse_fuse_flag(text: str | None):
    """`--fuse TEXT` -> "auto" | "off" | N (None: keep the sweep file's value)."""
    if text is None:
        return None
    try:
        return check_fuse(int(text) if text.strip().isdigit() else text.strip())
    except ValueError as err:
        raise UserError(f"--fuse: {err}") from None


def effective_fuse(flag, file_value):
    """The `--fuse` flag (already parsed) wins over the sweep file's `fuse`."""
    return file_value if flag is None else flag


# Why a trial on several workers is never in a pack: its step loop is one rank of a process
# group of its own (trainer/distributed.py), a pack's is one process stepping K models.
DATA_PARALLEL_ALONE = "trials on several workers run alone"


def fusion_asked(fuse) -> bool:
    """Did the user ask for packs (N > 1)? `auto` only packs GPU trials, so it is not news."""
    return fuse not in ("auto", "off", 1)

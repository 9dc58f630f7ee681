"""Fault injection for the tests of retries and resume: SCALELAB_FAULT_INJECT="PREFIX:STEP[:TIMES]"
makes a trial whose hash starts with PREFIX raise at its first report at or past STEP."""
from __future__ import annotations

import math
from pathlib import Path

from trainer.config import UserError

FAULT_ENV = "SCALELAB_FAULT_INJECT"


class InjectedFault(RuntimeError):
    """Raised on purpose by SCALELAB_FAULT_INJECT (tests of retries and resume)."""


def parse_faults(text: str | None, strict: bool = False) -> list[tuple[str, int, float]]:
    """`prefix:step[:times]` items, comma separated; times defaults to 1, 'always' = forever.
    A malformed item raises ValueError when `strict` (`check_faults`, at the start of `scalelab
    run`, turns it into a one-line UserError), else it is skipped: a worker never fails on it."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        try:
            if len(parts) not in (2, 3) or not parts[0]:
                raise ValueError
            step = int(parts[1])
            times = math.inf if len(parts) == 3 and parts[2] == "always" else int(parts[2]) if len(parts) == 3 else 1
            if step < 0 or times < 1:
                raise ValueError
        except ValueError:
            if not strict:
                continue
            raise ValueError(f"{FAULT_ENV}: bad item {item!r}; expected HASH_PREFIX:STEP[:TIMES|always], "
                             "comma separated (e.g. 3fa2:10 or 3fa2:10:always)") from None
        out.append((parts[0], step, times))
    return out


def check_faults(text: str | None) -> None:
    """Refuse a malformed SCALELAB_FAULT_INJECT up front (a UserError: exit 2, one line)."""
    try:
        parse_faults(text, strict=True)
    except ValueError as err:
        raise UserError(str(err)) from None


def maybe_inject_fault(spec: str | None, trial_hash: str, step: int, trial_dir: Path) -> None:
    """Raise at the first report at or past the step (a resumed run starts past it), as many
    times as asked; the count lives in the trial directory so retries see it."""
    for prefix, at_step, times in parse_faults(spec):
        if trial_hash.startswith(prefix) and step >= at_step:
            marker = trial_dir / f"fault-{at_step}.count"
            count = int(marker.read_text()) if marker.is_file() else 0
            if count < times:
                marker.write_text(str(count + 1))
                raise InjectedFault(f"injected fault at step {step} of trial {trial_hash} "
                                    f"({FAULT_ENV}, occurrence {count + 1})")

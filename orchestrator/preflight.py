"""Which analyses a grid can feed, said before it runs (`scalelab validate`, `scalelab plan`):
warnings, not errors — a small grid is a fine smoke test, but its report will lack these numbers."""
from __future__ import annotations

from .trial import parametrization_label

MIN_VALUES = 3           # the fewest points that locate an optimum or give an interval
TUNED = ("lr", "weight_decay")  # a hyperparameter whose optimum per parametrization × width is fitted


def analysis_warnings(trials: list) -> list[str]:
    """One line per analysis the trials cannot feed: none of the tuned hyperparameters swept, or
    fewer than MIN_VALUES values of a swept one in a parametrization × width group (no optimum), fewer than MIN_VALUES widths (no exponent interval), one seed (no seed interval).
    Search sweeps (no trials known in advance) get none."""
    if not trials:
        return []
    configs = [t.config for t in trials]
    lines = []
    groups: dict[tuple[str, int], list] = {}
    for cfg in configs:
        groups.setdefault((parametrization_label(cfg), cfg.d_model), []).append(cfg)
    swept = [hp for hp in TUNED if len({getattr(c, hp) for c in configs}) > 1]
    if not swept:
        lines.append(f"no {' or '.join(TUNED)} is swept: no optimum and no transfer exponent (as meant for a "
                     "seed study or a transfer of tuned values)")
    for hp in swept:
        counts = {group: len({getattr(c, hp) for c in cs}) for group, cs in sorted(groups.items())}
        short = [f"{p} d={w} ({n})" for (p, w), n in counts.items() if n < MIN_VALUES]
        if short:
            lines.append(f"fewer than {MIN_VALUES} {hp} values in {len(short)} of {len(groups)} parametrization × "
                         f"width group(s) ({', '.join(short[:4])}{', ...' if len(short) > 4 else ''}): "
                         f"no optimum {hp} can be located there")
    widths = sorted({c.d_model for c in configs})
    if len(widths) < MIN_VALUES:
        lines.append(f"{len(widths)} width(s) (d_model {', '.join(map(str, widths))}): fewer than {MIN_VALUES}, "
                     "so no confidence interval on a scaling exponent")
    if len({c.seed for c in configs}) == 1:
        lines.append("one seed: no seed-to-seed interval on the losses (add seeds: [0, 1, 2])")
    return lines

"""Every fit of a report, run from one set of options. Each fit returns a typed result
(analysis/results.py; `to_dict()` is its JSON) with its numbers, their intervals, how it treated diverged/failed runs and a `warnings` list; a fit
whose data is not there (no sqrt(η/λ) sweep, no multipliers, ...) is skipped with the reason.

The fits themselves live in small modules; use them directly for custom analyses:
    transfer.fit_transfer, multiplier_scaling.fit_multipliers, norms.fit_norms, freedom.fit_freedom,
    scaling.fit_scaling, comparison.compare, tuning.tuning_cost, coordcheck.coord_check
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from trainer.config import UserError

from . import frames
from .comparison import compare
from .coordcheck import coord_check
from .freedom import fit_freedom
from .results import Result
from .multiplier_scaling import fit_multipliers
from .norms import fit_norms
from .scaling import fit_scaling
from .stats import jsonable
from .tables import Tables
from .transfer import fit_transfer
from .tuning import tuning_cost


@dataclass
class FitOptions:
    hp: str = "lr"                    # swept hyperparameter of the transfer fit
    size: str = "d_model"             # width column (n_layers for depth transfer)
    loss: str = "final_val_loss"
    k: int = 2                        # parabola window: best grid point ± k
    n_boot: int = 200                 # seed-bootstrap replicates
    n_boot_scaling: int = 100         # scaling-law bootstrap (one L-BFGS-B fit per replicate)
    level: float = 0.95               # confidence level of every interval
    seed: int = 0                     # RNG seed of the bootstraps (reports are reproducible)
    reference: str | None = None      # parametrization the gaps are measured against (default mup)
    init_loss: float | None = None    # ℓ_init of the LR sensitivity (default ln vocab_size)
    coord_steps: int = 5              # first steps shown by the coordinate check


def analyses(tables: Tables, o: FitOptions) -> dict[str, Callable[[], Result]]:
    t = tables.trials
    # keyword calls: the fits do not share one argument order (transfer takes hp before size)
    common = {"loss": o.loss, "level": o.level}
    out = {
        "comparison": lambda: compare(t, size=o.size, hp=o.hp, reference=o.reference, **common),
        "transfer": lambda: fit_transfer(t, hp=o.hp, size=o.size, k=o.k, n_boot=o.n_boot, seed=o.seed,
                                         init_loss=o.init_loss, **common),
        "multipliers": lambda: fit_multipliers(t, size=o.size, hp=o.hp, **common),
        "norms": lambda: fit_norms(t, size=o.size, **common),
        "freedom": lambda: fit_freedom(t, **common),
        "scaling": lambda: fit_scaling(t, size=o.size, hp=o.hp, n_boot=o.n_boot_scaling, seed=o.seed, **common),
        "tuning": lambda: tuning_cost(t, size=o.size, loss=o.loss),
        "coord_check": lambda: coord_check(t, tables.history, size=o.size, hp=o.hp, max_steps=o.coord_steps,
                                           level=o.level),
    }
    if o.size == "d_model" and _varies(frames.grid_runs(t), "n_layers"):
        out["transfer_depth"] = lambda: fit_transfer(t, hp=o.hp, size="n_layers", k=o.k, n_boot=o.n_boot,
                                                     seed=o.seed, init_loss=o.init_loss, **common)
    return out


def _varies(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].nunique() > 1


def run_fits(tables: Tables, options: FitOptions | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """{'results': {name: result}, 'skipped': {name: reason}}; each result's values are plain JSON
    types (NaN and ±inf as None, as summary.json has them)."""
    options = options or FitOptions()
    say = progress or (lambda _msg: None)
    if tables.trials.empty:
        raise UserError("no trial runs in these tables: nothing to analyse (did the sweep log any trials?)")
    frames.require_columns(tables.trials, ["parametrization", "outcome"], "every analysis",
                           "Tables read from MLflow runs written by `scalelab run` have them.")
    results, skipped = {}, {}
    for name, fit in analyses(tables, options).items():
        say(f"fit: {name}")
        try:
            results[name] = fit().map_values(jsonable)
        except UserError as err:
            skipped[name] = str(err)
            say(f"  skipped: {err}")
    return {"results": results, "skipped": skipped}

"""Every fit of a report, run from one set of options, as registry.ANALYSES lists and calls
them. Each fit returns a typed result (defined beside its fit; `to_dict()` is its JSON) with its
numbers, their intervals, how it treated diverged/failed runs and a `warnings` list; a fit whose
data is not there (no sqrt(η/λ) sweep, no multipliers, ...) is skipped with the reason.

The fits themselves live in small modules; use them directly for custom analyses:
    transfer.fit_transfer, multiplier_scaling.fit_multipliers, norms.fit_norms, freedom.fit_freedom,
    scaling.fit_scaling, comparison.compare, tuning.tuning_cost, coordcheck.coord_check
"""
from __future__ import annotations

from typing import Callable

from trainer.config import UserError

from . import frames
from .options import FitOptions
from .registry import ANALYSES
from .stats import jsonable
from .tables import Tables


def run_fits(tables: Tables, options: FitOptions | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """{'results': {name: result}, 'skipped': {name: reason}}, in registry order (the analyses that
    do not apply to these tables left out); each result's values are plain JSON types (NaN and
    ±inf as None, as summary.json has them)."""
    options = options or FitOptions()
    say = progress or (lambda _msg: None)
    if tables.trials.empty:
        raise UserError("no trial runs in these tables: nothing to analyse (did the sweep log any trials?)")
    frames.require_columns(tables.trials, ["parametrization", "outcome"], "every analysis",
                           "Tables read from MLflow runs written by `scalelab run` have them.")
    results, skipped = {}, {}
    for analysis in ANALYSES:
        if not analysis.applies(tables, options):
            continue
        say(f"fit: {analysis.name}")
        try:
            results[analysis.name] = analysis.fit(tables, options).map_values(jsonable)
        except UserError as err:
            skipped[analysis.name] = str(err)
            say(f"  skipped: {err}")
    return {"results": results, "skipped": skipped}

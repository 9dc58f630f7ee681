"""The analyses of a report, in report order. Each entry owns an analysis's name (its key in
summary.json), the fit that computes it from the tables and the options, the type of its result
(how summary.json reads back), its report.md section and when it applies; FIGURES owns each
figure's name, description, the analysis it draws and how. fits.run_fits, report (the figures),
report_md.render and `load` read these lists: an analysis is added or renamed here only.

The figures are a list of their own, in the order the report lists them: the comparison's
training curves come after the other analyses' figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import frames, plots, report_md
from .comparison import Comparison, compare
from .coordcheck import CoordCheckResult, coord_check
from .freedom import FreedomResult, fit_freedom
from .ladder import LadderResult, fit_ladder
from .ladder import applies as ladder_applies
from .multiplier_scaling import MultiplierResult, fit_multipliers
from .multiplier_updates import MultiplierUpdatesResult, fit_multiplier_updates
from .multiplier_updates import applies as updates_apply
from .norms import NormsResult, fit_norms
from .results import Result
from .scaling import ScalingResult, fit_scaling
from .transfer import TransferResult, fit_transfer
from .tuning import SearchResult, TuningResult, has_search_runs, search_samples, tuning_cost

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .options import FitOptions
    from .tables import Tables


def _always(tables: Tables, o: FitOptions) -> bool:
    return True


@dataclass(frozen=True)
class Analysis:
    name: str                                         # its key in summary.json's results
    result: type[Result]
    fit: Callable[[Tables, FitOptions], Result]
    section: Callable[[Any, dict], str]               # report.md section from the result and the summary
    applies: Callable[[Tables, FitOptions], bool] = _always   # False: not run, and not listed as skipped


@dataclass(frozen=True)
class FigureSpec:
    name: str                                         # figures/<name>.png and .svg
    description: str
    analysis: Analysis                                # the result it draws; skipped with it
    draw: Callable[[Any, Tables], Figure]             # (result, tables) -> figure, or raises plots.SkipFigure


# the fits are called by keyword: they do not share one argument order (transfer takes hp before size)
def _transfer(t: Tables, o: FitOptions, size: str | None = None) -> TransferResult:
    return fit_transfer(t.trials, hp=o.hp, size=size or o.size, k=o.k, estimator=o.estimator, n_boot=o.n_boot,
                        seed=o.seed, init_loss=o.init_loss, loss=o.loss, level=o.level)


def _depth_varies(t: Tables, o: FitOptions) -> bool:
    """Depth transfer runs beside the width one when the grid runs have more than one n_layers."""
    runs = frames.grid_runs(t.trials)
    return o.size == "d_model" and "n_layers" in runs.columns and runs["n_layers"].nunique() > 1


COMPARISON = Analysis(
    "comparison", Comparison, section=report_md.comparison_section,
    fit=lambda t, o: compare(t.trials, size=o.size, hp=o.hp, reference=o.reference, loss=o.loss, level=o.level))
TRANSFER = Analysis("transfer", TransferResult, fit=_transfer, section=report_md.transfer_section)
TRANSFER_DEPTH = Analysis("transfer_depth", TransferResult, fit=lambda t, o: _transfer(t, o, size="n_layers"),
                          section=report_md.transfer_depth_section, applies=_depth_varies)
MULTIPLIERS = Analysis(
    "multipliers", MultiplierResult, section=report_md.multipliers_section,
    fit=lambda t, o: fit_multipliers(t.trials, size=o.size, hp=o.hp, loss=o.loss, level=o.level))
MULTIPLIER_UPDATES = Analysis(
    "multiplier_updates", MultiplierUpdatesResult, section=report_md.multiplier_updates_section,
    fit=lambda t, o: fit_multiplier_updates(t.trials, t.history, size=o.size, hp=o.hp, loss=o.loss, level=o.level),
    applies=lambda t, o: updates_apply(t.trials, t.history))
NORMS = Analysis("norms", NormsResult, section=report_md.norms_section,
                 fit=lambda t, o: fit_norms(t.trials, size=o.size, loss=o.loss, level=o.level))
FREEDOM = Analysis("freedom", FreedomResult, section=report_md.freedom_section,
                   fit=lambda t, o: fit_freedom(t.trials, loss=o.loss, level=o.level))
SCALING = Analysis(
    "scaling", ScalingResult, section=report_md.scaling_section,
    fit=lambda t, o: fit_scaling(t.trials, size=o.size, hp=o.hp, n_boot=o.n_boot_scaling, seed=o.seed, loss=o.loss,
                                 level=o.level, interval=o.scaling_interval))
TUNING = Analysis("tuning", TuningResult, section=report_md.tuning_section,
                  fit=lambda t, o: tuning_cost(t.trials, size=o.size, loss=o.loss))
LADDER = Analysis("ladder", LadderResult, section=report_md.ladder_section,
                  fit=lambda t, o: fit_ladder(t.trials, size=o.size, loss=o.loss, level=o.level),
                  applies=lambda t, o: ladder_applies(t.trials))
SEARCH = Analysis("search", SearchResult, section=report_md.search_section,
                  fit=lambda t, o: search_samples(t.trials, loss=o.loss), applies=lambda t, o: has_search_runs(t.trials))
COORD_CHECK = Analysis(
    "coord_check", CoordCheckResult, section=report_md.coord_check_section,
    fit=lambda t, o: coord_check(t.trials, t.history, size=o.size, hp=o.hp, max_steps=o.coord_steps, level=o.level))

ANALYSES = (COMPARISON, TRANSFER, TRANSFER_DEPTH, MULTIPLIERS, MULTIPLIER_UPDATES, NORMS, FREEDOM, SCALING, TUNING, SEARCH, LADDER, COORD_CHECK)

FIGURES = (
    FigureSpec("loss_vs_hp", "Loss vs the swept hyperparameter per width, fitted optima marked", TRANSFER,
               lambda r, t: plots.plot_transfer(r)),
    FigureSpec("optimum_vs_size", "Optimal hyperparameter vs width with the fitted transfer exponent γ", TRANSFER,
               lambda r, t: plots.plot_optima(r)),
    FigureSpec("optimum_vs_depth", "Optimal hyperparameter vs depth", TRANSFER_DEPTH,
               lambda r, t: plots.plot_optima(r)),
    FigureSpec("multipliers_vs_width", "Learned multipliers vs width per role, beside the µP prediction", MULTIPLIERS,
               lambda r, t: plots.plot_multipliers(r)),
    FigureSpec("multiplier_updates", "The multipliers' relative change per step vs width, and the final loss",
               MULTIPLIER_UPDATES, lambda r, t: plots.plot_multiplier_updates(r)),
    FigureSpec("loss_vs_params", "Best loss vs parameters with the fitted scaling law", SCALING,
               lambda r, t: plots.plot_scaling(r)),
    FigureSpec("loss_gap", "Loss gap to the reference parametrization at each size", COMPARISON,
               lambda r, t: plots.plot_gaps(r)),
    FigureSpec("equilibrium_norms", "Matrix and effective RMS vs sqrt(η/λ), and the loss", NORMS,
               lambda r, t: plots.plot_norms(r)),
    FigureSpec("mis_set_penalty", "Loss penalty of mis-set fixed multipliers with and without learnable multipliers",
               FREEDOM, lambda r, t: plots.plot_freedom(r)),
    FigureSpec("tuning_cost", "Best loss so far vs cumulative compute", TUNING, lambda r, t: plots.plot_tuning(r)),
    FigureSpec("tuning_ladder", "Loss of µP and µP with learnable multipliers at each level of tuning, and its cost",
               LADDER, lambda r, t: plots.plot_ladder(r)),
    FigureSpec("training_curves", "Validation loss vs tokens of each size's best runs", COMPARISON,
               lambda r, t: plots.plot_training_curves(t.history, t.trials, r)),
    FigureSpec("coord_check", "Mean |activation| per block vs width over the first steps", COORD_CHECK,
               lambda r, t: plots.plot_coord_check(r)),
)


def load(data: dict[str, Any] | Result) -> Result:
    """A fit's result from its JSON object (summary.json), by its `analysis` field; a Result as it is."""
    if isinstance(data, Result):
        return data
    types = {a.result.analysis: a.result for a in ANALYSES}
    return types[data["analysis"]].from_dict(data)

"""Figures of a report, drawn from the fits' typed results (and the history table for training
curves). Object-oriented matplotlib (`Figure`, no pyplot): no global state, no display needed
(PNG through Agg, SVG through its own backend).

Each `plot_*` returns a Figure or raises `SkipFigure(reason)` when its data is not there.
"""
from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, Locator, NullFormatter

from . import frames
from .comparison import Comparison, with_arms
from .coordcheck import CoordCheckResult
from .freedom import FreedomResult
from .ladder import LadderResult
from .multiplier_updates import MultiplierUpdatesResult
from .multiplier_scaling import MultiplierResult, MultiplierSeries
from .norms import POOLED, NormsResult
from .scaling import ScalingResult, predict
from .transfer import PREDICTED_GAMMA, TransferCurve, TransferResult
from .tuning import TuningResult

FORMATS = ("png", "svg")
PANEL = (4.6, 3.5)   # inches per panel
MAX_PANELS = 24


class SkipFigure(Exception):
    """The data for this figure is not there; the message says what is missing."""


def save(fig: Figure, out_dir: Path, name: str) -> list[str]:
    """PNG then SVG. The constrained layout (most of the drawing time: tick-label extents) is
    computed once, by the first save, then frozen for the others."""
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=110)
        fig.set_layout_engine("none")
        paths.append(path.name)
    return paths


def _grid(n: int, ncols: int = 3, sharey: bool = False) -> tuple[Figure, list]:
    n = max(1, min(n, MAX_PANELS))
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel().tolist()
    for ax in axes:
        ax.ticklabel_format(useOffset=False)   # '+2.51' above the axis would make 0.0002 read as the loss
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


# ---- readable axes and texts ---------------------------------------------------------------------

MIN_LOG_SPAN = 2.0   # a log y axis spans at least this factor: a change of 2% looks like 2%, not a trend
MAX_TICKS = 7
MIN_LOSS_SPAN = 0.05   # nats: a loss axis of its own spans at least this, so seed noise is not a trend


def _wrap(text: str, inches: float, fontsize: float) -> str:
    """`text` broken into lines that fit `inches` at `fontsize` (an average glyph is ~0.6 em wide)."""
    chars = max(12, int(inches * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_long_words=False, break_on_hyphens=False)
                     for line in text.split("\n"))


def panel_title(ax, text: str, fontsize: float = 10) -> None:
    """A panel title wrapped to its panel's width (less the y labels' room), never cut at an edge."""
    fig = ax.get_figure()
    cols = ax.get_gridspec().ncols if ax.get_gridspec() is not None else 1
    ax.set_title(_wrap(text, fig.get_figwidth() / cols - 0.6, fontsize), fontsize=fontsize)


def figure_title(fig: Figure, text: str, fontsize: float = 11) -> None:
    fig.suptitle(_wrap(text, fig.get_figwidth() - 0.4, fontsize), fontsize=fontsize)


def _legend_label(text: str, fontsize: float, inches: float = PANEL[0] - 1.2) -> str:
    return _wrap(text, inches, fontsize)


def _legend_below(fig: Figure, fontsize: float = 7) -> None:
    """One legend under the panels: long labels neither cover the data nor leave the canvas. The
    figure grows by the legend's height, so the panel keeps its size."""
    labels = [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig.set_figheight(fig.get_figheight() + lines * fontsize * 1.5 / 72)
    fig.legend(loc="outside lower center", fontsize=fontsize, ncols=1, frameon=False)


def _number(v: float, _pos=None) -> str:
    """A tick label as a plain number (128, 0.6, 0.000244) up to 10^5, then as m×10^e."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else ""
    exp = math.floor(math.log10(abs(v)) + 1e-9)
    if -4 <= exp < 5:
        if abs(v) >= 1 and float(v).is_integer():
            return f"{v:.0f}"
        return np.format_float_positional(v, precision=3, fractional=False, trim="-")
    mantissa = v / 10 ** exp
    head = "" if math.isclose(mantissa, 1) else f"{mantissa:.3g}\\times"
    return f"${head}10^{{{exp}}}$"


class NiceLogTicks(Locator):
    """Major ticks of a log axis at round numbers: every decade, or 1-2-5, or 1..9, or finer steps,
    the sparsest set with ≥ 3 ticks in view (≥ 2 on a narrow axis), thinned to `max_ticks`. Unlike
    matplotlib's LogLocator it never leaves a narrow axis with one labelled tick or none."""

    STEPS = ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9), tuple(np.arange(10, 100, 5) / 10),
             tuple(np.arange(10, 100, 1) / 10))

    def __init__(self, max_ticks: int = MAX_TICKS):
        self.max_ticks = max_ticks

    def __call__(self):
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((vmin, vmax))
        if not (lo > 0 and math.isfinite(hi)) or hi <= lo:
            return np.array([lo, hi]) if lo > 0 else np.array([1.0])
        decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        for need in (3, 2):
            for steps in self.STEPS:
                ticks = [m * 10.0 ** e for e in decades for m in steps]
                ticks = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
                ticks = self._spread(ticks, math.log10(hi / lo) / self.max_ticks)
                if len(ticks) >= need:
                    return np.array(ticks)
        return np.geomspace(lo, hi, 3)   # narrower than one step of 0.1: the ends and the middle

    @staticmethod
    def _spread(ticks: list[float], min_gap_log10: float) -> list[float]:
        """Thinned to ticks at least min_gap apart on the log scale: thinning by index would keep
        0.97 and 0.99 where the steps change at a decade (0.01 below 1, 0.1 above)."""
        kept: list[float] = []
        for t in ticks:
            if not kept or math.log10(t / kept[-1]) >= min_gap_log10 * (1 - 1e-9):
                kept.append(t)
        return kept


def log_axis(ax, which: str = "y") -> None:
    """A log axis with round, plainly written ticks (0.5, 1, 2; not 2^-1 or 5×10^-1)."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    # x labels sit side by side: fewer of them, or 6×10^12 and 7×10^12 collide
    axis.set_major_locator(NiceLogTicks(MAX_TICKS if which == "y" else 4))
    axis.set_major_formatter(FuncFormatter(_number))
    axis.set_minor_formatter(NullFormatter())


def min_log_span(ax, factor: float = MIN_LOG_SPAN) -> None:
    """Widen a log y axis around its data to span ≥ `factor`: a flat series is drawn flat."""
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < factor:
        mid, half = math.sqrt(lo * hi), math.sqrt(factor)
        ax.set_ylim(mid / half, mid * half)


def grid_ticks(ax, values) -> None:
    """x ticks of a log axis at the swept grid's values (every value marked, at most 6 labelled);
    a grid of one value gets its neighbours ×2 and ÷2 as labelled ticks, so the scale is readable."""
    values = sorted({float(v) for v in values if v is not None and v > 0})
    if not values:
        return
    if len(values) == 1:
        v = values[0]
        labelled = [v / 2, v, v * 2]
        ax.set_xlim(v / 2 ** 1.2, v * 2 ** 1.2)
    else:
        labelled = values[::math.ceil(len(values) / 6)]
    ax.xaxis.set_major_locator(FixedLocator(labelled))
    ax.xaxis.set_minor_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FuncFormatter(_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", which="major", labelrotation=30)


def _label_colours(labels: list[str]) -> dict[str, tuple]:
    """tab10, then Dark2 (dark enough on white): 18 labels before a colour repeats."""
    palette = list(colormaps["tab10"].colors) + list(colormaps["Dark2"].colors)
    return {label: palette[i % len(palette)] for i, label in enumerate(sorted(set(labels)))}


def ordered_colours(values: list[float]) -> dict[float, tuple]:
    """Ordered values (sizes, steps) along viridis, stopping at 0.7: its yellow end is too pale on white."""
    values = sorted(set(values))
    cmap = colormaps["viridis"]
    return {v: cmap(i / max(1, len(values) - 1) * 0.7) for i, v in enumerate(values)}


def _ci_text(value, ci, fmt: str = "{:.3g}") -> str:
    if value is None:
        return "n/a"
    text = fmt.format(value)
    if ci and ci[0] is not None:
        text += f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return text


def _size_name(size: str) -> str:
    return {"d_model": "width d_model", "n_layers": "depth n_layers"}.get(size, size)


# ---- transfer ----------------------------------------------------------------------------

def plot_transfer(result: TransferResult) -> Figure:
    """Loss vs hp (log axis, ticks at the grid's values), one panel per parametrization on one
    shared loss scale, width as colour, optima marked."""
    curves = result.curves
    labels = sorted({c.label for c in curves if any(p.loss_mean is not None for p in c.points)})
    if not labels:
        raise SkipFigure("no transfer curve has a finite loss")
    fig, axes = _grid(len(labels), sharey=True)   # one loss scale: panels compare at a glance
    colours = ordered_colours([c.size for c in curves])
    hp, size = result.hp, result.size
    named: set[float] = set()   # each width is named once, in one legend under the panels
    finite = {c.size for c in curves if any(p.loss_mean is not None for p in c.points)}
    for ax, label in zip(axes, labels):
        mine = [c for c in curves if c.label == label]
        top = max(p.loss_mean for c in mine for p in c.points if p.loss_mean is not None)
        for c in mine:
            _draw_curve(ax, c, colours[c.size], top, named, finite)
        ax.set_xscale("log", base=2)
        grid_ticks(ax, [p.hp for c in mine for p in c.points])
        ax.set_xlabel(f"{hp} (log axis; ticks at the grid's values)")
        ax.set_ylabel(f"{result.loss} (nats/token)")
        panel_title(ax, label)
    fig.legend(loc="outside lower center", fontsize=8, title=size, title_fontsize=8, ncols=min(len(named), 8),
               frameon=False)
    figure_title(fig, f"Loss vs {hp}; ★ = fitted optimum (bar: {int(result.ci_level * 100)}% interval), "
              f"× = every seed diverged")
    return fig


def _draw_curve(ax, curve: TransferCurve, colour, top: float, named: set[float], finite: set[float]) -> None:
    """One width's curve. The width is named (for the figure's legend) on the first curve drawn
    with a finite loss, so no legend entry names an empty series."""
    pts = [p for p in curve.points if p.loss_mean is not None]
    x = np.array([p.hp for p in pts])
    y = np.array([p.loss_mean for p in pts])
    err = np.array([p.loss_sem or 0.0 for p in pts])
    if len(pts):
        ax.errorbar(x, y, yerr=err, color=colour, marker="o", ms=3.5, lw=1.5, capsize=2,
                    label=None if curve.size in named else f"{curve.size:g}")
        named.add(curve.size)
    diverged = [p.hp for p in curve.points if p.loss_mean is None and p.n_diverged == p.n]
    if diverged:   # drawn at the curve's highest loss (the panel's, when it has none)
        # a width with no finite loss in any panel is named by its ×
        label = None if curve.size in named or curve.size in finite else f"{curve.size:g} (every seed diverged)"
        if label:
            named.add(curve.size)
        ax.scatter(diverged, [np.nanmax(y) if len(y) else top] * len(diverged), marker="x", color=colour, s=25,
                   label=label)
    if curve.opt is not None:
        ci = curve.opt_ci or [None, None]
        xerr = None if ci[0] is None else [[curve.opt - ci[0]], [ci[1] - curve.opt]]
        ax.errorbar([curve.opt], [curve.loss_at_opt], xerr=xerr, color=colour, marker="*", ms=11,
                    mec="black", mew=0.6, capsize=3, lw=1.5)


def plot_optima(result: TransferResult) -> Figure:
    """η* vs size per parametrization, with the fitted log η* = c + γ·log size."""
    groups = [g for g in result.groups if len(g.sizes) >= 2]
    if not groups:
        raise SkipFigure(f"no parametrization has optima at ≥ 2 values of {result.size}")
    fig, (ax,) = _grid(1)
    colours = _label_colours([g.label for g in groups])
    curves = {(c.label, c.size): c for c in result.curves}
    for g in groups:
        sizes = np.array(g.sizes)
        opts = 2.0 ** np.array(g.log2_opt)
        ci = [curves[(g.label, s)].opt_ci for s in g.sizes]
        yerr = np.array([[o - c[0] if c[0] else 0, c[1] - o if c[1] else 0] for o, c in zip(opts, ci)]).T
        label = _legend_label(f"{g.label}: γ = {_ci_text(g.gamma, g.gamma_ci, '{:.2f}')}", 7, PANEL[0] - 0.3)
        ax.errorbar(sizes, opts, yerr=yerr, marker="o", ls="none", capsize=3, color=colours[g.label], label=label)
        if g.gamma is not None:
            xs = np.geomspace(sizes.min(), sizes.max(), 20)
            ax.plot(xs, 2.0 ** (g.intercept_log2 + g.gamma * np.log2(xs)), color=colours[g.label], lw=1.5)
    ax.set_xscale("log", base=2)
    grid_ticks(ax, [s for g in groups for s in g.sizes])
    log_axis(ax, "y")
    min_log_span(ax, 4.0)  # two octaves: an optimum's own scatter (0.1-0.2 in log2) is not drawn as a trend
    ax.set_xlabel(_size_name(result.size))
    ax.set_ylabel(f"optimal {result.hp} η*")
    said = PREDICTED_GAMMA.get((result.hp, result.size))
    panel_title(ax, f"Transfer of the optimal {result.hp}" + (f" ({said[0]})" if said else ""))
    _legend_below(fig)
    return fig


# ---- learned multipliers -------------------------------------------------------------------

def plot_multipliers(result: MultiplierResult) -> Figure:
    groups = [g for g in result.groups if g.series]
    # vector multipliers: the RMS of rows and columns (their means are in report.md)
    # the series µP makes a prediction for first: with many roles the panels run out (MAX_PANELS)
    names = sorted({s.name for g in groups for s in g.series if not s.name.endswith("_mean")},
                   key=lambda n: (n.split(" ")[0] not in result.predictions, _series_order(n)))
    if not names:
        raise SkipFigure("no learned multipliers at ≥ 2 widths")
    fig, axes = _grid(len(names), ncols=4)
    colours = _label_colours([g.label for g in groups])
    for ax, name in zip(axes, names):
        drawn = [s for g in groups for s in g.series if s.name == name]
        for g in groups:
            for s in (s for s in g.series if s.name == name):
                _draw_power_law(ax, s, colours[g.label], g.label)
        ax.set_xscale("log", base=2)
        grid_ticks(ax, [p.size for s in drawn for p in s.points])
        log_axis(ax, "y")
        min_log_span(ax)   # p = 0.00 is drawn flat, not corner to corner
        ax.set_xlabel(_size_name(result.size))
        ax.set_ylabel("learned multiplier\n(geo. mean over blocks)")
        panel_title(ax, name)
        ax.legend(fontsize=6)
    predicted = "; dashed: µP prediction (head d⁻¹, q·k d⁻²)" if result.predictions else ""
    figure_title(fig, f"Learned multipliers vs {_size_name(result.size)}{predicted}; "
              f"every log axis spans ≥ ×{MIN_LOG_SPAN:g}")
    return fig


def _series_order(name: str):
    roles = ["embedding", "attn_q", "attn_k", "attn_q·attn_k", "attn_v", "attn_o", "mlp_up", "mlp_gate",
             "mlp_down", "head"]
    role = name.split(" ")[0]
    return (roles.index(role) if role in roles else len(roles), name)


def _draw_power_law(ax, series: MultiplierSeries, colour, label: str) -> None:
    pts, fit = series.points, series.fit
    if not pts:
        return
    x = np.array([p.size for p in pts])
    y = np.array([p.geo_mean for p in pts])
    # clipped at 0 both ways: a geometric mean of one run differs from it in the last bit
    err = np.array([[max(0.0, yy - p.min) for yy, p in zip(y, pts)],
                    [max(0.0, p.max - yy) for yy, p in zip(y, pts)]])
    text = _legend_label(f"{label}: p = {_ci_text(fit.exponent, fit.exponent_ci, '{:.2f}')}", 6)
    ax.errorbar(x, y, yerr=err, marker="o", ls="none", ms=4, capsize=2, color=colour, label=text)
    if fit.exponent is not None:
        xs = np.geomspace(x.min(), x.max(), 20)
        ax.plot(xs, fit.prefactor * xs ** fit.exponent, color=colour, lw=1.2)
        if series.prediction is not None:
            anchor = fit.prefactor * xs[0] ** fit.exponent
            ax.plot(xs, anchor * (xs / xs[0]) ** series.prediction, color=colour, lw=1.2, ls="--")


def plot_multiplier_updates(result: MultiplierUpdatesResult) -> Figure:
    """Left: the multipliers' relative change per step vs size, per group, with its power law.
    Right: each group's final loss vs size (seed means), to see what the rate costs."""
    groups = [g for g in result.groups if g.points]
    if not any(g.fit.exponent is not None for g in groups):
        raise SkipFigure("no multiplier update rates at ≥ 2 sizes")
    fig, (ax, loss_ax) = _grid(2, ncols=2)
    colours = _label_colours([g.label for g in groups])
    sizes = sorted({p["size"] for g in groups for p in g.points})
    for g in groups:
        x = np.array([p["size"] for p in g.points])
        rate = np.array([p["rate"] for p in g.points]) * 1000   # per 1000 steps: plainly written ticks near 1
        text = _legend_label(f"{g.label}: p = {_ci_text(g.fit.exponent, g.fit.exponent_ci, '{:.2f}')}", 6)
        ax.plot(x, rate, "o", ms=4, color=colours[g.label], label=text)
        if g.fit.exponent is not None:
            xs = np.geomspace(x.min(), x.max(), 20)
            ax.plot(xs, 1000 * g.fit.prefactor * xs ** g.fit.exponent, color=colours[g.label], lw=1.2)
        losses = pd.DataFrame(g.points).dropna(subset=["loss"]).groupby("size")["loss"].mean()
        loss_ax.plot(losses.index, losses.to_numpy(), "o-", ms=4, color=colours[g.label])
    for a in (ax, loss_ax):
        a.set_xscale("log", base=2)
        grid_ticks(a, sizes)
        a.set_xlabel(_size_name(result.size))
    log_axis(ax, "y")
    min_log_span(ax)
    ax.set_ylabel("relative change per 1000 steps\n|Δ log multiplier| per 1000 steps")
    loss_ax.set_ylabel(f"{result.loss} (nats, seed mean)")
    panel_title(ax, "Multipliers' relative change per step (flat = width-independent)")
    panel_title(loss_ax, "Final loss")
    _legend_below(fig)
    return fig


# ---- scaling laws and the comparison -------------------------------------------------------

def plot_scaling(result: ScalingResult) -> Figure:
    fits = [f for f in result.fits if f.points]
    if not any(f.E is not None for f in fits):
        raise SkipFigure("no scaling-law fit (needs ≥ 3 model sizes)")
    fig, (ax,) = _grid(1)
    colours = _label_colours([f.label for f in fits])
    for f in fits:
        if f.E is None:
            continue
        N = np.array([p.N for p in f.points])
        L = np.array([p.loss_mean for p in f.points])
        err = np.array([p.loss_std or 0.0 for p in f.points])
        text = _legend_label(f"{f.label}: E={_ci_text(f.E, f.E_ci)}, α={_ci_text(f.alpha, f.alpha_ci, '{:.2f}')}",
                             7, PANEL[0] - 0.3)
        ax.errorbar(N, L, yerr=err, marker="o", ls="none", ms=4, capsize=2, color=colours[f.label], label=text)
        xs = np.geomspace(N.min(), N.max(), 50)
        D = np.median([p.D for p in f.points if p.D]) if f.B is not None else None
        ax.plot(xs, predict(f, xs, D), color=colours[f.label], lw=1.2)
    log_axis(ax, "x")
    ax.set_xlabel("parameters N")
    ax.set_ylabel(f"{result.loss} (nats/token)")
    panel_title(ax, f"Scaling law {result.model}")
    _legend_below(fig)
    return fig


def plot_gaps(result: Comparison) -> Figure:
    gaps = result.gaps
    if not gaps:
        raise SkipFigure(f"no parametrization to compare with the reference {result.reference!r} at a common size")
    fig, (ax,) = _grid(1)
    size = result.size
    colours = _label_colours([g["parametrization"] for g in gaps])
    for label in sorted({g["parametrization"] for g in gaps}):
        rows = sorted((g for g in gaps if g["parametrization"] == label), key=lambda g: g[size])
        x = np.array([g[size] for g in rows], float)
        y = np.array([g["gap"] for g in rows])
        err = np.array([[y_ - (g["gap_ci"][0] if g["gap_ci"][0] is not None else y_) for y_, g in zip(y, rows)],
                        [(g["gap_ci"][1] if g["gap_ci"][1] is not None else y_) - y_ for y_, g in zip(y, rows)]])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colours[label],
                    label=_legend_label(label, 7, PANEL[0] - 0.3))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    grid_ticks(ax, [g[size] for g in gaps])
    ax.set_xlabel(_size_name(size))
    ax.set_ylabel("best loss − the reference's\nbest loss (nats)")  # the reference is named in the title
    panel_title(ax, f"Loss gap to {result.reference} at each size (below 0 = better)")
    _legend_below(fig)
    return fig


# ---- equilibrium norms -----------------------------------------------------------------------

NORMS_X = "S = sqrt(η/λ) of the hidden matrices"


def plot_norms(result: NormsResult) -> Figure:
    sweeps = result.sweeps[:MAX_PANELS // 2]
    fig, axes = _grid(2 * len(sweeps), ncols=2)
    losses = [p.loss_mean for sw in sweeps for p in sw.loss.points]
    for i, sweep in enumerate(sweeps):
        ax_n, ax_l = axes[2 * i], axes[2 * i + 1]
        series = sweep.series + [dataclasses.replace(p, kind=k) for k, p in sweep.pooled.items()]
        colours = _label_colours([s.role for s in series])
        colours[POOLED] = "black"
        for s in series:
            pts = s.points
            matrix = s.kind == "weight_rms"
            pooled = s.role == POOLED
            ax_n.plot([p.S for p in pts], [p.geo_mean for p in pts], "-" if matrix else "--", marker="o",
                      ms=3, lw=2.2 if pooled else 1.2, color=colours[s.role], label=s.role if matrix else None)
        ax_n.set_xscale("log", base=2)
        grid_ticks(ax_n, [p.S for s in series for p in s.points])
        log_axis(ax_n, "y")
        min_log_span(ax_n)
        ax_n.set_xlabel(NORMS_X)
        ax_n.set_ylabel("RMS (solid: matrix,\ndashed: effective)")
        panel_title(ax_n, f"{sweep.label}\nnorms vs S (slopes in report.md)", fontsize=9)
        ax_n.legend(fontsize=6, ncol=2)
        pts = sweep.loss.points
        ax_l.plot([p.S for p in pts], [p.loss_mean for p in pts], marker="o")
        ax_l.set_xscale("log", base=2)
        grid_ticks(ax_l, [p.S for p in pts])
        if losses:  # one y range for every sweep, ≥ MIN_LOSS_SPAN: a flat curve looks flat
            mid, half = (max(losses) + min(losses)) / 2, max(max(losses) - min(losses), MIN_LOSS_SPAN) / 2 * 1.1
            ax_l.set_ylim(mid - half, mid + half)
        ax_l.set_xlabel(NORMS_X)
        ax_l.set_ylabel("loss (nats/token)")
        panel_title(ax_l, f"{sweep.label}\nloss vs S (spread {_ci_text(sweep.loss.spread, None)} nats)", fontsize=9)
    figure_title(fig, "Equilibrium norms in a sqrt(η/λ) sweep at fixed sqrt(η·λ)")
    return fig


# ---- mis-set multipliers ---------------------------------------------------------------------

def plot_freedom(result: FreedomResult) -> Figure:
    """Per group: the penalty of each mis-set multiplier without (left bar) and with (right bar)
    learnable multipliers, with intervals; a setting whose seeds all diverged is drawn as a
    hatched bar reaching the top of the panel."""
    groups = [g for g in result.groups if g.reliefs][:MAX_PANELS]
    if not groups:
        raise SkipFigure("no setting has runs both with and without learnable multipliers")
    fig, axes = _grid(len(groups), ncols=1)
    for ax, g in zip(axes, groups):
        pen = {(x.parametrization, x.setting): x for x in g.penalties}
        finite = [v for x in g.penalties for v in [x.penalty, x.penalty_ci[1]]
                  if v is not None and math.isfinite(v)]
        top = max(finite + [0.01]) * 1.15   # room for the intervals, and the height of a 'diverged' bar
        for i, r in enumerate(g.reliefs):
            for shift, label, colour in ((-0.2, r.without, "tab:grey"), (0.2, r.with_, "tab:blue")):
                x = pen[(label, r.setting)]
                kwargs = {"color": colour, "label": label if i == 0 else None, "width": 0.38}
                if x.penalty is None or not math.isfinite(x.penalty):
                    ax.bar(i + shift, top, hatch="//", alpha=0.4, **kwargs)
                    ax.text(i + shift, top * 0.5, "diverged", rotation=90, ha="center", va="center", fontsize=7)
                    continue
                lo, hi = x.penalty_ci
                err = None if lo is None else [[x.penalty - lo], [hi - x.penalty]]
                ax.bar(i + shift, x.penalty, yerr=err, capsize=3, **kwargs)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(g.reliefs)), [r.setting for r in g.reliefs], fontsize=8, rotation=15)
        ax.set_ylim(top=top)
        ax.set_ylabel(f"{result.loss} − default (nats)")
        panel_title(ax, f"Loss penalty of a mis-set fixed multiplier\n({g.label})", fontsize=9)
        ax.legend(fontsize=7)
    return fig


# ---- tuning cost -----------------------------------------------------------------------------

def plot_tuning(result: TuningResult) -> Figure:
    curves = [c for c in result.curves if c.points]
    if not curves:
        raise SkipFigure("no finished run in the tuning curves")
    fig, (ax,) = _grid(1)
    colours = _label_colours([c.label for c in curves])
    for c in curves:
        x = [p.compute for p in c.points]
        y = [p.best_loss for p in c.points]
        if c.total_compute > x[-1]:   # the best so far holds until the last run's compute is spent
            x, y = x + [c.total_compute], y + [y[-1]]
        # a dot where the curve ends: a curve of one run is a dot, not an invisible line of one point
        ax.step(x, y, where="post", color=colours[c.label], ls="-" if c.kind == "search" else "--", lw=1.5,
                marker="o", ms=3.5, markevery=[len(x) - 1],
                label=_legend_label(f"{c.label} ({c.kind}, {c.n_trials} runs)", 7, PANEL[0] - 0.3))
    log_axis(ax, "x")
    ax.set_xlabel(f"cumulative training compute ({'FLOPs' if result.compute == 'flops' else result.compute})")
    ax.set_ylabel(f"best {result.loss} so far\n(nats/token)")
    panel_title(ax, "Tuning cost\nsolid: µP search; dashed: learnable multipliers")
    _legend_below(fig)
    return fig


# ---- training curves and the coordinate check -------------------------------------------------

def plot_ladder(result: LadderResult) -> Figure:
    """Left: each arm's loss with its interval, per level (left to right: more tuned). Right: the
    multipliers' difference to their parent, with Welch's interval. Under each level: what it tuned
    and what that cost."""
    levels = result.levels
    fig, (ax, gap_ax) = _grid(2, ncols=2)
    x = np.arange(len(levels))
    names = [_level_name(r) for r in levels]

    def bars(ax, values, cis, shift, **kwargs):
        y = np.array([v if v is not None else np.nan for v in values], float)
        lo = np.array([c[0] if c[0] is not None else v for c, v in zip(cis, y)], float)
        hi = np.array([c[1] if c[1] is not None else v for c, v in zip(cis, y)], float)
        ax.errorbar(x + shift, y, yerr=[y - lo, hi - y], fmt="o", capsize=3, **kwargs)

    parents = sorted({r["parent"] for r in levels})
    lrms = sorted({r["lrm"] for r in levels})
    bars(ax, [r["parent_loss"]["mean"] for r in levels], [r["parent_loss"]["ci"] for r in levels], -0.1,
         color="tab:grey", label=" / ".join(parents))
    bars(ax, [r["lrm_loss"]["mean"] for r in levels], [r["lrm_loss"]["ci"] for r in levels], 0.1,
         color="tab:blue", label=" / ".join(lrms))
    bars(gap_ax, [r["diff"] for r in levels], [r["diff_ci"] for r in levels], 0.0, color="tab:blue",
         label=f"{' / '.join(lrms)} − {' / '.join(parents)}")
    gap_ax.axhline(0, color="black", lw=0.8)
    drawn = [v for r in levels for arm in ("parent_loss", "lrm_loss") for v in (r[arm]["mean"], *r[arm]["ci"])
             if v is not None]
    if drawn:  # ≥ MIN_LOSS_SPAN: seed noise is not drawn as a gap
        mid = (max(drawn) + min(drawn)) / 2
        half = max((max(drawn) - min(drawn)) / 2 * 1.15, MIN_LOSS_SPAN / 2)
        ax.set_ylim(mid - half, mid + half)
    for a in (ax, gap_ax):
        a.set_xticks(x, names, fontsize=7)
        a.set_xlim(-0.5, len(levels) - 0.5)
    widths = sorted({_number(r[result.size]) for r in levels})
    ax.set_ylabel(f"{result.loss} (nats)")
    gap_ax.set_ylabel("multipliers − parent (nats)")
    panel_title(ax, f"Loss at each level of tuning ({result.size} = {', '.join(widths)})")
    panel_title(gap_ax, "Learnable multipliers − parent (below 0: they help)")
    ax.legend(fontsize=7)
    gap_ax.legend(fontsize=7)
    return fig


def _level_name(row: dict) -> str:
    tuned = _short_keys(row["tuned"]) if row["tuned"] else (f"from {row['study']}" if row["study"] else "untuned")
    cost = "" if not row["study"] else (
        f"\n{row['search_trials']} runs\n{row['cpu_hours']:.2g} CPU-h" if row["cpu_hours"] is not None else "\ncost n/a")
    return tuned + cost


def _short_keys(keys: list[str], width: int = 12) -> str:
    """Tuned keys in a tick label: keys sharing a prefix collapse (alpha_emb, alpha_out -> alpha_*×2),
    joined by '+' and broken into lines of about `width` characters."""
    prefixes: dict[str, list[str]] = {}
    for key in keys:
        prefixes.setdefault(key.rsplit("_", 1)[0] if "_" in key else key, []).append(key)
    parts = [f"{p}_*×{len(ks)}" if len(ks) > 1 else ks[0] for p, ks in prefixes.items()]
    lines = [""]
    for part in parts:
        joined = f"{lines[-1]}+{part}" if lines[-1] else part
        if len(joined) > width and lines[-1]:
            lines.append(part)
        else:
            lines[-1] = joined
    return "+\n".join(lines)


def plot_training_curves(history: pd.DataFrame, trials: pd.DataFrame, comparison: Comparison) -> Figure:
    """Mean val loss vs tokens over the seeds of each parametrization's best runs per size."""
    if history.empty or not {"val_loss", "tokens"} <= set(history["key"].unique()):
        raise SkipFigure("no val_loss and tokens histories")
    size, hp = comparison.size, comparison.hp
    chosen = _best_runs(trials, comparison, size)
    if chosen.empty:
        raise SkipFigure("no best runs to draw")
    wide = (history[history["key"].isin(["val_loss", "tokens"]) & history["run_id"].isin(chosen["run_id"])]
            .pivot_table(index=["run_id", "step"], columns="key", values="value").reset_index()
            .merge(chosen[["run_id", "parametrization", size]], on="run_id"))
    labels = sorted(wide["parametrization"].unique())
    fig, axes = _grid(len(labels), sharey=True)
    colours = ordered_colours(wide[size].tolist())
    for ax, label in zip(axes, labels):
        part = wide[wide["parametrization"] == label]
        for width, sub in part.groupby(size):
            mean = sub.groupby("step")[["tokens", "val_loss"]].mean()
            ax.plot(mean["tokens"], mean["val_loss"], color=colours[width], lw=1.5, label=f"{width:g}")
        log_axis(ax, "x")
        ax.set_xlabel("tokens")
        ax.set_ylabel("validation loss (nats/token)")
        panel_title(ax, f"{label} (best {hp} per size)")
        ax.legend(fontsize=7, title=size, title_fontsize=7)
    return fig


def _best_runs(trials: pd.DataFrame, comparison: Comparison, size: str) -> pd.DataFrame:
    """The finished runs behind each row of the best-loss table."""
    hp = comparison.hp
    trials, _ = with_arms(frames.grid_runs(trials), comparison.by, hp)   # labelled as the table's rows
    rows = []
    for r in comparison.best:
        mask = trials["parametrization"].eq(r["parametrization"]) & trials[size].eq(r[size])
        mask &= trials["outcome"].eq("finished")
        if f"best_{hp}" in r:
            mask &= np.isclose(pd.to_numeric(trials[hp], errors="coerce"), r[f"best_{hp}"])
        rows.append(trials[mask])
    return pd.concat(rows) if rows else trials.iloc[:0]


def plot_coord_check(result: CoordCheckResult) -> Figure:
    groups = result.groups
    if not groups:
        raise SkipFigure("no act/ histories at ≥ 2 widths")
    steps = result.steps
    if len(steps) > 4:  # first, last and two between: enough to see a trend, cheap to draw
        steps = [steps[i] for i in np.linspace(0, len(steps) - 1, 4).round().astype(int)]
    fig, axes = _grid(len(groups) * len(steps), ncols=len(steps), sharey=True)
    for gi, g in enumerate(groups[:MAX_PANELS // max(1, len(steps))]):
        names = sorted({p.name for p in g.points})
        colours = _label_colours(names)
        for si, step in enumerate(steps):
            ax = axes[gi * len(steps) + si]
            for name in names:
                pts = sorted((p for p in g.points if p.name == name and p.step == step), key=lambda p: p.size)
                ax.plot([p.size for p in pts], [p.mean_abs for p in pts], marker="o", ms=3,
                        color=colours[name], label=name)
            ax.set_xscale("log", base=2)
            grid_ticks(ax, [p.size for p in g.points])
            log_axis(ax, "y")
            panel_title(ax, f"{g.label}, step {step}", fontsize=8)
            ax.set_xlabel(_size_name(result.size))
            if si == 0:
                ax.set_ylabel("mean |activation|")
                ax.legend(fontsize=6)
    min_log_span(axes[0])   # one shared y axis: a flat line stays flat
    figure_title(fig, "Coordinate check: flat in width under µP, growing under SP")
    return fig


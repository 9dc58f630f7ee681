"""The figure and data files of `scalelab coord-check`: mean |activation| of each layer against
width, one line per training step, one row of panels per scheme. Object-oriented matplotlib
(`Figure`, no pyplot), with plots.py's rules for axes and titles: no global state, no display needed."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .plots import figure_title, grid_ticks, log_axis, min_log_span, ordered_colours, panel_title

NAME = "coord_check"


def coord_check_figure(rows: list[dict]) -> Figure:
    """rows: (scheme, width, seed, step, layer, value) as `trainer.coordcheck.run` gives them;
    each point is the mean over seeds."""
    df = pd.DataFrame(rows)
    mean = df.groupby(["scheme", "layer", "step", "width"], sort=False)["value"].mean().reset_index()
    schemes, layers = list(dict.fromkeys(df["scheme"])), list(dict.fromkeys(df["layer"]))
    steps = sorted(df["step"].unique())
    fig = Figure(figsize=(3.2 * max(2, len(layers)), 2.8 * len(schemes)), layout="constrained")
    axes = fig.subplots(len(schemes), len(layers), squeeze=False, sharex=True)
    colours = ordered_colours(steps)
    for i, scheme in enumerate(schemes):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            for step in steps:
                sel = mean[(mean.scheme == scheme) & (mean.layer == layer) & (mean.step == step)]
                ax.plot(sel.width, sel.value, "o-", ms=3, lw=1.5, color=colours[step], label=f"step {step}")
            ax.set_xscale("log", base=2)
            grid_ticks(ax, df["width"])
            log_axis(ax, "y")
            min_log_span(ax)   # a width-independent layer is drawn flat, not stretched over the panel
            panel_title(ax, f"{scheme}: {layer}", fontsize=9)
            if i == len(schemes) - 1:
                ax.set_xlabel("width d_model")
            if j == 0:
                ax.set_ylabel("mean |activation|")
    axes[0][-1].legend(fontsize=7, loc="best")
    figure_title(fig, "Coordinate check: flat lines = width-independent activations (µP); rising = blow-up (SP)")
    return fig


def write_coord_check(rows: list[dict], out_dir: str) -> dict[str, str]:
    """coord_check.csv (the rows) and coord_check.png/.svg in `out_dir`; their paths by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": str(out / f"{NAME}.csv")}
    pd.DataFrame(rows).to_csv(paths["csv"], index=False)
    fig = coord_check_figure(rows)
    for ext in ("png", "svg"):
        paths[ext] = str(out / f"{NAME}.{ext}")
        fig.savefig(paths[ext], dpi=120)
    return paths

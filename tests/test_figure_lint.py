"""A lint for the report's figures: every figure the registry can draw is rendered on synthetic
data with the hard cases (flat series, narrow log ranges, one width, many panels, long labels, a
series with no finite point) and checked with matplotlib's own Agg renderer:

- every data axis has at least two labelled ticks (or shares its scale with a panel that has);
- no text lies outside the canvas; tick labels of one axis, and titles and axis labels, do not
  overlap each other; no axis hides its magnitude in an offset text (+2.51);
- every legend entry names an artist that is drawn with data, and no two entries look alike; a
  panel's legend covers none of its data points;
- a log y axis spans at least a factor of 2, so a tiny change looks tiny (a fitted exponent of
  ~0 is drawn flat, not corner to corner);
- no data line is too pale to see on the white panel.

The helpers below take a drawn Figure and return a list of problems (empty: clean), so any new
figure can be linted the same way.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import Collection
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer, Container, ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import Bbox

from analysis import synthetic as syn
from analysis.coord_figure import coord_check_figure
from analysis.fits import FitOptions, run_fits
from analysis.plots import PANEL, SkipFigure, log_axis
from analysis.registry import FIGURES

MIN_LOG_SPAN = 2.0      # a log y axis spans at least this factor
MIN_CONTRAST = 2.0      # WCAG contrast of a data line against the panel (tab10's olive is 2.01)
TOLERANCE_PX = 1.0


# ---- the lint --------------------------------------------------------------------------------

def render(fig: Figure):
    """Draw the figure with Agg (as save() does for PNG) and return the renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _name(ax) -> str:
    return repr(ax.get_title()[:60] or f"axes {ax.figure.axes.index(ax)}")


def data_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def labelled_ticks(axis: Axis) -> list[Text]:
    """The tick labels drawn on `axis`: inside its view interval, visible, with text."""
    lo, hi = sorted(axis.get_view_interval())
    span = hi - lo
    texts = []
    for locs, ticks in ((axis.get_majorticklocs(), axis.get_major_ticks), (axis.get_minorticklocs(), axis.get_minor_ticks)):
        for loc, tick in zip(locs, ticks(len(locs))):
            if not lo - 1e-9 * span <= loc <= hi + 1e-9 * span:
                continue
            for label in (tick.label1, tick.label2):
                if label.get_visible() and label.get_text().strip():
                    texts.append(label)
    return texts


def _siblings(ax, which: str) -> list:
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    return [a for a in shared.get_siblings(ax) if a is not ax and a.get_visible()]


def tick_problems(fig: Figure) -> list[str]:
    """Every data axis has ≥ 2 labelled ticks, or shares its scale with a panel that has them."""
    problems = []
    for ax in data_axes(fig):
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if len(labelled_ticks(axis)) >= 2:
                continue
            shown = [a for a in _siblings(ax, which) if len(labelled_ticks(getattr(a, f"{which}axis"))) >= 2]
            if not shown:
                texts = [t.get_text() for t in labelled_ticks(axis)]
                problems.append(f"{_name(ax)}: {which} axis has {len(texts)} labelled tick(s) {texts}")
    return problems


def _texts(fig: Figure) -> list[Text]:
    """Every text the figure draws: titles, labels, drawn tick labels, legends, free texts."""
    texts = list(fig.texts)
    if fig._suptitle is not None:
        texts.append(fig._suptitle)
    for legend in fig.legends:
        texts += legend.get_texts() + [legend.get_title()]
    for ax in data_axes(fig):
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
                  ax.xaxis.get_offset_text(), ax.yaxis.get_offset_text(), *ax.texts]
        texts += labelled_ticks(ax.xaxis) + labelled_ticks(ax.yaxis)
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts() + [ax.get_legend().get_title()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def outside_problems(fig: Figure, renderer) -> list[str]:
    canvas = fig.bbox.padded(TOLERANCE_PX)
    problems = []
    for t in _texts(fig):
        box = t.get_window_extent(renderer)
        if not (canvas.contains(box.x0, box.y0) and canvas.contains(box.x1, box.y1)):
            problems.append(f"text {t.get_text()[:60]!r} lies outside the canvas")
    for ax in data_axes(fig):
        legend = ax.get_legend()
        if legend is not None:
            box = legend.get_window_extent(renderer)
            if not (canvas.contains(box.x0, box.y0) and canvas.contains(box.x1, box.y1)):
                problems.append(f"{_name(ax)}: legend lies outside the canvas")
    return problems


def _overlap(a: Bbox, b: Bbox) -> bool:
    inter = Bbox.intersection(a, b)
    return inter is not None and inter.width > TOLERANCE_PX and inter.height > TOLERANCE_PX


def overlap_problems(fig: Figure, renderer) -> list[str]:
    """Tick labels of one axis do not overlap; titles and axis labels do not overlap each other."""
    problems = []
    for ax in data_axes(fig):
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = labelled_ticks(axis)
            boxes = [t.get_window_extent(renderer) for t in labels]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if _overlap(boxes[i], boxes[j]):
                        problems.append(f"{_name(ax)}: {which} tick labels {labels[i].get_text()!r} and "
                                        f"{labels[j].get_text()!r} overlap")
    heads = [t for ax in data_axes(fig) for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    heads = [t for t in heads + ([fig._suptitle] if fig._suptitle else []) if t.get_visible() and t.get_text().strip()]
    boxes = [t.get_window_extent(renderer) for t in heads]
    for i in range(len(heads)):
        for j in range(i + 1, len(heads)):
            if _overlap(boxes[i], boxes[j]):
                problems.append(f"{heads[i].get_text()[:40]!r} and {heads[j].get_text()[:40]!r} overlap")
    return problems


def offset_problems(fig: Figure) -> list[str]:
    """An offset ('+2.51' above the axis) makes 0.0002 read as the value: say the value."""
    return [f"{_name(ax)}: {which} axis has the offset {axis.get_offset_text().get_text()!r}"
            for ax in data_axes(fig) for which, axis in (("x", ax.xaxis), ("y", ax.yaxis))
            if axis.get_offset_text().get_visible() and axis.get_offset_text().get_text().strip()]


def _finite_xy(line: Line2D) -> np.ndarray:
    x = np.asarray(line.get_xdata(), dtype=float)
    y = np.asarray(line.get_ydata(), dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return np.column_stack([x[keep], y[keep]])


def _line_visible(line: Line2D) -> bool:
    xy = _finite_xy(line)
    if not line.get_visible() or not len(xy):
        return False
    has_marker = line.get_marker() not in (None, "None", "none", "", " ")
    has_line = line.get_linestyle() not in ("None", "none", "", " ") and len(np.unique(xy, axis=0)) >= 2
    return has_marker or has_line


def has_data(artist) -> bool:
    """Whether a legend's artist is drawn with at least one visible point."""
    if isinstance(artist, ErrorbarContainer):
        line = artist.lines[0]
        return line is not None and _line_visible(line)
    if isinstance(artist, BarContainer):
        return any(p.get_visible() and p.get_height() for p in artist.patches)
    if isinstance(artist, Container):
        return any(has_data(a) for a in artist.get_children())
    if isinstance(artist, Line2D):
        return _line_visible(artist)
    if isinstance(artist, Collection):
        return artist.get_visible() and len(artist.get_offsets()) > 0
    if isinstance(artist, Patch):
        return artist.get_visible()
    return True


def legend_problems(fig: Figure) -> list[str]:
    """Every legend entry names an artist of its panel (of the figure, for a figure legend) that is
    drawn with data."""
    problems = []
    owners = [(ax.get_legend(), [ax]) for ax in data_axes(fig) if ax.get_legend() is not None]
    owners += [(legend, data_axes(fig)) for legend in fig.legends]
    for legend, axes in owners:
        artists: dict[str, list] = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                artists.setdefault(label, []).append(handle)
        for text in legend.get_texts():
            label = text.get_text()
            if not any(has_data(a) for a in artists.get(label, [])):
                problems.append(f"legend entry {label[:60]!r} has no drawn artist with data")
    return problems


def _style(artist) -> tuple:
    if isinstance(artist, ErrorbarContainer) and artist.lines[0] is not None:
        artist = artist.lines[0]
    elif isinstance(artist, Container) and artist.get_children():
        artist = artist.get_children()[0]
    if isinstance(artist, Line2D):
        return ("line", to_rgb(artist.get_color()), artist.get_marker(), artist.get_linestyle())
    if isinstance(artist, Collection):
        return ("points", tuple(np.round(artist.get_facecolor()[:1].ravel(), 3)), str(artist.get_paths()[:1]))
    if isinstance(artist, Patch):
        return ("patch", to_rgb(artist.get_facecolor()), artist.get_hatch())
    return ("other", id(artist))


def legend_style_problems(fig: Figure) -> list[str]:
    """Two entries of one legend are not drawn alike (colour, marker and line style)."""
    problems = []
    owners = [(ax.get_legend(), [ax]) for ax in data_axes(fig) if ax.get_legend() is not None]
    owners += [(legend, data_axes(fig)) for legend in fig.legends]
    for legend, axes in owners:
        styles: dict[str, tuple] = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                styles.setdefault(label, _style(handle))
        shown = [t.get_text() for t in legend.get_texts() if t.get_text() in styles]
        seen: dict[tuple, str] = {}
        for label in shown:
            if styles[label] in seen:
                problems.append(f"legend entries {seen[styles[label]][:40]!r} and {label[:40]!r} are drawn alike")
            seen.setdefault(styles[label], label)
    return problems


def _marker_points(ax) -> np.ndarray:
    """Display coordinates of the panel's data points (markers and scatter points)."""
    pts = [ax.transData.transform(_finite_xy(line)) for line in ax.get_lines()
           if _line_visible(line) and line.get_marker() not in (None, "None", "none", "", " ")]
    pts += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
            if c.get_visible() and len(c.get_offsets())]
    return np.concatenate(pts) if pts else np.empty((0, 2))


def covered_problems(fig: Figure, renderer) -> list[str]:
    """A panel's legend covers none of its data points."""
    problems = []
    for ax in data_axes(fig):
        if ax.get_legend() is not None:
            box = ax.get_legend().get_window_extent(renderer)
            n = sum(box.contains(x, y) for x, y in _marker_points(ax))
            if n:
                problems.append(f"{_name(ax)}: the legend covers {n} data point(s)")
    return problems


def flat_problems(fig: Figure) -> list[str]:
    """A log y axis spans ≥ MIN_LOG_SPAN, so a change of a few percent is not drawn as a steep trend."""
    problems = []
    for ax in data_axes(fig):
        if ax.get_yscale() == "log":
            lo, hi = sorted(ax.get_ylim())
            if lo <= 0 or hi / lo < MIN_LOG_SPAN * (1 - 1e-6):
                problems.append(f"{_name(ax)}: log y axis spans only ×{hi / lo:.3g} ({lo:.4g} to {hi:.4g})")
    return problems


def _luminance(colour) -> float:
    rgb = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


def contrast(colour, background="white") -> float:
    a, b = sorted([_luminance(colour), _luminance(background)])
    return (b + 0.05) / (a + 0.05)


def pale_problems(fig: Figure) -> list[str]:
    problems = []
    for ax in data_axes(fig):
        for line in ax.get_lines():
            if _line_visible(line) and contrast(line.get_color(), ax.get_facecolor()) < MIN_CONTRAST:
                problems.append(f"{_name(ax)}: line {line.get_label()[:40]!r} in {line.get_color()} is too pale "
                                f"(contrast {contrast(line.get_color(), ax.get_facecolor()):.2f})")
    return problems


def lint(fig: Figure) -> list[str]:
    renderer = render(fig)
    return (tick_problems(fig) + outside_problems(fig, renderer) + overlap_problems(fig, renderer)
            + offset_problems(fig) + legend_problems(fig) + legend_style_problems(fig)
            + covered_problems(fig, renderer) + flat_problems(fig) + pale_problems(fig))


def vertical_fill(ax, renderer) -> float:
    """The largest fraction of the panel's height one data line (points or a solid fit) covers;
    dashed lines (µP's predictions) are not data."""
    box = ax.get_window_extent(renderer)
    fills = [np.ptp(ax.transData.transform(_finite_xy(line))[:, 1]) / box.height for line in ax.get_lines()
             if _line_visible(line) and line.get_linestyle() != "--"]
    return float(max(fills, default=0.0))


# ---- the worlds --------------------------------------------------------------------------------

OPTIONS = FitOptions(n_boot=20, n_boot_scaling=10)


@pytest.fixture(scope="module")
def worlds():
    """Each hard case, its tables and its fits."""
    out = {}
    for name, tables in syn.figure_hard_cases().items():
        out[name] = (tables, run_fits(tables, OPTIONS)["results"])
    return out


@pytest.fixture(scope="module")
def figures(worlds):
    """Each world's drawn figures by name (a figure it has no data for is absent)."""
    out = {}
    for case, (tables, results) in worlds.items():
        drawn = {spec.name: draw(spec, tables, results) for spec in FIGURES}
        out[case] = {name: fig for name, fig in drawn.items() if fig is not None}
    return out


def draw(spec, tables, results) -> Figure | None:
    result = results.get(spec.analysis.name)
    if result is None:
        return None
    try:
        return spec.draw(result, tables)
    except SkipFigure:
        return None


CASES = ["full", "flat", "one_width", "absent", "ladder", "ladder_one_seed"]


@pytest.mark.parametrize("case", CASES)
def test_every_figure_passes_the_lint(figures, case):
    problems = [f"{name}: {p}" for name, fig in figures[case].items() for p in lint(fig)]
    assert not problems, "\n".join(problems)


def test_the_worlds_draw_every_figure_of_the_registry(figures):
    drawn = {name for world in figures.values() for name in world}
    assert drawn == {spec.name for spec in FIGURES}


def test_a_fitted_exponent_of_zero_is_drawn_flat(worlds, figures):
    _, results = worlds["flat"]
    exponents = [s.fit.exponent for g in results["multipliers"].groups for s in g.series if s.fit.exponent is not None]
    assert exponents and max(map(abs, exponents)) < 0.05      # the world is flat: p ≈ 0
    for name in ("multipliers_vs_width", "optimum_vs_size", "coord_check"):
        fig = figures["flat"][name]
        renderer = render(fig)
        fills = [vertical_fill(ax, renderer) for ax in data_axes(fig)]
        assert max(fills) < 0.25, f"{name}: a flat series fills {max(fills):.0%} of its panel's height"


def test_coord_check_command_figure_passes_the_lint():
    rows = [dict(scheme=s, width=w, seed=0, step=t, layer=layer, value=(1.0 + j) * (w / 64) ** (0.5 * t if s == "sp" else 0.0)
                 * (1 + 0.01 * math.sin(w + t)))
            for s in ("sp", "mup") for w in (64, 128, 256) for t in (0, 1, 2) for j, layer in enumerate(("embedding", "block.0"))]
    assert lint(coord_check_figure(rows)) == []


def test_the_lint_finds_what_it_is_for():
    """Each check fires on a figure that has its problem."""
    fig = Figure(figsize=(6, 2))
    ax, bare = fig.subplots(1, 2)
    bare.plot([1, 2], [1, 2])
    bare.plot(np.linspace(1.8, 2, 9), np.linspace(1.9, 2, 9), "o", label="under the legend")
    bare.legend(loc="upper right")
    bare.yaxis.set_major_formatter(NullFormatter())
    ax.plot([128, 1024], [1.0, 1.01], label="drawn")
    ax.plot([], [], label="absent")
    ax.plot([128, 1024], [1.0, 1.005], color="C0", label="twin")
    ax.plot([1, 2], [1, 1], color="#e0e0e0")
    ax.set_yscale("log")
    ax.set_title("a title far too long to fit on a figure this narrow, running off the right edge")
    ax.set_xticks([1, 1.01], ["one label", "another label"])
    ax.legend()
    problems = lint(fig)
    for expected in ("labelled tick", "outside the canvas", "tick labels", "'absent' has no drawn artist",
                     "spans only", "too pale", "drawn alike", "legend covers"):
        assert any(expected in p for p in problems), (expected, problems)


@pytest.mark.parametrize("span", [1.01, 1.3, 2.0, 3.0, 10.0, 1e3, 1e12])
@pytest.mark.parametrize("start", [1e-7, 0.37, 1.0, 6e12])
def test_a_log_axis_of_any_range_gets_readable_ticks(start, span):
    """Narrow compute or loss ranges: round ticks, ≥ 2 labelled, none overlapping, on both axes."""
    fig = Figure(figsize=PANEL, layout="constrained")
    ax = fig.subplots()
    ax.plot([start, start * span], [start, start * span], marker="o")
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set_xlim(start, start * span)
    ax.set_ylim(start, start * span)
    renderer = render(fig)
    assert tick_problems(fig) + overlap_problems(fig, renderer) + outside_problems(fig, renderer) == []


def test_loss_vs_hp_ticks_at_the_grid_on_one_loss_scale(worlds, figures):
    tables, results = worlds["full"]
    fig = figures["full"]["loss_vs_hp"]
    render(fig)
    grid = {round(float(v), 12) for v in tables.trials["lr"]}
    panels = data_axes(fig)
    for ax in panels:
        ticks = [t.get_position()[0] for t in labelled_ticks(ax.xaxis)]
        mine = {round(p.hp, 12) for c in results["transfer"].curves for p in c.points
                if c.label == ax.get_title().replace("\n", " ")}
        assert ticks and (set(np.round(ticks, 12)) <= grid or len(mine) == 1), ax.get_title()
        assert ax.get_ylim() == panels[0].get_ylim()

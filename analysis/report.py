"""Build a report directory from `Tables`: every fit (summary.json), every figure that has
data (figures/*.png and *.svg), a readable report.md that puts the parametrizations side by
side, and report.html: the same page with its figures embedded (what MLflow's artifact view shows).
summary.json is written right after the fits and again after the figures, so a crash while
drawing loses nothing that was computed. Figures and report.md read the typed results; the
returned summary is summary.json's content (every result as its `to_dict()`)."""
from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import frames, report_html, report_md
from .fits import run_fits
from .options import FitOptions
from .plots import SkipFigure, save
from .registry import ANALYSES, FIGURES, load
from .tables import Tables

SUMMARY_VERSION = 1


def build_report(tables: Tables, out_dir: str | os.PathLike, options: FitOptions | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    options = options or FitOptions()
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    fits = run_fits(tables, options, say)
    summary = {"scalelab_report": SUMMARY_VERSION,
               "generated_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
               "source": tables.meta.get("source", "snapshot"), "experiments": tables.experiments,
               "sweeps": sorted(map(str, tables.trials["sweep"].dropna().unique())) if "sweep" in tables.trials else [],
               "n_trials": len(tables.trials), "outcomes": frames.outcome_counts(tables.trials),
               "treatment": frames.TREATMENT, "options": dataclasses.asdict(options),
               "results": fits["results"], "skipped": fits["skipped"], "figures": {}, "skipped_figures": {}}
    _write(out / "summary.json", json.dumps(_json(summary), indent=1, allow_nan=False))
    _draw(summary, tables, out / "figures", say)
    say("writing summary.json and report.md")
    _write(out / "summary.json", json.dumps(_json(summary), indent=1, allow_nan=False))
    markdown = render(summary)
    _write(out / "report.md", markdown)
    title = f"scalelab report: {', '.join(summary['experiments']) or 'snapshot'}"
    _write(out / "report.html", report_html.to_html(markdown, out, title))
    say(f"report written to {out}: report.html, report.md, summary.json, {len(summary['figures'])} figure(s)")
    return _json(summary)


def render(summary: dict) -> str:
    """report.md from a summary (typed results, or their JSON as summary.json holds them)."""
    r = {name: load(result) for name, result in summary["results"].items()}
    summary = {**summary, "results": r}
    parts = [report_md.header_part(summary)]
    parts += [a.section(r[a.name], summary) for a in ANALYSES if a.name in r]
    parts += [report_md.figures_part(summary), report_md.skipped_part(summary), report_md.warnings_part(summary),
              report_md.treatment_part(summary)]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


def _json(summary: dict) -> dict:
    """The summary as summary.json holds it: every typed result as its to_dict()."""
    return {**summary, "results": {name: result.to_dict() for name, result in summary["results"].items()}}


def _draw(summary: dict, tables: Tables, fig_dir: Path, say: Callable[[str], None]) -> None:
    results, skipped = summary["results"], summary["skipped"]
    for figure in FIGURES:
        name = figure.analysis.name
        if name not in results:   # skipped: say why; not run (it does not apply, e.g. depth transfer): nothing
            if name in skipped:
                summary["skipped_figures"][figure.name] = skipped[name]
            continue
        say(f"figure: {figure.name}")
        try:
            fig = figure.draw(results[name], tables)
        except SkipFigure as err:
            summary["skipped_figures"][figure.name] = str(err)
            continue
        files = save(fig, fig_dir, figure.name)
        summary["figures"][figure.name] = {"description": figure.description, "files": [f"figures/{f}" for f in files]}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

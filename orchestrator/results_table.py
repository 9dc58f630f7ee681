"""The results table a researcher reads first: one row per trial of an experiment (or of one
sweep in it), read back from MLflow, sorted by final validation loss, the best trial of each
parametrization × width marked. `scalelab run` prints it at its end; `scalelab status SWEEP.yaml`
or `scalelab status EXPERIMENT` prints it any time, without Ray. `trial_rows` builds the rows,
`format_rows` writes them as text (`--json` prints the rows themselves)."""
from __future__ import annotations

import math

from trainer import metrics as m

from .layout import OUTCOME_FINISHED, TAG_LABEL, TAG_OUTCOME
from .tracking_query import trial_runs

PARAM_PARAMETRIZATION = "parametrization"   # logged by run_writes.SweepTracker.start_child
PARAM_WIDTH = "d_model"
# params that differ between trials without being swept (the size follows the width)
NOT_SWEPT = {PARAM_PARAMETRIZATION, "n_params"}
BEST_MARK = "*"


def sweep_rows(tracking_uri: str, spec) -> list[dict]:
    """The rows of sweep `spec`'s own trials in its experiment (the end of `scalelab run`, and
    `scalelab status SWEEP.yaml`)."""
    return trial_rows(trial_runs(tracking_uri, spec.experiment, spec.name) or [], swept_keys(spec))


def trial_rows(runs: list, swept: list[str] | None = None) -> list[dict]:
    """One dict per trial run (`tracking_query.trial_runs`): label, parametrization, width,
    `swept` {key: value} (default: the params that differ between the runs), outcome, final and
    best val loss, tokens/s, training seconds, and `best` (the lowest final loss of its
    parametrization × width among finished trials). Sorted by final val loss, trials without one
    last."""
    if swept is None:
        swept = _varying_params(runs)
    rows = [_row(run, swept) for run in runs]
    _mark_best(rows)
    rows.sort(key=lambda r: (r["final_val_loss"] is None, r["final_val_loss"] or 0.0, r["label"]))
    return rows


def swept_keys(spec) -> list[str]:
    """The keys a sweep file varies: its grid and zip axes or search space, and the seed when it
    has several."""
    keys = list(spec.search.space) if spec.search else [*spec.grid, *spec.zip]
    return keys + (["seed"] if len(spec.seeds) > 1 else [])


def _varying_params(runs: list) -> list[str]:
    keys = sorted({k for run in runs for k in run.data.params} - NOT_SWEPT)
    return [k for k in keys if len({run.data.params.get(k) for run in runs}) > 1]


def _row(run, swept: list[str]) -> dict:
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    width = params.get(PARAM_WIDTH)
    return {"label": tags.get(TAG_LABEL) or run.info.run_name or run.info.run_id,
            "parametrization": params.get(PARAM_PARAMETRIZATION),
            "width": int(width) if width and width.isdigit() else width,
            "swept": {k: params.get(k) for k in swept},
            "outcome": tags.get(TAG_OUTCOME) or run.info.status.lower(),
            "final_val_loss": _number(metrics.get(m.FINAL_VAL_LOSS)),
            "best_val_loss": _number(metrics.get(m.MIN_VAL_LOSS)),
            "tokens_per_s": _number(metrics.get(m.TOKENS_PER_S)),
            "train_seconds": _number(metrics.get(m.WALL_TIME_S, metrics.get(m.ELAPSED_S))),
            "run_id": run.info.run_id,
            "best": False}


def _number(value) -> float | None:
    """A finite float, else None (JSON has no NaN; a diverged run's loss is its outcome)."""
    return float(value) if value is not None and math.isfinite(value) else None


def _mark_best(rows: list[dict]) -> None:
    best: dict[tuple, dict] = {}
    for row in rows:
        if row["outcome"] != OUTCOME_FINISHED or row["final_val_loss"] is None:
            continue
        group = (row["parametrization"], row["width"])
        if group not in best or row["final_val_loss"] < best[group]["final_val_loss"]:
            best[group] = row
    for row in best.values():
        row["best"] = True


END_OF_RUN_ROWS = 40  # rows `scalelab run` prints at its end; `status` prints all


def format_rows(rows: list[dict], limit: int | None = None) -> str:
    """The rows as an aligned text table, with a line saying what the mark means. With `limit`,
    the best `limit` rows and every marked one (the end of a 100,000-trial run is not a listing)."""
    if not rows:
        return "no trial runs recorded yet"
    hidden = 0
    if limit is not None and len(rows) > limit:
        shown = [r for i, r in enumerate(rows) if i < limit or r["best"]]
        hidden, rows = len(rows) - len(shown), shown
    swept = list(rows[0]["swept"])
    head = ["", "trial", *swept, "outcome", "final val", "best val", "tokens/s", "time"]
    body = [[BEST_MARK if r["best"] else "", r["label"], *(str(r["swept"].get(k)) for k in swept), r["outcome"],
             _fixed(r["final_val_loss"], 4), _fixed(r["best_val_loss"], 4), _fixed(r["tokens_per_s"], 0),
             _duration(r["train_seconds"])] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [head, *body]]
    text.append(f"({BEST_MARK}: the lowest final val loss of its parametrization × width among finished trials)")
    if hidden:
        text.append(f"... and {hidden} more trials: scalelab status SWEEP.yaml lists them all (--json for scripts)")
    return "\n".join(text)


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"

"""What a sweep's parent MLflow run shows (docs/running.md, "What lands in MLflow"): the sweep's
settings as params, the results table (results_table.py rows) as an MLflow table, and the best
final validation loss overall and per parametrization × width as metrics, so the run list can
filter and sort sweeps. Pure functions; run_writes.SweepTracker.record_answer writes them."""
from __future__ import annotations

import json
import re

from .layout import BEST_METRIC
from .trial import short_value

# Columns of the results table artifact, in order; the swept keys go after the label.
HEAD_COLUMNS = ("best", "label")
TAIL_COLUMNS = ("outcome", "final_val_loss", "best_val_loss", "tokens_per_s", "train_seconds",
                "parametrization", "width", "run_id")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value


def sweep_params(spec) -> dict[str, str]:
    """The sweep's settings, as the run list filters on them: each fixed setting under its own
    name (the same name and text as the trials' params), each swept axis as `grid.KEY` /
    `zip.KEY` (its values) or `search.KEY` (its range), the seeds, and the mode."""
    params = {key: _text(value) for key, value in spec.base.items()}
    for section, axes in (("grid", spec.grid), ("zip", spec.zip)):
        for key, values in axes.items():
            params[f"{section}.{key}"] = ",".join(short_value(v) for v in values)
    if spec.search:
        params.update({f"search.{key}": text for key, text in spec.search.space_text.items()})
        # not num_samples: asking for more samples is a rerun of the same sweep, and params cannot change
        params.update({"search.metric": spec.search.metric, "search.mode": spec.search.mode})
    params["seeds"] = ",".join(str(s) for s in spec.seeds)
    params["mode"] = spec.mode
    return {k: v[:MAX_PARAM_CHARS] for k, v in params.items()}


def _text(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


def table(rows: list[dict]) -> dict:
    """The rows as MLflow's table artifact format (what `MlflowClient.log_table` writes for a
    DataFrame: {"columns": [...], "data": [[...], ...]}), one column per swept key."""
    swept = list(rows[0]["swept"]) if rows else []
    columns = [*HEAD_COLUMNS, *swept, *TAIL_COLUMNS]
    data = [[r["best"], r["label"], *(r["swept"].get(k) for k in swept), *(r[c] for c in TAIL_COLUMNS)]
            for r in rows]
    return {"columns": columns, "data": data}


def best_metrics(rows: list[dict]) -> dict[str, float]:
    """BEST_METRIC overall and `BEST_METRIC/<parametrization>/d<width>` for each group's best
    finished trial (the rows marked best)."""
    best = [r for r in rows if r["best"]]
    out = {group_metric(r["parametrization"], r["width"]): r["final_val_loss"] for r in best}
    if best:
        out[BEST_METRIC] = min(r["final_val_loss"] for r in best)
    return out


def best_row(rows: list[dict]) -> dict | None:
    """The marked row with the lowest final val loss."""
    best = [r for r in rows if r["best"]]
    return min(best, key=lambda r: r["final_val_loss"]) if best else None


def group_metric(parametrization, width) -> str:
    """`best_final_val_loss/mup_vector/d256`: MLflow metric names allow letters, digits and
    `_ - . / space` only, so the rest (the `+` of `mup+vector`) becomes `_`."""
    name = f"{BEST_METRIC}/{parametrization}/d{width}"
    return re.sub(r"[^\w./ -]", "_", name)

"""Coordinate check (microsoft/mup; docs/science.md §6): mean |activation| per layer against
width over the first few training steps. Flat in width under µP, growing under SP. The
numbers only: analysis/coord_figure.py draws them for `scalelab coord-check`."""
from __future__ import annotations

import math

import numpy as np

from .config import TrainConfig
from .data import Batches, load_tokens

# label -> config overrides; the three parametrizations the project compares
SCHEMES = {"sp": {"scheme": "sp"}, "mup": {"scheme": "mup"},
           "mup+vector": {"scheme": "mup", "multipliers": "vector"}}
DEFAULTS = {"n_layers": 2, "head_dim": 16, "seq_len": 64, "batch_size": 8, "lr": 1e-2,
            "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0, "base_width": 64,
            "grad_clip": 0.0, "eval_batches": 1}


def run(base: TrainConfig, widths: list[int], schemes: list[str], steps: int = 5,
        seeds: int = 2) -> list[dict]:
    """Rows of (scheme, width, seed, step, layer, value): value = mean |activation| of that
    layer's output on a fixed batch, recorded before training (step 0) and after each step."""
    from .loop import Trainer  # torch-heavy

    tokens = load_tokens(base)
    rows = []
    for label in schemes:
        for width in widths:
            for seed in range(seeds):
                cfg = base.model_copy(update={**SCHEMES[label], "d_model": width, "seed": seed,
                                              "steps": steps + 1})
                cfg = TrainConfig.build(cfg.model_dump(), source=f"coord-check {label} d={width}")
                trainer = Trainer(cfg, Batches(cfg, tokens))
                for step in range(steps + 1):
                    if step:
                        trainer.train_step()
                    _, acts = trainer.evaluate()
                    rows += [{"scheme": label, "width": width, "seed": seed, "step": step,
                              "layer": layer, "value": value} for layer, value in acts.items()]
    return rows


def slopes(rows: list[dict]) -> dict[tuple[str, str, int], float]:
    """(scheme, layer, step) -> slope of log2(mean over seeds of |act|) against log2(width):
    0 means flat in width, 1 means doubling with each doubling of width."""
    table: dict[tuple[str, str, int], dict[int, list[float]]] = {}
    for r in rows:
        table.setdefault((r["scheme"], r["layer"], r["step"]), {}).setdefault(r["width"], []).append(r["value"])
    out = {}
    for key, by_width in table.items():
        widths = sorted(by_width)
        x = np.log2(widths)
        y = np.log2([np.mean(by_width[w]) for w in widths])
        out[key] = float(np.polyfit(x, y, 1)[0]) if len(widths) > 1 else math.nan
    return out

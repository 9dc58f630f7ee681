"""Coordinate check (microsoft/mup; docs/science.md §6): mean |activation| per layer against
width over the first few training steps. Flat in width under µP, growing under SP. The
numbers only: analysis/coordcheck.py fits them (`coord_check_rows`, the report's fit) and
analysis/coord_figure.py draws them for `scalelab coord-check`."""
from __future__ import annotations

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


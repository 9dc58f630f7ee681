"""The multipliers' relative change per step (analysis/multiplier_updates.py) on histories with a
known rate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.multiplier_updates import fit_multiplier_updates, relative_rates


def _history(run_id: str, rate: float, steps=range(10, 160, 10)) -> pd.DataFrame:
    rows = [{"run_id": run_id, "trial_hash": run_id, "key": key, "step": s, "value": np.exp(sign * rate * s)}
            for key, sign in (("mult/attn_q.0/row_rms", 1), ("mult/mlp_up.0/col_rms", -1))
            for s in steps]
    rows.append({"run_id": run_id, "trial_hash": run_id, "key": "mult/attn_q.0/row_max", "step": 10, "value": 9.0})
    return pd.DataFrame(rows)


def test_a_multiplier_growing_as_exp_rate_times_step_moves_at_that_rate_either_way():
    rates = relative_rates(pd.concat([_history("a", 1e-3), _history("b", 4e-4)]))
    assert rates["a"] == pytest.approx(1e-3) and rates["b"] == pytest.approx(4e-4)


def test_the_width_exponent_of_the_rate_per_arm():
    runs, history = [], []
    for e in (-1.0, 0.0):
        for d in (32, 64, 128):
            for seed in (0, 1):
                run_id = f"e{e}-d{d}-s{seed}"
                runs.append({"run_id": run_id, "d_model": d, "seed": seed, "parametrization": "mup+vector",
                             "outcome": "finished", "mode": "grid", "lr": 8e-3, "final_val_loss": 2.0,
                             "multiplier_lr_width_exponent": e})
                history.append(_history(run_id, 3e-4 * (d / 32) ** (0.8 * e) * (1 + 0.01 * seed)))
    result = fit_multiplier_updates(pd.DataFrame(runs), pd.concat(history))
    fits = {g.group["multiplier_lr_width_exponent"]: g.fit for g in result.groups}
    assert fits[-1.0].exponent == pytest.approx(-0.8, abs=1e-6) and fits[0.0].exponent == pytest.approx(0, abs=1e-6)
    assert fits[-1.0].exponent_ci[0] < -0.8 < fits[-1.0].exponent_ci[1]

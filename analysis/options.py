"""The options every fit of a report reads. Its own module, free of heavy imports, so that the
`scalelab report` parser takes its defaults from here while `scalelab --help` stays fast."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FitOptions:
    hp: str = "lr"                    # swept hyperparameter of the transfer fit
    size: str = "d_model"             # width column (n_layers for depth transfer)
    loss: str = "final_val_loss"
    k: int = 2                        # window of the transfer optimum: best grid point ± k
    estimator: str = "asymmetric"     # transfer optimum: "asymmetric" bowl or "parabola" (transfer.ESTIMATORS)
    n_boot: int = 200                 # seed-bootstrap replicates
    n_boot_scaling: int = 100         # scaling-law bootstrap (one L-BFGS-B fit per replicate)
    scaling_interval: str = "pairs"   # scaling-law bootstrap: "pairs" or "residual" (scaling.INTERVALS)
    level: float = 0.95               # confidence level of every interval
    seed: int = 0                     # RNG seed of the bootstraps (reports are reproducible)
    reference: str | None = None      # parametrization the gaps are measured against (default mup)
    init_loss: float | None = None    # ℓ_init of the LR sensitivity (default ln vocab_size)
    coord_steps: int = 5              # first steps shown by the coordinate check

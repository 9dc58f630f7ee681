"""How much faster a fused pack steps than its members one at a time, measured on this machine.

Both arms train the same configs on the same torch threads; the arms alternate within each
round (their order swapping every round) and each ratio is taken within a round, so a busy
machine slows both alike. Used by `scalelab plan` (the speed-up it shows for CPU packs) and by
benchmarks/bench_fused.py. What is timed is steady-state training steps; the per-trial start-up
a pack pays once for K members comes on top and is not counted.
"""
from __future__ import annotations

import statistics
import time

from .config import TrainConfig
from .data import Batches, load_tokens
from .fused import FusedTrainer
from .loop import Trainer


def time_arms(cfgs: list[TrainConfig], steps: int = 2, rounds: int = 3, clock=time.process_time,
              tokens=None) -> tuple[list[float], list[float]]:
    """Per round: (seconds for `steps` steps of each config alone, seconds for `steps` steps of
    the fused pack), after one warm-up step of each."""
    tokens = load_tokens(cfgs[0]) if tokens is None else tokens
    alone = [Trainer(c, Batches(c, tokens)) for c in cfgs]
    fused = FusedTrainer(cfgs, tokens)
    for t in alone + [fused]:
        t.train_step()
    t_alone, t_fused = [], []

    def run_alone():
        tic = clock()
        for t in alone:
            for _ in range(steps):
                t.train_step()
        t_alone.append(clock() - tic)

    def run_fused():
        tic = clock()
        for _ in range(steps):
            fused.train_step()
        t_fused.append(clock() - tic)

    for r in range(rounds):
        for arm in ((run_alone, run_fused) if r % 2 == 0 else (run_fused, run_alone)):
            arm()
    return t_alone, t_fused


def speedup(cfgs: list[TrainConfig], steps: int = 2, rounds: int = 3) -> float:
    """Median over rounds of time alone / time fused (> 1: the pack is faster)."""
    t_alone, t_fused = time_arms(cfgs, steps, rounds)
    return statistics.median(a / f for a, f in zip(t_alone, t_fused))

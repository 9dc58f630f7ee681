"""Training throughput of a fused pack of K members (trainer/fused.py) against the same K
configs trained one at a time (loop.Trainer), side by side in one run.

Both arms train the same K configs (one shape; members differ in seed and LR) on the same
torch threads, so they use the same cores; a sweep on 2 cores runs two trials, or two packs,
side by side. What is timed is training steps (data batch, forward, backward, clip, optimizer
step), after a warm-up step: steady-state training throughput. A real sweep that runs one
trial per process also pays, per trial, process start-up, imports, data loading and model
construction; a pack pays those once for K members. That saving comes on top and is not
measured here (benchmarks/bench_orchestration.py measures the per-trial overhead).

The arms alternate within each round (their order swapping every round), each ratio is taken
within a round, and the median of the per-round ratios is reported with its interquartile
range, so the noise of a shared machine shows.

    python benchmarks/bench_fused.py [--widths 64,128,256,512] [--ks 1,4,8,16] [--rounds 5]
        [--steps 2] [--threads 1] [--clock cpu] [--batch-size 8] [--seq-len 64]
        [--multipliers none] [--max-width-k 2048]

Goal: >= 1.3x the throughput of one-at-a-time at widths 64-128 with K >= 4.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainer.config import TrainConfig
from trainer.data import load_tokens
from trainer.fused_probe import time_arms


def paired_ratio(a: list[float], b: list[float]) -> str:
    """Median of the per-round ratios a_i / b_i, with the interquartile range."""
    ratios = sorted(x / y for x, y in zip(a, b))
    q1, med, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return f"{med:.2f} [{q1:.2f}, {q3:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="64,128,256,512")
    ap.add_argument("--ks", default="1,4,8,16", help="pack sizes K")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per arm per round")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both arms (the sweeps run trials with threads: 1, side by side)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--multipliers", default="none")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                    help="cpu: CPU time of this process (robust to other work on a shared machine; with more "
                         "than one thread it counts every thread's time); wall: elapsed time")
    ap.add_argument("--max-width-k", type=int, default=2048,
                    help="skip cells with width x K above this (keeps the run to a few minutes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    shape = dict(n_layers=args.n_layers, head_dim=32, seq_len=args.seq_len, batch_size=args.batch_size,
                 warmup_steps=0, steps=10_000, scheme="mup", base_width=128, multipliers=args.multipliers)
    tokens = load_tokens(TrainConfig())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) per arm, {args.clock} clock; "
          f"shape {shape}; {args.rounds} rounds x {args.steps} steps")
    print("throughput ratio = time of K models one at a time / time of the fused pack (> 1: fusion is faster)\n")
    print(f"{'width':>6} {'K':>3} {'alone ms/member-step':>21} {'fused ms/member-step':>21} "
          f"{'fused throughput ratio [IQR]':>29}")
    for width in (int(w) for w in args.widths.split(",")):
        for K in (int(k) for k in args.ks.split(",")):
            if width * K > args.max_width_k:
                continue
            cfgs = [TrainConfig(**shape, d_model=width, seed=k, lr=1e-3 * 2 ** (k % 4)) for k in range(K)]
            t_alone, t_fused = time_arms(cfgs, args.steps, args.rounds, clock, tokens)
            per = lambda ts: statistics.median(ts) / (K * args.steps) * 1e3  # noqa: E731
            print(f"{width:>6} {K:>3} {per(t_alone):>21.1f} {per(t_fused):>21.1f} "
                  f"{paired_ratio(t_alone, t_fused):>29s}", flush=True)


if __name__ == "__main__":
    main()

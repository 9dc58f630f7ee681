"""How long `scalelab validate` takes on a large grid (the hardening target: a 100,000-trial
sweep in at most 5 s on 2 cores), and its parts, measured in one run:
the whole command in a fresh process (start-up included), and `load_sweep` alone in this one.

    python benchmarks/bench_validate.py [--trials 100000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sweep_text(trials: int) -> str:
    seeds = 10
    per_axis = max(1, round((trials / seeds) ** 0.5))
    lrs = [round(1e-4 * (1 + i / per_axis), 10) for i in range(per_axis)]
    wds = [round(1e-3 * (1 + i / per_axis), 10) for i in range(per_axis)]
    return (f"name: big\nbase: {{d_model: 64, head_dim: 32, n_layers: 2}}\n"
            f"grid:\n  lr: {lrs}\n  weight_decay: {wds}\nseeds: {seeds}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from orchestrator.spec import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(sweep_text(args.trials))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(path)], env=env,
                                  capture_output=True, text=True, cwd=tmp)
            command = time.perf_counter() - start
            start = time.perf_counter()
            n = len(load_sweep(str(path)).trials())
            inside = time.perf_counter() - start
            print(f"{n} trials: `scalelab validate` {command:.2f} s (exit {done.returncode}), "
                  f"load_sweep alone {inside:.2f} s; target ≤ 5 s")


if __name__ == "__main__":
    main()

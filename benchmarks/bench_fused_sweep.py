"""A sweep of small trials through `scalelab run`, fused (`fuse: K`) vs one Ray trial per
trial (`fuse: off`), side by side in one run on the same cores.

Unlike benchmarks/bench_fused.py (steady-state training steps only), this times what a user
waits for: the whole `run_sweep` of a grid, with Ray scheduling, one MLflow run per trial,
report journals, checkpoints and evaluations. Both arms run the same 2·K trials (LRs × seeds)
in one running private Ray with `--num-cpus` CPUs, `resources.cpu: 1` and `threads: 1`: the
unfused arm runs that many trials at once, the fused arm that many packs of K. Each arm writes
to its own experiment in one SQLite MLflow store; the arms alternate (order swapping every
round) and the ratio is taken within a round.

    python benchmarks/bench_fused_sweep.py [--widths 64,128] [--ks 4,8] [--rounds 2]
        [--steps 100] [--batch-size 8] [--seq-len 64] [--num-cpus 2]

Ratio = wall time unfused / wall time fused (> 1: fusion is faster).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_sweep(folder: Path, name: str, width: int, k: int, fuse, args) -> Path:
    base = {"d_model": width, "head_dim": 32, "n_layers": 2, "seq_len": args.seq_len, "batch_size": args.batch_size,
            "steps": args.steps, "warmup_steps": max(1, args.steps // 10), "eval_interval": max(1, args.steps // 2),
            "eval_batches": 2, "scheme": "mup", "device": "cpu", "threads": 1}
    lrs = [round(1e-3 * 2 ** (i / 2), 6) for i in range(k)]
    doc = {"name": name, "experiment": name, "base": base, "grid": {"lr": lrs}, "seeds": 2,
           "resources": {"cpu": 1, "gpu": 0}, "retries": 0, "fuse": fuse}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def timed_sweep(path: Path, folder: Path) -> float:
    from orchestrator.runner import RunOptions, run_sweep
    from orchestrator.spec import load_sweep

    spec = load_sweep(str(path))
    opts = RunOptions(tracking_uri="sqlite:///" + str(folder / "mlflow.db"), storage=str(folder / "store"),
                      out=io.StringIO())
    start = time.perf_counter()
    summary = run_sweep(spec, opts)
    took = time.perf_counter() - start
    assert summary.remaining == 0 and summary.count("failed") == 0, summary.text()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="64,128")
    ap.add_argument("--ks", default="4,8", help="pack sizes K (each arm runs 2·K trials)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args()

    from orchestrator.ray_local import init_private_ray, quiet_tune, shutdown_private_ray

    quiet_tune()
    temp_dir = init_private_ray(num_cpus=args.num_cpus)
    print(f"{args.num_cpus} CPUs, 1 CPU and 1 thread per Ray trial; 2 layers, {args.batch_size} x {args.seq_len} "
          f"tokens per step, {args.steps} steps; {args.rounds} rounds")
    print(f"{'width':>6} {'K':>3} {'trials':>6} {'unfused s':>10} {'fused s':>10} {'ratio (median of rounds)':>25}")
    try:
        with tempfile.TemporaryDirectory(prefix="scalelab-bench-") as tmp:
            folder = Path(tmp)
            timed_sweep(write_sweep(folder, "warmup", 32, 1, "off", args), folder)  # imports, database
            n = 0
            for width in (int(w) for w in args.widths.split(",")):
                for k in (int(x) for x in args.ks.split(",")):
                    off_s, fused_s = [], []
                    for r in range(args.rounds):
                        arms = [("off", off_s), (k, fused_s)]
                        for fuse, times in (arms if r % 2 == 0 else arms[::-1]):
                            n += 1  # a fresh experiment per arm and round: nothing is skipped as done
                            times.append(timed_sweep(write_sweep(folder, f"b{n}", width, k, fuse, args), folder))
                    ratio = statistics.median(a / b for a, b in zip(off_s, fused_s))
                    print(f"{width:>6} {k:>3} {2 * k:>6} {statistics.median(off_s):>10.1f} "
                          f"{statistics.median(fused_s):>10.1f} {ratio:>25.2f}", flush=True)
    finally:
        shutdown_private_ray(temp_dir)


if __name__ == "__main__":
    main()

"""What scalelab's orchestration costs, measured side by side in one run.

1. A sweep of N tiny trials through `run_sweep` (local embedded Ray, MLflow on SQLite, one trial
   at a time) vs the same trials' training alone (`trainer.loop.train` in a loop, no tracking)
   → overhead ratio and seconds of overhead per trial, cold (the command as a user runs it:
   Ray start-up and a new MLflow database included) and marginal (one more trial in a running
   sweep: a 2N-trial sweep minus an N-trial sweep, both in an already running Ray).
2. Tracking cost per reported step on SQLite: our path (`SweepTracker.log_report`: one
   `log_batch` per step) vs one `log_metric` call per key → ratio.

    python benchmarks/bench_orchestration.py [--trials 8] [--steps 40] [--reports 20]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = {"d_model": 32, "head_dim": 16, "n_layers": 1, "seq_len": 32, "batch_size": 4, "warmup_steps": 2,
        "eval_interval": 10, "eval_batches": 1, "device": "cpu", "threads": 1}


def write_sweep(folder: Path, name: str, trials: int, steps: int) -> Path:
    lrs = [round(1e-3 * (1 + i), 6) for i in range(trials)]
    doc = {"name": name, "experiment": name, "base": {**BASE, "steps": steps}, "grid": {"lr": lrs},
           "resources": {"cpu": 1, "gpu": 0}, "concurrency": 1, "retries": 0}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def train_alone(spec) -> float:
    from trainer.loop import train

    start = time.perf_counter()
    for trial in spec.trials():
        train(trial.config, report=lambda metrics, path: None)
    return time.perf_counter() - start


def sweep(spec, folder: Path, db: str = "mlflow.db") -> float:
    from orchestrator.runner import RunOptions, run_sweep

    opts = RunOptions(tracking_uri="sqlite:///" + str(folder / db), storage=str(folder / "store"),
                      out=io.StringIO())
    start = time.perf_counter()
    summary = run_sweep(spec, opts)
    took = time.perf_counter() - start
    assert summary.count("finished") == len(spec.trials()), summary.text()
    return took


def warm_sweeps(folder: Path, n: int, steps: int) -> tuple[float, float]:
    """Wall time of an N- and a 2N-trial sweep in one running Ray and an existing MLflow db."""

    from orchestrator.ray_local import init_private_ray, quiet_tune, shutdown_private_ray
    from orchestrator.spec import load_sweep

    quiet_tune()
    temp_dir = init_private_ray(num_cpus=2)
    try:
        sweep(load_sweep(str(write_sweep(folder, "warmup", 1, steps))), folder, "warm.db")
        small = sweep(load_sweep(str(write_sweep(folder, "warm-n", n, steps))), folder, "warm.db")
        large = sweep(load_sweep(str(write_sweep(folder, "warm-2n", 2 * n, steps))), folder, "warm.db")
    finally:
        shutdown_private_ray(temp_dir)
    return small, large


def a_report(spec) -> dict:
    """A real trainer report (vector multipliers: the widest one) to log in the tracking test."""
    from trainer.config import TrainConfig
    from trainer.loop import train

    cfg = TrainConfig.build({**spec.trials()[0].config.model_dump(), "scheme": "mup",
                             "multipliers": "vector", "n_layers": 2, "steps": 10})
    return train(cfg).history[-1]


def tracking_cost(folder: Path, report: dict, reports: int) -> tuple[float, float, int]:
    from mlflow.tracking import MlflowClient

    from orchestrator.run_writes import SweepTracker, numeric_metrics
    from trainer.config import TrainConfig

    tracker = SweepTracker("sqlite:///" + str(folder / "track.db"), "track", "track", "grid")
    trial = SimpleNamespace(hash="0" * 16, label="ours", config=TrainConfig.build({}))
    child = tracker.start_child(trial, None)
    start = time.perf_counter()
    for step in range(1, reports + 1):
        tracker.log_report(child, {**report, "step": step}, int(time.time() * 1000))
    ours = (time.perf_counter() - start) / reports

    client = MlflowClient("sqlite:///" + str(folder / "track.db"))
    run_id = client.create_run(tracker.experiment_id).info.run_id
    keys = numeric_metrics(report)
    start = time.perf_counter()
    for step in range(1, reports + 1):
        for key, value in keys.items():
            client.log_metric(run_id, key, value, step=step, synchronous=True)
    per_key = (time.perf_counter() - start) / reports
    return ours, per_key, len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reports", type=int, default=20, help="reported steps in the tracking test")
    args = parser.parse_args()

    from orchestrator.spec import load_sweep

    with tempfile.TemporaryDirectory(prefix="scalelab-bench-") as tmp:
        folder = Path(tmp)
        n = args.trials
        spec = load_sweep(str(write_sweep(folder, "cold", n, args.steps)))
        alone = train_alone(spec)
        cold = sweep(spec, folder)
        warm_n, warm_2n = warm_sweeps(folder, n, args.steps)
        marginal = (warm_2n - warm_n) / n
        print(f"sweep of {n} tiny trials ({args.steps} steps each, one at a time, {os.cpu_count()} CPUs):")
        print(f"  training alone (train() in a loop):            {alone:7.2f} s ({alone / n:.3f} s/trial)")
        print(f"  `scalelab run` cold (Ray start, new MLflow db): {cold:7.2f} s -> overhead ratio "
              f"{cold / alone:.2f}x, {(cold - alone) / n:.2f} s overhead per trial")
        print(f"  marginal trial in a running sweep:             {marginal:7.3f} s/trial -> overhead ratio "
              f"{marginal / (alone / n):.2f}x, {marginal - alone / n:.3f} s overhead per trial")

        ours, per_key, keys = tracking_cost(folder, a_report(spec), args.reports)
        print(f"tracking one reported step ({keys} metrics) on SQLite, mean of {args.reports}:")
        print(f"  scalelab log_batch path: {ours * 1000:8.1f} ms")
        print(f"  per-key log_metric:      {per_key * 1000:8.1f} ms")
        print(f"  ratio per-key / ours: {per_key / ours:.1f}x")


if __name__ == "__main__":
    main()

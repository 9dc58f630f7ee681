"""Benchmark of the analysis package: ~10,000 synthetic trials through the whole report
(Parquet save/load -> fits -> figures -> report.md), with the time of every stage.

Side by side in the same run, the two places where the package departs from the obvious code:
- the vectorised seed bootstrap vs the same bootstrap as a Python loop over replicates;
- reading metric histories from a SQLite MLflow store in one query per chunk of runs vs
  MlflowClient.get_metric_history per (run, key).

    python benchmarks/bench_analysis.py [--trials 10000] [--mlflow-runs 40] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import synthetic as syn  # noqa: E402
from analysis.fits import FitOptions  # noqa: E402
from analysis.report import build_report  # noqa: E402
from analysis.stats import bootstrap_means, finite_mean  # noqa: E402
from analysis.tables import Tables  # noqa: E402
from analysis.transfer import parabola_optima  # noqa: E402


class StageClock:
    """Turns the report's progress lines ('fit: X', 'figure: Y') into per-stage times."""

    def __init__(self):
        self.stages: list[tuple[str, float]] = []
        self._name, self._start = None, None

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if self._name is not None:
            self.stages.append((self._name, now - self._start))
        self._name, self._start = message.split(" written to")[0], now

    def finish(self) -> None:
        self("end")


def bench_report(n_trials: int, out: Path) -> None:
    t0 = time.perf_counter()
    tables, _ = syn.benchmark_tables(n_trials)
    t_gen = time.perf_counter() - t0
    print(f"synthetic data: {len(tables.trials)} trials, {len(tables.history)} history points, "
          f"{len(tables.multipliers)} multiplier rows ({t_gen:.2f} s to generate)")
    t0 = time.perf_counter()
    path = tables.save(out / "bench.parquet")
    t_save = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded = Tables.load(path)
    t_load = time.perf_counter() - t0
    clock = StageClock()
    t0 = time.perf_counter()
    build_report(loaded, out / "report", FitOptions(), progress=clock)
    clock.finish()
    t_report = time.perf_counter() - t0
    print(f"\n{'stage':<34}{'seconds':>9}")
    print(f"{'parquet save (' + str(path.stat().st_size // 1_000_000) + ' MB)':<34}{t_save:>9.2f}")
    print(f"{'parquet load':<34}{t_load:>9.2f}")
    for name, seconds in clock.stages:
        if not name.startswith(("  skipped", "report")):
            print(f"{name:<34}{seconds:>9.2f}")
    fits = sum(s for n, s in clock.stages if n.startswith("fit:"))
    figs = sum(s for n, s in clock.stages if n.startswith("figure:"))
    print(f"{'= fits':<34}{fits:>9.2f}\n{'= figures (png + svg)':<34}{figs:>9.2f}")
    print(f"{'= load + report, total':<34}{t_load + t_report:>9.2f}")


def bench_bootstrap(n_boot: int = 200, grid: int = 14, seeds: int = 40, curves: int = 18) -> None:
    rng = np.random.default_rng(0)
    x = np.arange(grid, dtype=float)
    samples = [[rng.normal(2 + 0.03 * (x[g] - 6.3) ** 2, 0.01, seeds) for g in range(grid)] for _ in range(curves)]

    def vectorised():
        for s in samples:
            parabola_optima(x, bootstrap_means(s, n_boot, rng), 2)

    def looped():
        for s in samples:
            for _ in range(n_boot):
                means = np.array([finite_mean(v[rng.integers(0, v.size, v.size)][None, :])[0] for v in s])
                parabola_optima(x, means[None, :], 2)

    t_vec = _timed(vectorised)
    t_loop = _timed(looped)
    print(f"\nseed bootstrap, {curves} curves x {grid} points x {seeds} seeds x {n_boot} replicates:")
    print(f"  vectorised {t_vec:.3f} s   python loop {t_loop:.3f} s   ratio {t_loop / t_vec:.1f}x")


def bench_history(n_runs: int, out: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from analysis import mlflow_read
    from orchestrator.layout import KIND_TRIAL, TAG_KIND

    uri = f"sqlite:///{out}/bench_mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("bench", artifact_location=str(out / "artifacts"))
    keys = ["val_loss", "train_loss", "tokens", "lr"] + [f"weight_rms/attn_q.{i}" for i in range(8)] + \
           [f"mult/attn_q.{i}/scalar" for i in range(8)] + [f"act/block.{i}" for i in range(4)]
    for r in range(n_runs):
        run_id = client.create_run(exp, tags={TAG_KIND: KIND_TRIAL}).info.run_id
        client.log_batch(run_id, metrics=[Metric(k, float(r + s), 0, s) for k in keys for s in range(0, 301, 50)])
    runs = mlflow_read.search_all_runs(client, [exp])
    ids = [r.info.run_id for r in runs]
    t_sql = _timed(lambda: mlflow_read._history_from_sql_store(client, ids))
    t_api = _timed(lambda: mlflow_read._history_from_api(client, runs, lambda _m: None))
    points = n_runs * len(keys) * 7
    print(f"\nmetric histories, {n_runs} runs x {len(keys)} keys x 7 steps ({points} points), SQLite:")
    print(f"  bulk query {t_sql:.3f} s   get_metric_history per key {t_api:.3f} s   ratio {t_api / t_sql:.1f}x")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--mlflow-runs", type=int, default=40, help="0 skips the MLflow history comparison")
    parser.add_argument("--out", help="keep the snapshot and report here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scalelab-bench-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        bench_report(args.trials, out)
        bench_bootstrap()
        if args.mlflow_runs:
            bench_history(args.mlflow_runs, out)


if __name__ == "__main__":
    main()

"""Sweeps: YAML specs, Ray Tune execution, MLflow tracking, Optuna tuning, the `scalelab` CLI."""

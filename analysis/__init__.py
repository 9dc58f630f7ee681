"""From MLflow runs to fits with confidence intervals, figures and a report.

tables (+ mlflow_read, columns): runs -> tidy `Tables` (trials, history, multipliers) and their
one-file Parquet snapshot; fits: every analysis of a report (transfer, multiplier_scaling,
norms, scaling, comparison, tuning, coordcheck), each returning a typed result (results);
plots (+ coord_figure); report (+ report_md);
cli: the `scalelab report`, `export` and `coord-check` commands; synthetic: sweeps with known ground truth.
See docs/analysis.md.
"""

"""From MLflow runs to fits with confidence intervals, figures and a report.

tables (+ mlflow_read, columns): runs -> tidy `Tables` (trials, history, multipliers) and their
one-file Parquet snapshot; registry: the list of a report's analyses (transfer, multiplier_scaling,
norms, freedom, scaling, comparison, tuning, coordcheck; each module defines the typed result it
returns, on the base in results), their figures and report sections; fits: runs them with the
options (options); plots (+ coord_figure); report (+ report_md);
cli: the `scalelab report`, `export` and `coord-check` commands; synthetic: sweeps with known ground truth.
See docs/analysis.md.
"""

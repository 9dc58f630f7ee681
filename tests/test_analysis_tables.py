"""The one-file Parquet snapshot round-trips the three tables; params get proper dtypes;
the statistics helpers treat diverged (inf) and absent (NaN) values as documented."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import synthetic as syn
from analysis.mlflow_read import typed_param_column
from analysis.stats import bootstrap_means, finite_mean, jsonable, loglog_fit
from analysis.tables import METADATA_KEY, Tables
from trainer.config import UserError


def test_snapshot_round_trip_keeps_values_and_dtypes(tmp_path):
    tables, _ = syn.synthetic_tables(norms=syn.NormSpec(), tuning=syn.TuningSpec())
    path = tables.save(tmp_path / "snap.parquet")
    back = Tables.load(path)
    pd.testing.assert_frame_equal(back.trials, tables.trials)
    pd.testing.assert_frame_equal(back.history, tables.history)
    pd.testing.assert_frame_equal(back.multipliers, tables.multipliers)
    assert back.meta == json.loads(json.dumps(tables.meta))
    assert back.param_columns == tables.param_columns and "lr" in back.param_columns
    assert not (tmp_path / "snap.parquet.tmp").exists()      # written atomically


def test_snapshot_is_one_parquet_file_with_a_table_column(tmp_path):
    tables, _ = syn.synthetic_tables()
    path = tables.save(tmp_path / "snap.parquet")
    raw = pq.read_table(path, columns=["table", "history:key"]).to_pandas()
    counts = raw["table"].value_counts().to_dict()
    assert counts == {"history": len(tables.history), "multipliers": len(tables.multipliers),
                      "trials": len(tables.trials)}
    assert raw.loc[raw["table"] != "history", "history:key"].isna().all()


def test_empty_history_and_multipliers_round_trip(tmp_path):
    tables, _ = syn.synthetic_tables(history=False)
    tables.multipliers = tables.multipliers.iloc[:0]
    back = Tables.load(tables.save(tmp_path / "s.parquet"))
    assert back.history.empty and list(back.history.columns) == ["run_id", "trial_hash", "key", "step", "value"]
    assert back.multipliers.empty and len(back.trials) == len(tables.trials)


def test_loading_something_else_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Tables.load(tmp_path / "missing.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        Tables.load(tmp_path / "text.parquet")
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "plain.parquet")
    with pytest.raises(UserError, match="not a scalelab snapshot"):
        Tables.load(tmp_path / "plain.parquet")
    schema = pa.schema([("table", pa.string())], metadata={METADATA_KEY: json.dumps({"format": 99}).encode()})
    pq.write_table(pa.table({"table": ["trials"]}, schema=schema), tmp_path / "future.parquet")
    with pytest.raises(UserError, match="format 99"):
        Tables.load(tmp_path / "future.parquet")


def test_param_strings_become_typed_columns():
    ints = typed_param_column(pd.Series(["128", "256", "512"]))
    assert ints.dtype == "int64" and ints.tolist() == [128, 256, 512]
    floats = typed_param_column(pd.Series(["0.001", "1e-3", "3"]))
    assert floats.dtype == "float64" and floats.tolist() == [0.001, 0.001, 3.0]
    bools = typed_param_column(pd.Series(["True", "False"]))
    assert bools.dtype == bool and bools.tolist() == [True, False]
    optional = typed_param_column(pd.Series(["None", "2.5"]))
    assert math.isnan(optional[0]) and optional[1] == 2.5
    labels = typed_param_column(pd.Series(["mup", "sp+vector"]))
    assert labels.tolist() == ["mup", "sp+vector"]
    json_lists = typed_param_column(pd.Series(['["a.txt", "b.txt"]', "kjv"]))
    assert json_lists.tolist() == ['["a.txt", "b.txt"]', "kjv"]


def test_finite_mean_leaves_out_diverged_and_marks_all_diverged_inf():
    values = np.array([[1.0, 3.0, np.inf], [np.inf, np.inf, np.nan], [np.nan, np.nan, np.nan]])
    means = finite_mean(values)
    assert means[0] == 2.0 and means[1] == np.inf and np.isnan(means[2])


def test_bootstrap_means_resample_within_each_point():
    rng = np.random.default_rng(0)
    groups = [np.array([1.0, 2.0, 3.0]), np.array([5.0]), np.array([np.inf, np.inf])]
    boot = bootstrap_means(groups, 2000, rng)
    assert boot.shape == (2000, 3)
    assert np.all(boot[:, 1] == 5.0) and np.all(np.isinf(boot[:, 2]))
    # the spread of the mean of 3 values with sd 1, corrected for the bootstrap's (n-1)/n: 1/sqrt(3)
    assert boot[:, 0].mean() == pytest.approx(2.0, abs=0.05)
    assert boot[:, 0].std() == pytest.approx(1 / math.sqrt(3), rel=0.1)


def test_loglog_fit_recovers_a_power_law_and_needs_two_x():
    x = np.repeat([128.0, 256.0, 512.0, 1024.0], 3)
    y = 3.0 * x ** -0.7 * np.exp(np.random.default_rng(1).normal(0, 0.01, x.size))
    fit = loglog_fit(x, y, 0.95)
    assert fit.exponent == pytest.approx(-0.7, abs=0.02) and fit.exponent_ci[0] < -0.7 < fit.exponent_ci[1]
    assert fit.prefactor == pytest.approx(3.0, rel=0.15)
    assert loglog_fit(np.full(4, 128.0), y[:4], 0.95).exponent is None


def test_jsonable_turns_numpy_and_non_finite_into_plain_json():
    out = jsonable({"a": np.float64(1.5), "b": np.int64(3), "c": [np.nan, np.inf], "d": np.array([1, 2]),
                    "e": (np.bool_(True),)})
    assert out == {"a": 1.5, "b": 3, "c": [None, None], "d": [1, 2], "e": [True]}
    json.dumps(out, allow_nan=False)

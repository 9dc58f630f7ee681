"""Tracking and study URIs judged by scheme before anything connects (orchestrator/uri_check.py):
one line with the fix, in well under a second, for every scheme MLflow and Optuna know and for
nonsense."""
import importlib.util
import time

import pytest

from orchestrator.uri_check import study_url_problem, tracking_uri_problem


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://127.0.0.1:8443", "sqlite:///mlflow.db",
                                 "sqlite:////tmp/some/new.db"])
def test_usable_tracking_uris(uri):
    assert tracking_uri_problem(uri) is None


@pytest.mark.parametrize("uri, fragment", [
    ("", "empty"), ("   ", "empty"), ("sqlite:///x.db\n", "control characters"), ("abc", "folder path"),
    ("mlruns", "folder path"), ("file:///etc", "folder path"), ("databricks", "not supported"),
    ("databricks://profile", "not supported"), ("ftp://127.0.0.1/x", "unknown scheme 'ftp'"),
    ("sqlite://", "in-memory"), ("sqlite:///:memory:", "in-memory"), ("sqlite:///file:x?mode=memory&uri=true", "in-memory"),
    ("sqlite:////etc/passwd", "not an SQLite database"), ("sqlite:////etc", "is a directory"),
    ("sqlite:////dev/zero", "not an SQLite database"), ("http://", "names no host"),
    ("mysql+nonsense://u@h/db", "unknown mysql driver"), ("x" * 5000, "characters long"),
])
def test_unusable_tracking_uris(uri, fragment):
    start = time.monotonic()
    problem = tracking_uri_problem(uri)
    assert problem and fragment in problem and "\n" not in problem and len(problem) <= 300, problem
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("uri, module, package", [
    ("postgresql+psycopg2://ana:hunter22@127.0.0.1/mlflow", "psycopg2", "psycopg2-binary"),
    ("postgresql+psycopg://ana@127.0.0.1/mlflow", "psycopg", "psycopg[binary]"),
    ("mysql://ana:hunter22@127.0.0.1/mlflow", "MySQLdb", "mysqlclient"),
    ("mssql://ana@127.0.0.1/mlflow", "pyodbc", "pyodbc"),
])
def test_a_missing_driver_names_the_package(uri, module, package):
    problem = tracking_uri_problem(uri)
    if not _missing(module):
        assert problem is None
        return
    assert f"pip install {package}" in problem and "hunter22" not in problem


def test_a_plain_postgresql_uri_needs_the_driver_sqlalchemy_loads_for_it(monkeypatch):
    """SQLAlchemy 2.1 loads psycopg (3) for postgresql://, older ones psycopg2: the check names
    the one this SQLAlchemy would import, never the password."""
    from sqlalchemy.engine.url import make_url

    from orchestrator import uri_check

    module, package = uri_check.NAMED_DRIVERS[make_url("postgresql://").get_dialect().driver]
    monkeypatch.setattr(uri_check.importlib.util, "find_spec", lambda name: None)
    problem = study_url_problem("postgresql://ana:hunter22@127.0.0.1/optuna")
    assert f"driver {module}: pip install {package}" in problem and "hunter22" not in problem, problem


def test_study_urls_are_databases():
    assert study_url_problem("sqlite:////tmp/optuna.db") is None
    assert "not a database URL" in study_url_problem("http://127.0.0.1:5000")
    assert "in-memory" in study_url_problem("sqlite://")

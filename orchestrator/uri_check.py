"""Tracking and study URIs judged by their scheme before anything connects: what MLflow and
Optuna would only say after seconds of retries, or as a traceback (a missing database driver,
an in-memory SQLite that no worker shares, a file that is not a database), in one line with the fix.

Each function returns the problem in words, or None. The URI may hold credentials: the problem
never repeats it whole (uri_auth.redact).
"""
from __future__ import annotations

import importlib.util
import os
from urllib.parse import urlsplit

from .uri_auth import redact

SQLITE_MAGIC = b"SQLite format 3\0"  # the first bytes of every SQLite database file
SERVER_DIALECTS = ("postgresql", "mysql", "mssql")  # the SQLAlchemy databases MLflow and Optuna keep data in
# SQLAlchemy driver name (`postgresql+NAME://`) -> the module it imports, and the package to install.
NAMED_DRIVERS = {"psycopg": ("psycopg", "psycopg[binary]"), "psycopg2": ("psycopg2", "psycopg2-binary"),
                 "pg8000": ("pg8000", "pg8000"), "asyncpg": ("asyncpg", "asyncpg"),
                 "pymysql": ("pymysql", "PyMySQL"), "mysqldb": ("MySQLdb", "mysqlclient"),
                 "mysqlconnector": ("mysql.connector", "mysql-connector-python"),
                 "pyodbc": ("pyodbc", "pyodbc"), "pymssql": ("pymssql", "pymssql")}
EXAMPLES = "sqlite:///PATH/mlflow.db, http://HOST:5000 or postgresql://USER@HOST/DB"
STUDY_EXAMPLES = "sqlite:///PATH/optuna.db or postgresql://USER@HOST/DB"
MAX_URI_CHARS = 4096


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot track runs at `uri`, or None."""
    basic = _basic_problem(uri, EXAMPLES)
    if basic:
        return basic
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        return None if urlsplit(uri).hostname else f"{redact(uri)} names no host; use http://HOST:PORT"
    if scheme == "file" or not scheme:
        return (f"{redact(uri)!r} is a folder path (MLflow's file store, in maintenance mode since MLflow 3, "
                f"and not shared safely between workers); use sqlite:///PATH/mlflow.db or an MLflow server")
    if scheme.startswith(("databricks", "uc")):
        return f"{scheme} tracking is not supported by scalelab; use {EXAMPLES}"
    return _database_problem(uri, scheme, EXAMPLES)


def study_url_problem(url: str) -> str | None:
    """Why Optuna cannot keep a study at `url` (an SQLAlchemy database URL), or None."""
    basic = _basic_problem(url, STUDY_EXAMPLES)
    if basic:
        return basic
    scheme = _scheme(url)
    if scheme in ("http", "https", "file", "") or scheme.startswith(("databricks", "uc")):
        return f"{redact(url)!r} is not a database URL; an Optuna study needs {STUDY_EXAMPLES}"
    return _database_problem(url, scheme, STUDY_EXAMPLES)


def _basic_problem(uri: str, examples: str) -> str | None:
    if not isinstance(uri, str) or not uri.strip():
        return f"the URI is empty; use {examples}"
    if len(uri) > MAX_URI_CHARS:
        return f"the URI is {len(uri)} characters long; use {examples}"
    if any(ord(c) < 32 or ord(c) == 127 for c in uri) or uri != uri.strip():
        return f"the URI holds spaces or control characters; use {examples}"
    try:
        urlsplit(uri)
    except ValueError as err:
        return f"{redact(uri)!r} is not a valid URI ({err}); use {examples}"
    return None


def _scheme(uri: str) -> str:
    if uri.lower() in ("databricks", "databricks-uc", "uc"):  # MLflow's bare names for hosted tracking
        return uri.lower()
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def _database_problem(uri: str, scheme: str, examples: str) -> str | None:
    dialect, _, driver = scheme.partition("+")
    if dialect == "sqlite":
        return _sqlite_problem(uri)
    if dialect not in SERVER_DIALECTS:
        return f"unknown scheme {scheme!r} in {redact(uri)!r}; use {examples}"
    module, package = NAMED_DRIVERS.get(driver or default_driver(dialect), (None, None))
    if module is None:
        return f"unknown {dialect} driver {driver!r} in {redact(uri)!r}"
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return f"{redact(uri)} needs the {dialect} driver {module}: pip install {package}"
    return None


def default_driver(dialect: str) -> str:
    """The driver SQLAlchemy loads for `dialect://` (no "+driver"). SQLAlchemy decides, and it
    changed: PostgreSQL's default is psycopg2 before SQLAlchemy 2.1 and psycopg (3) from it on."""
    from sqlalchemy.engine.url import make_url  # a fraction of a second; only database URIs get here

    return make_url(f"{dialect}://").get_dialect().driver


def _sqlite_problem(uri: str) -> str | None:
    path = uri.split("://", 1)[1]
    if not path.startswith("/") or path in ("/", "/:memory:") or path.startswith("/:memory:") or "mode=memory" in path:
        return (f"{uri!r} is an in-memory SQLite database, which every process sees empty (runs would be "
                "lost); use sqlite:///PATH/mlflow.db (three slashes, then the path)")
    file = path[1:].split("?", 1)[0]
    if not file:
        return f"{uri!r} names no database file; use sqlite:///PATH/mlflow.db"
    if os.path.isdir(file):
        return f"{file} is a directory, not an SQLite database file; use sqlite:///{file.rstrip('/')}/mlflow.db"
    if os.path.exists(file):
        try:
            with open(file, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as err:
            return f"{file} cannot be read ({err.strerror or err})"
        if head and head != SQLITE_MAGIC:
            return f"{file} is not an SQLite database; point sqlite:/// at a new or existing database file"
    return None

"""A real PostgreSQL for the lab-database tests: its own cluster in a temporary folder, listening
on 127.0.0.1 on a free port, one database per test (an MLflow server's, a study's).

PostgreSQL refuses to run as root. Run by root, the server runs as an unprivileged user
(POSTGRES_USER_ENV, default `scalelab-pg`, which `./dev` creates); otherwise as whoever runs
the tests. Where something is missing (the server programs, the driver SQLAlchemy loads for
postgresql://, that user), `skip_reason` says what, and the tests that need it skip with it.

The role has a password and the URIs carry it (`postgresql://scalelab:PASSWORD@127.0.0.1:PORT/DB`)
so that the tests can check it is never printed.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from helpers import free_port, log_tail, wait_ready
from orchestrator.uri_check import tracking_uri_problem

POSTGRES_USER_ENV = "SCALELAB_PG_USER"
DEFAULT_OS_USER = "scalelab-pg"
ROLE = "scalelab"
READY_S = 120


def server_bin() -> Path | None:
    """The folder of `initdb`, `postgres` and `pg_ctl`: on PATH, else Debian's versioned folder."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres") and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def os_user() -> str | None:
    """Who runs the server: None for the current user; the unprivileged user when root."""
    return os.environ.get(POSTGRES_USER_ENV, DEFAULT_OS_USER) if os.geteuid() == 0 else None


def skip_reason() -> str | None:
    """Why no PostgreSQL can be started here, with the fix; None when one can."""
    if server_bin() is None:
        return "no PostgreSQL server programs (initdb, postgres): run ./dev, or apt-get install postgresql"
    driver = tracking_uri_problem("postgresql://127.0.0.1/scalelab")  # the driver SQLAlchemy loads for it
    if driver:
        return f"{driver} (or pip install -e '.[postgres]')"
    user = os_user()
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return (f"PostgreSQL refuses to run as root and there is no user {user!r} to run it: run ./dev "
                    f"(it creates one), or useradd --system {user}, or set {POSTGRES_USER_ENV}")
    return None


class PostgresServer:
    """One PostgreSQL cluster, started with `start()` and ended with `stop()`: a fast shutdown of
    the postmaster we started (by its process id), then its process group killed if it lingers."""

    def __init__(self):
        self.bin = server_bin()
        self.user = os_user()
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="slpg-"))  # short: the socket path is length-limited
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self.databases = 0

    def _as_user(self) -> dict:
        """Popen arguments that run a program as the server's user (drop root; no shell, no PAM)."""
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                "env": {"PATH": os.environ.get("PATH", ""), "HOME": str(self.dir), "LC_ALL": "C"}}

    def start(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        pwfile.chmod(0o600)
        try:
            subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", ROLE, "--pwfile", str(pwfile),
                            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8"],
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir,
                           **self._as_user())
        except subprocess.CalledProcessError as err:
            raise RuntimeError(f"initdb failed ({err.returncode}):\n{err.stdout.decode(errors='replace')[-3000:]}")
        finally:
            pwfile.unlink()
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir,
            **self._as_user())
        try:
            wait_ready(f"PostgreSQL on 127.0.0.1:{self.port}", self._answers, READY_S, self.proc, self.log)
        except BaseException:
            self.stop()
            raise

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _execute(self, sql: str) -> None:
        """One statement in the `postgres` database, outside a transaction (CREATE DATABASE needs that)."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.uri(), isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(sql))
        finally:
            engine.dispose()

    def _answers(self) -> bool:
        self._execute("SELECT 1")
        return True

    def new_database(self, purpose: str) -> str:
        """A new, empty database (`<purpose>_<n>`); returns its URI."""
        self.databases += 1
        name = f"{purpose}_{self.databases}"
        self._execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        """SIGINT is PostgreSQL's fast shutdown: it ends the sessions and stops cleanly."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # still ours (not reaped): end its whole group
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self) -> str:
        return log_tail(self.log)

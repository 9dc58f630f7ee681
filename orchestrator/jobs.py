"""`scalelab submit | status | logs`: a sweep as a Ray Job on a cluster, through
`ray.job_submission.JobSubmissionClient` (needs ray[default] on this machine and the cluster).

The job's entrypoint is `python -m orchestrator.cli run SWEEP --address auto --tracking-uri URI`,
run in the uploaded working directory with the cluster's Python environment. Before it, `scalelab
submit` sends a tiny job with the same upload that only imports the project (check_cluster_python):
a cluster whose Python lacks the project's dependencies is said in one line, not in a traceback
minutes later.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from trainer.config import UserError

from . import upload_check, uri_auth
from .layout import ARTIFACT_DIR, DEFAULT_TRACKING_DB, LOCK_SUFFIX, TRACKING_URI_ENV, resolve_tracking_uri
from .links import announce_experiment, experiment_url
from .locations import DEFAULT_STORAGE, STUDY_FILE
from .spec import load_sweep

# Never uploaded: environments, local tracking/storage, outputs, VCS data.
EXCLUDES = [".venv", "venv", ".git", DEFAULT_TRACKING_DB, DEFAULT_TRACKING_DB + LOCK_SUFFIX, "mlruns", ARTIFACT_DIR, DEFAULT_STORAGE, "reports",
            "scalelab_out", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "*.egg-info", STUDY_FILE]
IGNORE_FILES = (".gitignore", ".scalelabignore")  # gitignore syntax, read from the working directory
PACKAGES = ("trainer", "orchestrator", "analysis")
LOCAL_SCHEMES = ("sqlite", "file")
CLUSTER_PYTHON = "python"   # the cluster's Python, as a job's shell finds it (the check and the run alike)
IMPORT_CHECK = "import orchestrator.runner, trainer.loop"  # what `scalelab run` needs on the cluster
CHECK_TIMEOUT_S = 300.0     # a check job that has not ended by then is stopped; the sweep is submitted anyway
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


# --- connection ----------------------------------------------------------------------------

def dashboard_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UserError("no Ray cluster given: pass --address http://HEAD:8265 (the dashboard address "
                        "printed by `ray start --head`) or set RAY_ADDRESS")
    if "://" not in address:
        address = "http://" + address
    return address


def auth_headers() -> dict[str, str]:
    """Token auth (on by default in Ray ≥ 2.5x): the token from RAY_AUTH_TOKEN or
    ~/.ray/auth_token, sent as a bearer header. The Jobs API is plain HTTP, so the header is
    all it needs; os.environ is left alone, because RAY_AUTH_MODE set here would leak into
    every later embedded ray.init() of this process (a CLI run in-process, the tests)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = Path.home() / ".ray" / "auth_token"
    if not token and path.is_file():
        token = path.read_text(encoding="utf-8").strip()
    if not token:
        return {}
    return {"Authorization": f"Bearer {token}"}


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient  # Ray: seconds to import, only to reach a cluster

    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url, headers=auth_headers())
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UserError(f"cannot reach the Ray cluster at {url}: {err}\n"
                        "check the address (the dashboard port, 8265 by default), that the head was "
                        "started with --dashboard-host reachable from here, and the auth token "
                        "(RAY_AUTH_TOKEN or ~/.ray/auth_token, as printed by `ray get-auth-token`)") from None


# --- submit --------------------------------------------------------------------------------

def check_remote_tracking(uri: str) -> None:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in LOCAL_SCHEMES or not scheme:
        raise UserError(
            f"tracking URI {uri_auth.redact(uri)!r} is a local file, but a cluster's driver and workers run on other "
            "machines: start an MLflow server on an address the cluster reaches (mlflow server --host "
            "PRIVATE_IP --port 5000 --backend-store-uri sqlite:///mlflow.db; see docs/running.md, On a Ray "
            "cluster, for the risk) and pass --tracking-uri http://HOST:5000")


def upload_excludes(working_dir: Path) -> list[str]:
    """EXCLUDES plus the patterns of the working directory's .gitignore and .scalelabignore
    (Ray's `excludes` takes gitignore-style patterns)."""
    patterns = list(EXCLUDES)
    for name in IGNORE_FILES:
        path = working_dir / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.rstrip()
                if line and not line.lstrip().startswith("#"):
                    patterns.append(line)
    return list(dict.fromkeys(patterns))


def upload_files(working_dir: Path, excludes: list[str]) -> list[Path]:
    """The files Ray will upload, found by Ray's own walk (the same excludes, and nested
    .gitignore / .rayignore files), relative to `working_dir`."""
    from ray._private.runtime_env import packaging  # Ray: seconds to import, only to list an upload

    found: list[Path] = []

    def keep(path: Path) -> None:
        if path.is_file():
            found.append(path.relative_to(working_dir))

    quiet = logging.getLogger("scalelab.upload")  # Ray logs each ignore file it honours at INFO
    quiet.setLevel(logging.WARNING)
    packaging._dir_travel(working_dir, [packaging._get_excludes(working_dir, excludes)], keep,
                          include_gitignore=True, logger=quiet)
    return sorted(found)


def check_upload(working_dir: Path) -> tuple[list[Path], list[str], list[str], list[str]]:
    """What `submit` uploads, Ray's excludes (histories and databases added, by path), and
    'path: why' for the files left out and for those refused (upload_check)."""
    excludes = upload_excludes(working_dir)
    files, skipped, refused = upload_check.sort_upload(working_dir, upload_files(working_dir, excludes))
    # "/" anchors a gitignore pattern at the working directory: exactly these files
    excludes = excludes + ["/" + line.split(": ", 1)[0] for line in skipped]
    return files, excludes, skipped, refused


def refuse_secrets(working_dir: Path, found: list[str]) -> None:
    """UserError when a file to upload looks like a credential (the fix: move it, or add it to
    .scalelabignore)."""
    if found:
        shown = found[:20] + ([f"... and {len(found) - 20} more"] if len(found) > 20 else [])
        raise UserError(f"{working_dir}: refusing to upload files that look like credentials:\n  "
                        + "\n  ".join(shown) + "\nmove them out of the working directory or list them in "
                        f"{working_dir / '.scalelabignore'} (gitignore syntax); see what would be uploaded "
                        "with `scalelab submit --dry-run`")


def secret_env(tracking_uri: str) -> dict[str, str]:
    """What the job needs to reach the tracking store with credentials: through its environment
    (Ray redacts env_vars in its dashboard and job list), never its entrypoint."""
    env = {k: os.environ[k] for k in (uri_auth.USERNAME_ENV, uri_auth.PASSWORD_ENV) if k in os.environ}
    if uri_auth.has_credentials(tracking_uri):  # a database URI keeps them inside
        env[TRACKING_URI_ENV] = tracking_uri
    return env


def runtime_env(working_dir: Path, excludes: list[str] | None = None, secrets: dict[str, str] | None = None) -> dict:
    from .run_writes import code_env  # mlflow: seconds to import, which `status` and `logs` do not need

    excludes = upload_excludes(working_dir) if excludes is None else excludes
    env = {"working_dir": str(working_dir), "excludes": excludes,
           "env_vars": {**code_env(), "PYTHONUNBUFFERED": "1", **(secrets or {})}}
    # The code travels with the job unless the working directory already holds it.
    modules = []
    for name in PACKAGES:
        module_dir = Path(__file__).resolve().parent.parent / name
        if module_dir.is_dir() and not (working_dir / name).is_dir():
            modules.append(str(module_dir))
    if modules:
        env["py_modules"] = modules
    return env


def entrypoint(sweep_rel: str, tracking_uri: str, storage: str | None, max_concurrent: int | None,
               fuse: int | str | None = None) -> str:
    args = [CLUSTER_PYTHON, "-m", "orchestrator.cli", "run", sweep_rel, "--address", "auto"]
    if not uri_auth.has_credentials(tracking_uri):  # else the job reads it from $MLFLOW_TRACKING_URI
        args += ["--tracking-uri", tracking_uri]
    if storage:
        args += ["--storage", storage]
    if max_concurrent:
        args += ["--max-concurrent", str(max_concurrent)]
    if fuse is not None:
        args += ["--fuse", str(fuse)]
    return " ".join(shlex.quote(a) for a in args)


def check_cluster_python(jobs, job_id: str, env: dict, address: str | None, timeout: float = CHECK_TIMEOUT_S,
                         python: str | None = None) -> None:
    """Run IMPORT_CHECK as a Ray Job with the sweep's runtime env (its upload is then cached for
    the sweep's job); UserError with the fix when the cluster's Python cannot import the project.
    A check that does not end within `timeout` is stopped with a warning (the cluster may be busy)."""
    check_id = f"{job_id}-check"
    command = f"{python or CLUSTER_PYTHON} -c {shlex.quote(IMPORT_CHECK)}"
    try:
        jobs.submit_job(entrypoint=command, submission_id=check_id, runtime_env=env,
                        metadata={"scalelab_check": "imports"})
    except (RuntimeError, OSError) as err:
        raise UserError(f"the Ray cluster at {dashboard_address(address)} did not take the check job "
                        f"({first_line(err)}); its job agent may not be up yet: wait a minute after `ray start "
                        "--head`, check `ray status` on the head, then submit again") from None
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = str(jobs.get_job_status(check_id))
        if status in TERMINAL_STATES:
            break
        time.sleep(1.0)
    if status == "SUCCEEDED":
        return
    if status not in TERMINAL_STATES:
        jobs.stop_job(check_id)
        print(f"scalelab submit: warning: the import check ({check_id}) did not end within {timeout:.0f} s; "
              "submitting anyway", file=sys.stderr)
        return
    lines = [line for line in (jobs.get_job_logs(check_id) or "").splitlines() if line.strip()]
    why = lines[-1].strip() if lines else (jobs.get_job_info(check_id).message or status)
    raise UserError(f"the cluster's Python cannot import the project ({why}); install the project on every "
                    "node with the Python that runs Ray (pip install -e . in the environment of `ray start`), "
                    "then submit again")


def submit_sweep(sweep: str, address: str | None, tracking_uri: str | None = None, storage: str | None = None,
                 max_concurrent: int | None = None, working_dir: str = ".", dry_run: bool = False,
                 out=None, fuse: int | str | None = None, check_python: bool = False) -> str | None:
    """Submit; the job id. With dry_run: print what would be uploaded and submitted to `out`
    (stdout) and return None, without contacting the cluster. With check_python (`scalelab
    submit` sets it), first check that the cluster's Python imports the project."""
    out = out or sys.stdout
    spec = load_sweep(sweep)  # fail here, not on the cluster
    for line in spec.missing_corpora():  # the cluster may hold them: a warning, not an error
        print(f"scalelab submit: warning: {line} here; the job needs it on the cluster", file=sys.stderr)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking_uri)
    check_remote_tracking(uri)
    wd = Path(working_dir).resolve()
    sweep_path = Path(sweep).resolve()
    if not sweep_path.is_relative_to(wd):
        raise UserError(f"{sweep}: the sweep file must be inside the uploaded working directory {wd}; "
                        "move it there or pass --working-dir")
    if not wd.is_dir():
        raise UserError(f"--working-dir {working_dir}: not a directory")
    files, excludes, skipped, secrets = check_upload(wd)
    command = entrypoint(sweep_path.relative_to(wd).as_posix(), uri, storage, max_concurrent, fuse)
    if dry_run:
        refused = {line.split(": ", 1)[0] for line in secrets}
        going = [f for f in files if f.as_posix() not in refused]
        size = sum((wd / f).stat().st_size for f in going)
        print(f"would upload {len(going)} file(s), {size / 1e6:.1f} MB, from {wd}:", file=out)
        for f in going:
            print(f"  {f.as_posix()}", file=out)
        print(f"excluded: {', '.join(e for e in excludes if not e.startswith('/'))} (and what nested "
              ".gitignore/.rayignore files exclude)", file=out)
        if skipped:
            print(f"left out ({len(skipped)}; never uploaded):", file=out)
            for line in skipped:
                print(f"  {line}", file=out)
        if secrets:
            print(f"refused ({len(secrets)}; submit stops while any is here):", file=out)
            for line in secrets:
                print(f"  {line}", file=out)
        print(f"would run: {command}", file=out)
        if not secrets:
            return None
    refuse_secrets(wd, secrets)
    job_id = f"scalelab-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    mlflow_url = experiment_url(uri, spec.experiment)
    jobs = client(address)
    env = runtime_env(wd, excludes, secret_env(uri))
    if check_python:
        check_cluster_python(jobs, job_id, env, address)
    try:
        return jobs.submit_job(
            entrypoint=announce_experiment(command, uri_auth.redact(mlflow_url)),
            submission_id=job_id, runtime_env=env,
            metadata={"scalelab_sweep": spec.name, "tracking_uri": uri_auth.redact(uri),
                      "mlflow_experiment": uri_auth.redact(mlflow_url)})
    except (RuntimeError, OSError) as err:  # an error status (RuntimeError) or a dropped connection (requests')
        raise UserError(f"the Ray cluster at {dashboard_address(address)} did not take the job ({first_line(err)}); "
                        "its job agent may not be up yet: wait a minute after `ray start --head`, check "
                        "`ray status` on the head, then submit again") from None


def first_line(err: Exception, limit: int = 200) -> str:
    """The start of an error's text: Ray puts whole HTTP answers in its messages."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- status and logs -------------------------------------------------------------------------

def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def job_status_text(address: str | None, job_id: str | None) -> str:
    c = client(address)
    if job_id is None:
        jobs = sorted(c.list_jobs(), key=lambda j: j.start_time or 0)
        if not jobs:
            return "no jobs on this cluster"
        rows = [f"{'JOB':40} {'STATUS':10} {'STARTED':19}  SWEEP"]
        for j in jobs:
            sweep = (j.metadata or {}).get("scalelab_sweep", "-")
            job = j.submission_id or j.job_id or "-"
            rows.append(f"{job:40} {str(j.status):10} {_when(j.start_time):19}  {sweep}")
        return "\n".join(rows)
    info = _job_info(c, job_id)
    lines = [f"job {job_id}: {info.status}", f"  started {_when(info.start_time)}, ended {_when(info.end_time)}",
             f"  entrypoint: {info.entrypoint}"]
    if info.message:
        lines.append(f"  message: {info.message}")
    return "\n".join(lines)


def _job_info(c, job_id: str):
    try:
        return c.get_job_info(job_id)
    except RuntimeError as err:
        raise UserError(f"no job {job_id!r} on this cluster ({err}); list jobs with `scalelab status`") from None


def job_status(address: str | None, job_id: str) -> str:
    return str(_job_info(client(address), job_id).status)


def print_logs(address: str | None, job_id: str, follow: bool = False) -> int:
    """Print the job's logs (driver output); with follow, until it ends; the exit status is
    then 0 only when the job succeeded."""
    c = client(address)
    _job_info(c, job_id)
    if not follow:
        sys.stdout.write(c.get_job_logs(job_id))
        return 0

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())
    status = str(c.get_job_status(job_id))
    print(f"[job {job_id} {status}]", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1

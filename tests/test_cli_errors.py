"""Commands answer bad input with one line and exit 2, never a traceback; --debug shows it;
`submit` keeps credentials out of the upload and `--dry-run` contacts no cluster."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import jobs
from orchestrator.cli import main, path_error

FAKE = "A" * 20 + "b" * 12  # built here so that this file itself does not look like a secret


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, fragment", [
    (["train", "seed=-1"], "seed"),
    (["train", "lr=inf"], "finite"),
    (["train", "steps=true"], "boolean"),
    (["train", "batch_size=100000000"], "needs about"),
    (["train", "--checkpoint-dir", "/proc/no/such/dir", "steps=2", "warmup_steps=0"], "--checkpoint-dir"),
    (["train", "--json", "/proc/no/such/dir/x.json", "steps=2", "warmup_steps=0"], "--json"),
])
def test_train_refusals_are_one_line(capsys, argv, fragment):
    code, _, err = run(capsys, *argv)
    assert code == 2 and fragment in err and "Traceback" not in err, err


def test_debug_shows_the_traceback(capsys, monkeypatch):
    code, _, err = run(capsys, "--debug", "train", "seed=-1")
    assert code == 2 and "Traceback" in err
    monkeypatch.setenv("SCALELAB_DEBUG", "1")
    code, _, err = run(capsys, "train", "seed=-1")
    assert code == 2 and "Traceback" in err


def test_os_errors_on_user_paths_are_one_line(capsys, monkeypatch):
    import orchestrator.plan_cli as plan_cli

    def fail(args):
        raise PermissionError(13, "Permission denied", "/root/report.md")
    monkeypatch.setattr(plan_cli, "run_validate", fail)
    parser_args = ["validate", "x.yaml"]
    import orchestrator.cli as cli
    real = cli.build_parser

    def patched():
        parser = real()
        parser._subparsers._group_actions[0].choices["validate"].set_defaults(func=fail)
        return parser
    monkeypatch.setattr(cli, "build_parser", patched)
    code, _, err = run(capsys, *parser_args)
    assert code == 2 and "/root/report.md: Permission denied" in err and "Traceback" not in err
    assert "write to" in path_error(PermissionError(13, "Permission denied", "/x"))


@pytest.mark.parametrize("argv, fragment", [
    (["report", "nothing-here", "--out", "BLOCKER/sub"], "--out"),
    (["export", "nothing-here", "BLOCKER/sub/x.parquet"], "export FILE"),
    (["export", "nothing-here", "/proc/no/such/x.parquet"], "export FILE"),
])
def test_outputs_to_an_unwritable_place(capsys, tmp_path, argv, fragment):
    blocker = tmp_path / "file"  # a file where a directory would have to be
    blocker.write_text("")
    argv = [a.replace("BLOCKER", str(blocker)) for a in argv]
    code, _, err = run(capsys, *argv, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "m.db").exists()  # refused before MLflow was opened


# --- submit ------------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path):
    (tmp_path / "s.yaml").write_text("name: up\nbase: {steps: 2, warmup_steps: 0}\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"\0" * 10)
    (tmp_path / ".gitignore").write_text("data/\n")
    (tmp_path / ".scalelabignore").write_text("# local only\nprivate_notes.txt\n")
    (tmp_path / "private_notes.txt").write_text("x\n")
    return tmp_path


def dry_run(capsys, project, *extra):
    return run(capsys, "submit", str(project / "s.yaml"), "--working-dir", str(project), "--dry-run",
               "--tracking-uri", "http://127.0.0.1:9", "--address", "http://127.0.0.1:9", *extra)


def test_dry_run_lists_the_upload_and_honours_ignore_files(capsys, project):
    code, out, err = dry_run(capsys, project)
    assert code == 0, err
    listed = {line.strip() for line in out.splitlines() if line.startswith("  ")}
    assert {"s.yaml", "notes.txt", ".gitignore", ".scalelabignore"} <= listed
    assert "data/big.bin" not in listed and "private_notes.txt" not in listed
    assert "would run:" in out
    assert "private_notes.txt" in jobs.runtime_env(project)["excludes"]


@pytest.mark.parametrize("name, content", [
    (".env", "X=1\n"), ("id_rsa", "x\n"), ("server.pem", "x\n"), ("aws_credentials", "x\n"),
    ("ray_token", "x\n"), ("start.sh", f"export RAY_AUTH_TOKEN={FAKE}\n"),
    ("env.txt", f"AWS_SECRET_ACCESS_KEY = '{FAKE}'\n"),
    ("k.txt", "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nabc\n"),
])
def test_credentials_are_refused(capsys, project, name, content):
    (project / name).write_text(content)
    code, out, err = dry_run(capsys, project)
    assert code == 2 and name in err and ".scalelabignore" in err, err
    (project / ".scalelabignore").write_text(name + "\n")
    code, out, err = dry_run(capsys, project)
    assert code == 0, err
    assert name not in {line.strip() for line in out.splitlines() if line.startswith("  ")}


def test_harmless_mentions_are_not_secrets(project):
    (project / "doc.md").write_text("set RAY_AUTH_TOKEN=$(ray get-auth-token) or ~/.ray/auth_token\n")
    (project / "tokens.bin").write_bytes(b"\0\1" * 100)
    files, _, _, found = jobs.check_upload(project)
    assert found == [] and Path("doc.md") in files


def test_this_repository_uploads_without_secrets():
    repo = Path(__file__).resolve().parent.parent
    files, _, _, found = jobs.check_upload(repo)
    assert found == [], found
    assert not any(part in (".git", ".venv") for f in files for part in f.parts)


def test_submit_warns_on_a_missing_corpus(capsys, project):
    (project / "s.yaml").write_text("name: up\nbase: {steps: 2, warmup_steps: 0, corpus: on_cluster.txt}\n")
    code, out, err = dry_run(capsys, project)
    assert code == 0 and "warning" in err and "on_cluster.txt" in err


# --- a cluster that is not there, or not ready; a sweep file given to report ------------------

def test_submit_where_nothing_listens_is_one_line(capsys, project):
    from helpers import free_port

    code, _, err = run(capsys, "submit", str(project / "s.yaml"), "--working-dir", str(project),
                       "--tracking-uri", "http://127.0.0.1:9", "--address", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert err.startswith("scalelab submit: error: cannot reach the Ray cluster") and "Traceback" not in err


@pytest.fixture
def dashboard_without_job_agent():
    """An HTTP server that answers Ray's version check and 503 to everything else, as a head
    whose job agent has not started yet."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            if self.path == "/api/version":
                body, status = json.dumps({"version": "4", "ray_version": "2.40.0", "ray_commit": "x"}), 200
            else:
                body, status = "Failed to get the job agent\n<html>...</html>", 503
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_submit_before_the_job_agent_is_up_is_one_line(capsys, project, dashboard_without_job_agent):
    (project / "data" / "big.bin").unlink()  # keep the upload small
    code, _, err = run(capsys, "submit", str(project / "s.yaml"), "--working-dir", str(project),
                       "--tracking-uri", "http://127.0.0.1:9", "--address", dashboard_without_job_agent)
    assert code == 2, err
    last = err.strip().splitlines()[-1]  # above it: Ray's own log of the upload it packed
    assert last.startswith("scalelab submit: error: the Ray cluster at") and "job agent" in last, err
    assert "<html>" not in last  # (a "Logging error" above may be Ray's handler on an earlier test's stream)


def test_report_of_a_sweep_file_names_the_experiment(capsys, tmp_path):
    sweep = tmp_path / "x.yaml"
    sweep.write_text("name: x\nexperiment: lr-study\nbase: {steps: 2}\n")
    code, _, err = run(capsys, "report", str(sweep))
    assert code == 2
    assert err.strip().splitlines() == [f"scalelab report: error: {sweep} is a sweep file; report reads the sweep's "
                                        "MLflow experiment: use `scalelab report lr-study`"]

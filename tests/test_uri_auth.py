"""Credentials in a tracking URI work (the server is reached with them) and are never printed or
put on the job's command line (orchestrator/uri_auth.py)."""
import base64
import http.server
import threading

import pytest

from orchestrator import jobs, layout, uri_auth

SECRET = "pa" + "ss:w@rd"          # assembled: `submit` of this repository must not read it as one


@pytest.fixture
def clean_env(monkeypatch):
    for name in (uri_auth.USERNAME_ENV, uri_auth.PASSWORD_ENV, layout.TRACKING_URI_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    """A stand-in for an MLflow server behind basic auth: records the Authorization it got."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(200 if self.headers.get("Authorization") else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], seen
    httpd.shutdown()
    httpd.server_close()


def test_redact_hides_user_and_password():
    assert uri_auth.redact("postgresql://ana:pw@db.lab:5432/mlflow") == "postgresql://***@db.lab:5432/mlflow"
    assert uri_auth.redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert uri_auth.redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_http_credentials_reach_the_server_and_leave_the_uri(clean_env, server):
    port, seen = server
    quoted = SECRET.replace(":", "%3A").replace("@", "%40")
    uri = layout.resolve_tracking_uri(f"http://ana:{quoted}@127.0.0.1:{port}")
    assert uri == f"http://127.0.0.1:{port}"
    layout.probe_tracking(uri)
    assert seen == ["Basic " + base64.b64encode(f"ana:{SECRET}".encode()).decode()]


def test_an_unreachable_server_is_named_without_its_password(clean_env):
    with pytest.raises(layout.TrackingUnreachable) as err:
        layout.probe_tracking(layout.resolve_tracking_uri("http://ana:hunter22@127.0.0.1:9"), timeout=2)
    assert "hunter22" not in str(err.value) and "127.0.0.1:9" in str(err.value)


def test_submit_passes_credentials_through_the_environment_not_the_entrypoint(clean_env):
    db = "postgresql://ana:hunter22@127.0.0.1:5432/mlflow"
    command = jobs.entrypoint("sweep.yaml", db, None, None)
    assert "hunter22" not in command and "--tracking-uri" not in command
    assert jobs.secret_env(db) == {layout.TRACKING_URI_ENV: db}
    http_uri = layout.resolve_tracking_uri("http://ana:hunter22@127.0.0.1:5000")
    command = jobs.entrypoint("sweep.yaml", http_uri, None, None)
    assert "hunter22" not in command and "--tracking-uri http://127.0.0.1:5000" in command
    assert jobs.secret_env(http_uri) == {uri_auth.USERNAME_ENV: "ana", uri_auth.PASSWORD_ENV: "hunter22"}


def test_redact_text_hides_a_uri_password_inside_a_message():
    uri = "postgresql://ana:hunter%2122@127.0.0.1:5432/optuna"
    text = f"cannot open {uri}: password 'hunter!22' refused (hunter%2122)"
    shown = uri_auth.redact_text(text, uri)
    assert "hunter" not in shown and "postgresql://***@127.0.0.1:5432/optuna" in shown
    assert uri_auth.redact_text("no secret here", "sqlite:////tmp/x.db") == "no secret here"


def test_an_unreachable_database_is_named_in_one_line_without_its_password(clean_env):
    """A postgresql:// tracking URI that nothing answers: seconds, not MLflow's minutes of retries."""
    import time

    start = time.monotonic()
    with pytest.raises(layout.TrackingUnreachable) as err:
        layout.probe_tracking("postgresql://ana:hunter22@127.0.0.1:1/mlflow", timeout=2)
    message = str(err.value)
    assert "hunter22" not in message and "127.0.0.1:1" in message and "\n" not in message, message
    assert "tracking_uri" in message and time.monotonic() - start < 30


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_study_password_is_never_printed(command, tmp_path, monkeypatch, capsys):
    """A search sweep whose study URI holds a password: `validate` and `plan` name the study
    (and the optuna-dashboard command) without it, on stdout as on stderr."""
    from helpers import write_search_sweep
    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    sweep = write_search_sweep(tmp_path, "secret-study", 2, storage="postgresql://ana:hunter22@127.0.0.1:1/optuna")
    assert main([command, str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "postgresql://***@127.0.0.1:1/optuna" in out and "hunter22" not in out + err, out + err

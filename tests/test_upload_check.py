"""What `submit` refuses to upload (orchestrator/upload_check.py): the secret variables' values,
however written down (short, quoted, JSON, Python, compressed) and key files; what it leaves out:
histories and databases.
Each case is a file a real working directory has held."""
import bz2
import gzip
import io
import lzma
import zipfile
from pathlib import Path

import pytest

from orchestrator import jobs, upload_check

# The examples below are secrets by design; they are assembled from pieces so that this file,
# uploaded with the repository, does not itself read as one.
PW = "pw7" + "Qz"              # shorter than the 16 characters the old content rule needed
ENV = {"MLFLOW_TRACKING_PASSWORD": PW, "HOME": "/home/someone", "PATH": "/usr/bin"}


def zipped(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, text)
    return buf.getvalue()


REFUSED = [
    ("env.log", f"MLFLOW_TRACKING_PASSWORD={PW}\n", "value of $MLFLOW_TRACKING_PASSWORD"),
    ("notes.sh", f"export MLFLOW_TRACKING_PASSWORD='{PW}'\n", "value of $MLFLOW_TRACKING_PASSWORD"),
    ("params.yaml", f"lr: 1e-3\nauth: {PW}\n", "value of $MLFLOW_TRACKING_PASSWORD (line 2)"),
    ("conf.json", f'{{"MLFLOW_TRACKING_PASSWORD": "{PW}"}}', "value of $MLFLOW_TRACKING_PASSWORD"),
    ("setup.py", f"import os\nos.environ['MLFLOW_TRACKING_PASSWORD'] = '{PW}'\n", "value of"),
    ("old.log.gz", gzip.compress(f"connecting with {PW}\n".encode()), "inside the compressed file"),
    ("old.log.bz2", bz2.compress(f"step 1 ok, key {PW}\n".encode() * 50), "inside the compressed file"),
    ("old.log.xz", lzma.compress(f"step 1 ok, key {PW}\n".encode() * 50), "inside the compressed file"),
    ("logs.zip", zipped("a/run.log", f"step 1 ok, key {PW}\n" * 50), "inside the archive's a/run.log"),
    # no secret variable set for these: caught by how they are written
    ("server.log", "2026-01-01 login user=ana password=hunter22\n", "assigns a value to password"),
    ("cfg.json", '{"api_token' + '": "tok-abc-123"}', "assigns a value to api_token"),
    ("creds.py", 'DB_PASSWORD' + ' = "s3cr3t!"\n', "assigns a value to DB_PASSWORD"),
    ("deploy.txt", "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nabc\n", "private key"),
    # by name, whatever they hold
    (".env.local", "A=1\n", "a credential"),
    ("id_ed25519", "x", "a credential"),
]


@pytest.mark.parametrize("name, content, why", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(tmp_path, name, content, why):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    found = upload_check.secret_findings(tmp_path, [Path(name)], environ=ENV)
    assert len(found) == 1 and found[0].startswith(f"{name}: ") and why in found[0], found
    assert PW not in found[0]  # the reason never repeats the secret


HARMLESS = [
    ("train.py", "def connect(password=None):\n    return login(password=password, token=token)\n"),
    ("README.md", "set MLFLOW_TRACKING_PASSWORD=$SECRET or RAY_AUTH_TOKEN=$(ray get-auth-token)\n"),
    ("sweep.yaml", "name: x\nbase: {lr: 1e-3}\n"),
    ("doc.md", "the token: `<your token>` goes in `MLFLOW_TRACKING_TOKEN=...`\n"),
    ("weights.bin", bytes(range(256)) * 4),
]


LEFT_OUT = [
    (".bash_history", "ls\n", "shell or REPL history"),
    (".python_history", "1+1\n", "shell or REPL history"),
    ("other.db", "not even a database", "a database"),
    ("results.sqlite3", "", "a database"),
    ("mystery.bin", b"SQLite format 3\0" + b"\0" * 100, "it is a SQLite database"),
]


@pytest.mark.parametrize("name, content, why", LEFT_OUT, ids=[r[0] for r in LEFT_OUT])
def test_histories_and_databases_are_left_out_whatever_they_hold(tmp_path, name, content, why):
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    kept, skipped, refused = upload_check.sort_upload(tmp_path, [Path(name)], environ=ENV)
    assert kept == [] and refused == [] and len(skipped) == 1 and why in skipped[0]


@pytest.mark.parametrize("name, content", HARMLESS, ids=[h[0] for h in HARMLESS])
def test_harmless(tmp_path, name, content):
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert upload_check.secret_findings(tmp_path, [Path(name)], environ=ENV) == []


def test_only_secret_variables_are_searched_and_short_values_are_named():
    env = {"MY_API_KEY": "ab" + "cd1234", "GITHUB_TOKEN": "gh" + "p_x", "AWS_SECRET_ACCESS_KEY": "k" * 40,
           "USER": "root", "LANG": "C.UTF-8", "DB_PASSWORD": "ab"}
    assert set(upload_check.secret_values(env)) == {"MY_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY"}
    assert upload_check.short_secret_variables(env) == ["DB_PASSWORD"]


def test_dry_run_lists_each_refusal_with_its_reason_and_uploads_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PW)
    (tmp_path / "sweep.yaml").write_text("name: tiny\nbase: {steps: 30}\n")
    (tmp_path / "env.log").write_text(f"pw={PW}\n")
    (tmp_path / ".bash_history").write_text("ls\n")
    with pytest.raises(jobs.UserError) as err:
        jobs.submit_sweep(str(tmp_path / "sweep.yaml"), address=None, tracking_uri="http://127.0.0.1:1",
                          working_dir=str(tmp_path), dry_run=True)
    out = capsys.readouterr().out
    assert "  sweep.yaml" in out and "refused (1;" in out and "left out (1;" in out
    assert "env.log: holds the value of $MLFLOW_TRACKING_PASSWORD" in out
    assert ".bash_history: its name says it is a shell or REPL history" in out
    assert PW not in out + str(err.value)


def test_what_is_left_out_is_excluded_from_rays_own_walk(tmp_path):
    (tmp_path / "sweep.yaml").write_text("name: x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "srv.db").write_text("x")
    (tmp_path / "sub" / "keep.db.txt").write_text("x")
    files, excludes, skipped, refused = jobs.check_upload(tmp_path)
    assert skipped == ["sub/srv.db: its name says it is a database (*.db)"] and refused == []
    assert sorted(jobs.upload_files(tmp_path, excludes)) == sorted(files) == [Path("sub/keep.db.txt"), Path("sweep.yaml")]

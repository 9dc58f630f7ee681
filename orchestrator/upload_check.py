"""What `submit` must never upload: files that hold a credential.

Shell and REPL histories and databases (by name, or SQLite by their first bytes) are left out
of every upload; `submit` goes on without them. A file is refused, and `submit` stops, when
- its name says it is a credential: key files, `.env`-like files, token files;
- it holds the value of a secret variable set in this environment (`*_PASSWORD`, `*_TOKEN`,
  `*_SECRET`, `*_KEY`, cloud credentials), however it is quoted, also inside gzip, bzip2, xz and
  zip files — the only check that does not depend on how the value was written down;
- it assigns a value to a secret-looking name (`PASSWORD=...`, `"api_token": "..."`,
  `os.environ['MLFLOW_TRACKING_PASSWORD'] = '...'`) or holds a private key block.

Our own rules rather than a secret-scanning package: those look for known token formats
(AWS, GitHub, ...), and a lab's MLflow password has none; the values actually set here are what
must not leave the machine.
"""
from __future__ import annotations

import bz2
import fnmatch
import gzip
import io
import lzma
import os
import re
import zipfile
from pathlib import Path
from typing import Mapping

from .uri_check import SQLITE_MAGIC

# By name (lower-cased, fnmatch).
SECRET_NAMES = (".env", ".env.*", "*.env", "env.sh", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx",
                "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*credentials*", ".netrc", ".pgpass",
                ".my.cnf", ".git-credentials", ".pypirc", "*secret*", "auth_token*", "*_token", "*-token",
                "*.token", "token", "token.txt", "*_token.txt", "*-token.txt", "*.kdbx", "*.keystore", "*.jks")
HISTORY_NAMES = (".*_history", "*_history", ".history", ".histfile", ".lesshst", ".psql_history",
                 ".python_history", ".node_repl_history", ".sqlite_history")
DATABASE_NAMES = ("*.db", "*.db-journal", "*.db-wal", "*.db-shm", "*.sqlite", "*.sqlite3", "*.sqlite-journal",
                  "*.duckdb", "*.mdb", "*.accdb", "*.ldb", "*.rdb", "*.dump", "*.sql.gz")

# Environment variables whose values are secrets.
SECRET_VARIABLE = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|_KEY|SECRET_ACCESS_KEY|CREDENTIALS?)$")
# A value shorter than this matches by chance in ordinary text; such variables are named in a
# warning instead (see short_secret_variables).
MIN_VALUE_CHARS = 4
# Assignment of a value to a secret-looking name, however quoted: NAME=v, NAME: v, "name": "v",
# environ['NAME'] = 'v', --password v.
SECRET_ASSIGNMENT = re.compile(
    rb"""(?i)([A-Za-z0-9_.\-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key))"""
    rb"""['"]?\]?[ \t]*[=:][ \t]*(['"]?)([^\s'"`#,;}{\])(]{4,})""")
# In Python source an unquoted value is an expression (`password=password`), not a secret.
CODE_SUFFIXES = (".py", ".pyi", ".ipynb")
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
# Values that are not secrets, though assigned to a secret-looking name.
PLACEHOLDERS = re.compile(rb"(?i)^(\$.*|<[^>]*>|x+|\*+|\.\.\.|changeme|none|null|true|false|"
                          rb"required|optional|os\.environ.*|getenv.*|env\[.*)$")
SCAN_BYTES = 1 << 20          # what is read of a file (and of a compressed file, after decompression)
COMPRESSED = {".gz": gzip.decompress, ".tgz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress,
              ".lzma": lzma.decompress}


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """{variable: value} for the secret variables set in the environment."""
    env = os.environ if environ is None else environ
    return {name: value.encode() for name, value in env.items()
            if SECRET_VARIABLE.search(name.upper()) and len(value) >= MIN_VALUE_CHARS}


def short_secret_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return sorted(n for n, v in env.items() if SECRET_VARIABLE.search(n.upper()) and 0 < len(v) < MIN_VALUE_CHARS)


def left_out(working_dir: Path, rel: Path) -> str | None:
    """Why `rel` is never uploaded though `submit` goes on (a history or a database: a job has
    no use for them, and they hold what was typed or tracked), or None."""
    name = rel.name.lower()
    for kind, patterns in (("a shell or REPL history", HISTORY_NAMES), ("a database", DATABASE_NAMES)):
        pattern = next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)
        if pattern:
            return f"its name says it is {kind} ({pattern})"
    try:
        with (working_dir / rel).open("rb") as f:
            if f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                return "it is a SQLite database"
    except OSError:
        pass  # `refusal` says why it cannot be read
    return None


def refusal(working_dir: Path, rel: Path, values: Mapping[str, bytes]) -> str | None:
    """Why `rel` must not be uploaded and `submit` must stop (a credential, by name or content),
    or None."""
    name = rel.name.lower()
    pattern = next((p for p in SECRET_NAMES if fnmatch.fnmatchcase(name, p)), None)
    if pattern:
        return f"its name says it is a credential ({pattern})"
    path = working_dir / rel
    try:
        with path.open("rb") as f:
            data = f.read(SCAN_BYTES)
    except OSError as err:
        return f"cannot be read to check it for secrets ({err.strerror or err})"
    for label, content in _contents(rel, data):
        why = _content_refusal(content, values, code=rel.suffix.lower() in CODE_SUFFIXES)
        if why:
            return why + (f" (inside {label})" if label else "")
    return None


def _contents(rel: Path, data: bytes):
    """(label, bytes) to scan: the file itself and, for a compressed file, what it holds."""
    yield "", data
    suffix = rel.suffix.lower()
    try:
        if suffix in COMPRESSED:
            yield "the compressed file", _bounded(COMPRESSED[suffix], data)
        elif suffix == ".zip" or data.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist()[:1000]:
                    with archive.open(info) as member:
                        yield f"the archive's {info.filename}", member.read(SCAN_BYTES)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zipfile.BadZipFile, RuntimeError, NotImplementedError):
        pass  # truncated or odd archives: the raw bytes were scanned above


def _bounded(decompress, data: bytes) -> bytes:
    # One-shot decompression of a 1 MiB read can still expand a great deal; cap what is kept.
    return decompress(data)[:SCAN_BYTES] if len(data) < SCAN_BYTES else b""


def _line(data: bytes, at: int) -> int:
    return data.count(b"\n", 0, at) + 1


def _content_refusal(data: bytes, values: Mapping[str, bytes], code: bool = False) -> str | None:
    for variable, value in values.items():
        at = data.find(value)
        if at >= 0:
            return f"holds the value of ${variable} (line {_line(data, at)})"
    for match in SECRET_ASSIGNMENT.finditer(data):
        quoted, value = match.group(2), match.group(3)
        if (quoted or not code) and not PLACEHOLDERS.match(value):
            name = match.group(1).decode(errors="replace")[:60]
            return f"assigns a value to {name} (line {_line(data, match.start())})"
    key = PRIVATE_KEY.search(data)
    if key:
        return f"holds a private key (line {_line(data, key.start())})"
    return None


def secret_findings(working_dir: Path, files: list[Path], environ: Mapping[str, str] | None = None) -> list[str]:
    """'path: why' for each file that must not be uploaded and stops `submit`."""
    values = secret_values(environ)
    out = []
    for rel in files:
        why = refusal(working_dir, rel, values)
        if why:
            out.append(f"{rel.as_posix()}: {why}")
    return out


def sort_upload(working_dir: Path, files: list[Path], environ: Mapping[str, str] | None = None
                ) -> tuple[list[Path], list[str], list[str]]:
    """(files to upload, 'path: why' left out, 'path: why' refused) of Ray's file list."""
    kept, skipped = [], []
    for rel in files:
        why = left_out(working_dir, rel)
        if why:
            skipped.append(f"{rel.as_posix()}: {why}")
        else:
            kept.append(rel)
    return kept, skipped, secret_findings(working_dir, kept, environ)

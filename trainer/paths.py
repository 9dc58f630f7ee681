"""Output paths the user names on the command line (`train --checkpoint-dir`, `--json`,
`report --out`, `export FILE`): checked before the work starts, so that an unwritable place
is one line at once, not a traceback after an hour of training or a long MLflow read."""
from __future__ import annotations

import os

from .errors import UserError


def writable_dir(path: str, flag: str) -> str:
    """Create `path` if needed; UserError naming `flag` and the path when that fails or it is
    not writable."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot create the directory ({err.strerror or err}); "
                        "pick a directory you can write to") from None
    if not os.path.isdir(path):
        raise UserError(f"{flag} {path}: not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the directory is not writable; pick a directory you can write to")
    return path


def writable_file(path: str, flag: str) -> str:
    """A file that can be written: its folder exists (or is created) and is writable, and the
    path itself is not a directory."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: is a directory; give a file name")
    writable_dir(os.path.dirname(os.path.abspath(path)), flag)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path}: the file is not writable")
    return path

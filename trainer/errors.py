"""The errors a user can fix. Their own module so that trainer/config.py and the YAML loader it
uses (trainer/yaml_lines.py) both import them without importing each other; the public names
are `trainer.config.UserError`, `ConfigError` and `DataError`, and
`trainer.checkpoint.CheckpointError`. `brief` is the one way a value is quoted in a message
(bounded: YAML aliases can make huge values)."""
import reprlib
from typing import Any

_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 80, 80, 8, 8
_REPR.maxlong, _REPR.maxset, _REPR.maxtuple = 40, 8, 8


def brief(value: Any) -> str:
    """repr() bounded in size: YAML aliases can make huge (or cyclic) values."""
    return _REPR.repr(value)


class UserError(Exception):
    """An error the user can fix (bad file, key, value, missing corpus). The CLI prints its
    message alone, without a traceback, and exits with status 2."""


class ConfigError(UserError, ValueError):
    """Bad config input (file, key, value); the message says where and how to fix it."""


class DataError(UserError):
    """Missing, empty or unreadable corpus; the message names the path."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used (missing, corrupt, not in the safe format); the message
    names its file. Nothing of such a file is loaded."""

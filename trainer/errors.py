"""The errors a user can fix. Their own module so that trainer/config.py and the YAML loader it
uses (trainer/yaml_lines.py) both import them without importing each other; the public names
are `trainer.config.UserError`, `ConfigError` and `DataError`."""


class UserError(Exception):
    """An error the user can fix (bad file, key, value, missing corpus). The CLI prints its
    message alone, without a traceback, and exits with status 2."""


class ConfigError(UserError, ValueError):
    """Bad config input (file, key, value); the message says where and how to fix it."""


class DataError(UserError):
    """Missing, empty or unreadable corpus; the message names the path."""

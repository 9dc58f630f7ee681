"""The errors a user can fix. Their own module so that trainer/config.py and the YAML loader it
uses (trainer/yaml_lines.py) both import them without importing each other; the public names
are `trainer.config.UserError`, `ConfigError` and `DataError`, and
`trainer.checkpoint.CheckpointError`. `brief` is the one way a value is quoted in a message
(bounded: YAML aliases can make huge values)."""
import reprlib
from typing import Any

MAX_BRIEF = 400        # characters of a quoted value, whatever it is
_LONG_INT_BITS = 512   # past this an integer is described, not printed (str() of one is slow,
                       # and past 4300 digits Python refuses it)


class _BoundedRepr(reprlib.Repr):
    """reprlib's Repr that never converts a huge integer or copies a huge string or bytes to
    quote a few characters of it."""

    def repr_int(self, x, level):
        if x.bit_length() > _LONG_INT_BITS:
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1:,} digits>"
        return super().repr_int(x, level)

    def repr_instance(self, x, level):
        # Subclasses of the built-in types (reprlib dispatches on the exact type name) would be
        # repr'd whole before being cut; bytes have no reprlib method at all.
        if isinstance(x, int) and x.bit_length() > _LONG_INT_BITS:
            return self.repr_int(x, level)
        if isinstance(x, (str, bytes, bytearray)):
            cut = x[:self.maxstring]  # a slice of a subclass is of the base type
            return repr(cut) + ("..." if len(cut) < len(x) else "")
        for base in (list, tuple, dict, set, frozenset):
            if isinstance(x, base):
                return getattr(self, f"repr_{base.__name__}")(x, level)
        return super().repr_instance(x, level)


_REPR = _BoundedRepr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 80, 80, 8, 8
_REPR.maxlong, _REPR.maxset, _REPR.maxtuple = 40, 8, 8


def brief(value: Any) -> str:
    """repr() bounded in size and safe for any value: YAML aliases can make huge (or cyclic)
    values, a hex literal an integer too long to print, and an odd object a repr that fails."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a message is being built; it must not fail in turn
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= MAX_BRIEF else text[:MAX_BRIEF - 3] + "..."


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

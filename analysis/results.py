"""The base of every fit's result: a frozen dataclass per result, per group / curve / fit inside
it, and per fixed-key row of those (a log-log fit, a penalty, a verdict, ...). Each fit module
defines its own result types (transfer.TransferResult, ...; stats.LogLogFit); registry.load
reads any of them back from summary.json.

Readers (plots, report_md) use attributes; `to_dict()` is the JSON object summary.json holds,
keys named and ordered as the fields, and `from_dict(data)` reads it back. A field's JSON key may
differ from its name (`json_key`): a fixed one (`with_` is "with"), one named after a data column
("{size_column}": d_model), or none (left out); `optional` leaves a field out when it does not
apply; `inline` puts a nested result's keys in the row's own object (a row's log-log fit). The
comparison's best-loss and gap rows stay plain dicts: their keys follow the data (the size
columns, n_layers and tokens when they vary, best_<hp>).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

Row = dict[str, Any]   # one plain JSON row: a best-loss or gap row, keyed by the data


def _not_none(result: "Result", value: Any) -> bool:
    return value is not None


def optional(when: Callable[["Result", Any], bool] = _not_none) -> Any:
    """A field that is in the JSON only when when(result, value) holds (default: not None)."""
    return field(default=None, metadata={"when": when})


def json_key(key: str | None) -> Any:
    """A field under another JSON key: "with" (a Python keyword), "{size_column}" (the value of the
    field size_column: a data column's name), or None (not in the JSON)."""
    return field(metadata={"json_key": key})


def inline() -> Any:
    """A nested result whose keys stand in the row's own JSON object (a row's log-log fit)."""
    return field(metadata={"inline": True})


@dataclass(frozen=True, kw_only=True)
class Result:
    """Base of every typed result: read by attribute; to_dict() for JSON, from_dict() back."""

    def _json_items(self) -> list[tuple[str, Any]]:
        """(JSON key, value) in field order, as to_dict() writes them."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "inline" in f.metadata:
                out += value._json_items()
            elif "json_key" in f.metadata:
                if f.metadata["json_key"] is not None:
                    out.append((f.metadata["json_key"].format_map(vars(self)), value))
            elif "when" not in f.metadata or f.metadata["when"](self, value):
                out.append((f.name, value))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in self._json_items()}

    @classmethod
    def fixed_keys(cls) -> set[str]:
        """The JSON keys that do not follow the data (every key but a column's name)."""
        hints = typing.get_type_hints(cls)
        return set().union(*(hints[f.name].fixed_keys() if "inline" in f.metadata
                             else {f.metadata.get("json_key", f.name)} for f in dataclasses.fields(cls)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        """The inverse of to_dict(): nested results typed again."""
        hints = typing.get_type_hints(cls)
        extra = [k for k in data if k not in cls.fixed_keys()]   # a key named after a column
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = f.metadata.get("json_key", f.name)
            if "inline" in f.metadata:
                kwargs[f.name] = hints[f.name].from_dict(data)
            elif key is None or "{" in key:
                kwargs[f.name] = extra[0] if key is None else data[extra[0]]
            elif key in data:
                kwargs[f.name] = _load(hints[f.name], data[key])
        return cls(**kwargs)

    def map_values(self, fn: Callable[[Any], Any]) -> "Result":
        """The same result with fn applied to every leaf value (run_fits: numpy -> JSON types)."""
        return dataclasses.replace(self, **{f.name: _map(getattr(self, f.name), fn) for f in dataclasses.fields(self)})


def _plain(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_result(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Result)


def _load(hint: Any, value: Any) -> Any:
    args = typing.get_args(hint)
    if type(None) in args and value is not None:           # X | None: as X
        return _load(next(a for a in args if a is not type(None)), value)
    if _is_result(hint):
        return hint.from_dict(value)
    if typing.get_origin(hint) is list and args and _is_result(args[0]):
        return [args[0].from_dict(v) for v in value]
    if typing.get_origin(hint) is dict and args and _is_result(args[1]):
        return {k: args[1].from_dict(v) for k, v in value.items()}
    return value


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, Result):
        return value.map_values(fn)
    if isinstance(value, dict):
        return {str(k): _map(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_map(v, fn) for v in value]
    return fn(value)

"""Collect what is wrong with a sweep file, then raise one ConfigError that names the file, each
key path with its line, and what is allowed."""
from __future__ import annotations

import difflib
from typing import Any, Iterable

from pydantic import ValidationError

from trainer.config import ConfigError
from trainer.errors import brief  # noqa: F401 - the one bounded repr, re-exported for the orchestrator
from trainer.yaml_lines import KeyPath, LoadedYaml

from .uri_auth import redact

MAX_LISTED = 12  # a file with 500 bad grid points should not print 500 lines


class Problems:
    def __init__(self, loaded: LoadedYaml):
        self.loaded = loaded
        self.items: list[str] = []
        self._seen: set[str] = set()  # `text in self.items` made 60k unknown keys take 34 s

    def add(self, path: KeyPath, message: str) -> None:
        text = f"{self.loaded.where(path)}: {message}" if path else message
        if text not in self._seen:
            self._seen.add(text)
            self.items.append(text)

    @property
    def hints_wanted(self) -> bool:
        """False once more problems are known than are listed: "did you mean" costs ~0.5 ms a
        key (difflib), and a file of 20 000 unknown keys would spend seconds on unseen hints."""
        return len(self.items) < MAX_LISTED

    def add_validation_error(self, err: ValidationError, prefix: KeyPath = (), data: Any = None,
                             allowed: dict[KeyPath, Iterable[str]] | None = None) -> None:
        """pydantic errors, re-mapped to key paths of the file. A union type gives one error per
        member (loc ends in the type's name); those are merged into one 'a or b' line."""
        merged: dict[KeyPath, list[str]] = {}
        for e in err.errors():
            path = _real_path(tuple(e["loc"]), data)
            merged.setdefault(path, [])
            msg = _message(e, path, allowed if self.hints_wanted else {})
            if msg not in merged[path]:
                merged[path].append(msg)
        for path, msgs in merged.items():
            self.add(prefix + path, " or ".join(msgs) if len(msgs) > 1 else msgs[0])

    def raise_if_any(self) -> None:
        if not self.items:
            return
        source = self.loaded.source
        if len(self.items) == 1:
            raise ConfigError(f"{source}: {self.items[0]}")
        shown = self.items[:MAX_LISTED]
        more = len(self.items) - len(shown)
        lines = [f"{source}: {len(self.items)} problems:"] + [f"  - {item}" for item in shown]
        if more:
            lines.append(f"  ... and {more} more")
        raise ConfigError("\n".join(lines))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    if not choices:
        return ""
    close = closest(str(word), choices)
    if close:
        return f"did you mean '{close}'?"
    return "allowed: " + ", ".join(choices) if len(choices) <= 20 else ""


def closest(word: str, choices: list[str]) -> str | None:
    """difflib finds the candidates; edit distance with transpositions picks among them
    (difflib alone prefers 'wd_mode' over 'd_model' for the typo 'd_modle')."""
    candidates = difflib.get_close_matches(word, choices, n=5, cutoff=0.6)
    return min(candidates, key=lambda c: _edit_distance(word, c), default=None)


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def unknown_key(word: str, choices: Iterable[str]) -> str:
    hint = did_you_mean(word, choices)
    return "unknown key" + (f"; {hint}" if hint else "")


def _real_path(loc: KeyPath, data: Any) -> KeyPath:
    """The part of pydantic's `loc` that names keys/indices present in the data (or one missing
    key at the end); drops the union-member names pydantic appends."""
    out: list = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            out.append(part)
            if part not in node:  # a missing (required) or unknown key: keep it, then stop
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        else:
            break
    return tuple(out)


def _message(e: dict, path: KeyPath, allowed: dict[KeyPath, Iterable[str]]) -> str:
    if e["type"] == "extra_forbidden":
        return unknown_key(path[-1] if path else "", allowed.get(path[:-1], ()))
    if e["type"] == "missing":
        return "required key is missing"
    if e["type"] in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping (indented `key: value` lines), got {brief(e.get('input'))}"
    msg = e["msg"].removeprefix("Value error, ")
    if "input" in e and not isinstance(e["input"], (dict, list)):
        shown = brief(redact(e["input"]) if isinstance(e["input"], str) else e["input"])  # no URI's password
        if shown not in msg and "***@" not in msg:
            msg += f" (got {shown})"
    return msg

"""Sweep files: load, validate, expand into trials (the `orchestrator.spec` contract of
docs/CONTRACTS.md; the file format is documented in docs/sweeps.md). A trial itself — its
identity, hash, label and payload — is orchestrator/trial.py.

    spec = load_sweep("sweeps/quickstart.yaml")   # ConfigError naming file, key path, line
    for trial in spec.trials(): ...               # grid mode
    trial = spec.resolve({"lr": 1e-3})            # search mode: a sampled point

Every key of a trial's config is set in exactly one place: `base` (or its `from_study`), a
`grid` or `zip` axis, `seeds`, `derived`, or `search.space`.
"""
from __future__ import annotations

import gc
import itertools
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Iterator, Literal

from pydantic import TypeAdapter, ValidationError

from trainer.config import ConfigError, TrainConfig, check_plain_value, corpus_problems
from trainer.estimate import SIZE_KEYS, estimate, machine_memory_bytes, memory_problem
from trainer.yaml_lines import KeyPath, LoadedYaml, load_yaml_file, load_yaml_text

from . import derive, search_space
from .from_study import best_params
from .layout import resolve_tracking_uri
from .locations import absolute_sqlite, default_study_url, storage_dir
from .problems import Problems, brief, unknown_key
from .spec_schema import ALLOWED_KEYS, FromStudyFile, SweepFile
from .trial import Trial, gpu_fraction, short_value, trial_hash, trial_label
from .uri_auth import redact

MAX_TRIALS = 100_000  # a typo like `seeds: 100000000` should fail fast, not fill memory
FIELDS = TrainConfig.model_fields


class _PointError(Exception):
    """One grid point or sample that does not make a valid config (message without the file)."""


@dataclass(frozen=True)
class SearchSpec:
    metric: str
    mode: Literal["min", "max"]
    num_samples: int
    storage: str               # optuna RDB URL (a default one is provisional: see storage_is_default)
    study_name: str
    space: dict[str, Any]      # key -> optuna.distributions.BaseDistribution
    space_text: dict[str, str] = field(default_factory=dict)  # key -> "log_uniform[1e-4, 1e-2]"
    storage_is_default: bool = False  # Locations.resolve then places the study by the effective tracking URI
    sampler_seed: int | None = None


def load_sweep(path: str) -> "SweepSpec":
    return SweepSpec.from_loaded(load_yaml_file(str(path)))


def load_sweep_text(text: str, source: str = "<string>") -> "SweepSpec":
    return SweepSpec.from_loaded(load_yaml_text(text, source=source))


@lru_cache(maxsize=None)
def _field_adapter(key: str) -> TypeAdapter:
    info = FIELDS[key]
    return TypeAdapter(Annotated[info.annotation, info])


class SweepSpec:
    """A validated sweep file. Build with `load_sweep`; all checks run at load time."""

    def __init__(self, loaded: LoadedYaml, parsed: SweepFile):
        self.source = loaded.source
        self._loaded = loaded
        self.name = parsed.name
        self.experiment = parsed.experiment or parsed.name
        self.tracking_uri = parsed.tracking_uri
        self.description = parsed.description
        self.concurrency = parsed.concurrency
        self.retries = parsed.retries
        self.fuse: int | str = parsed.fuse   # "auto" | "off" | N (orchestrator/packing.py)
        self.mode: Literal["grid", "search"] = "search" if parsed.search else "grid"
        gpu = parsed.resources.gpu
        self.resources = {"cpu": float(parsed.resources.cpu), "gpu": gpu if gpu == "auto" else float(gpu)}
        self.workers = parsed.resources.workers  # in a trial's resources only when more than one
        self.placement = parsed.resources.placement  # None: Ray Train's default (trial.DEFAULT_PLACEMENT)
        self.gpu_memory_gb = parsed.resources.gpu_memory_gb
        self.grid = dict(parsed.grid)
        self.zip = dict(parsed.zip)
        self.derived_text = dict(parsed.derived)
        self.seeds: list[int] = []
        self.base: dict[str, Any] = {}          # fixed values, from_study ones included
        self.from_study: dict[str, Any] | None = None  # {"storage", "study", "params"}
        self.search: SearchSpec | None = None
        self._origin: dict[str, KeyPath] = {}  # key -> where the file sets it
        self._derived: dict[str, Any] = {}     # key -> parsed expression
        self._trials: list[Trial] = []
        self.merged_duplicates = 0

    # --- public API --------------------------------------------------------------------------
    @classmethod
    def from_loaded(cls, loaded: LoadedYaml) -> "SweepSpec":
        parsed = _parse_top_level(loaded)
        spec = cls(loaded, parsed)
        spec._check_keys(parsed)
        if spec.mode == "grid":
            spec._trials = spec._expand()
        else:
            spec._check_search_corners()
        return spec

    def trials(self) -> list[Trial]:
        """Grid mode: every trial (axes × seeds), duplicates merged; search mode: []."""
        return list(self._trials)

    def resolve(self, values: dict[str, Any]) -> Trial:
        """A trial from sampled values (search mode; works in grid mode too), derived applied.
        `values` may include `seed`; without it the first of `seeds` is used."""
        if not isinstance(values, dict):
            raise ConfigError(f"{self.source}: sampled values must be a mapping, got {brief(values)}")
        overrides = dict(values)
        overrides.setdefault("seed", self.seeds[0])
        problems = Problems(self._loaded)
        for key, value in overrides.items():
            if key not in FIELDS:
                problems.add((), f"sampled key {brief(key)}: {unknown_key(key, FIELDS)}")
            elif key in self._derived:
                problems.add(("derived", key), "is derived; it cannot also be sampled")
            else:
                overrides[key] = self._check_value(problems, (), key, value, what=f"sampled {key}:")[1]
        problems.raise_if_any()
        try:
            return self._build_trial(overrides, varying=[k for k in overrides if k != "seed"] + ["seed"])
        except _PointError as err:
            raise ConfigError(f"{self.source}: {err}") from None

    def summary(self, study_url: str | None = None) -> str:
        """'27 trials (grid: scheme 3 × d_model 3 × lr 3; 1 seed)' — for `scalelab validate`.
        `study_url`: where the search study is (Locations.resolve), else `search.storage`."""
        seeds = f"{len(self.seeds)} seed" + ("s" if len(self.seeds) != 1 else "")
        if self.mode == "search":
            s = self.search
            return (f"search: {s.num_samples} samples (seed {self.seeds[0]}) over {', '.join(s.space)}; "
                    f"{s.mode} {s.metric}; study {s.study_name!r} at {redact(study_url or s.storage)}")
        parts = []
        if self.grid:
            parts.append("grid: " + " × ".join(f"{k} {len(v)}" for k, v in self.grid.items()))
        if self.zip:
            parts.append(f"zip: {', '.join(self.zip)} ({len(next(iter(self.zip.values())))} points)")
        parts.append(seeds)
        if self.merged_duplicates:
            parts.append(f"{self.merged_duplicates} duplicate point(s) merged")
        n = len(self._trials)
        return f"{n} trial{'s' if n != 1 else ''} ({'; '.join(parts)})"

    def where(self, path: KeyPath) -> str:
        return self._loaded.where(path)

    # --- checks of the keys (once per file) --------------------------------------------------
    def _check_keys(self, parsed: SweepFile) -> None:
        problems = Problems(self._loaded)
        self._check_trial_count(problems, parsed)  # before any value is looked at
        self._take_base(problems, parsed)
        self._take_seeds(problems, parsed)
        for section in ("grid", "zip"):
            for key, values in getattr(parsed, section).items():
                if not values:
                    problems.add((section, key), f"expected a non-empty list of values, e.g. {key}: [a, b]")
                elif self._claim(problems, key, (section, key)):
                    axis = getattr(self, section)
                    axis[key] = self._check_values(problems, (section, key), key, values)
        self._check_zip_lengths(problems)
        for key, text in parsed.derived.items():
            if self._claim(problems, key, ("derived", key)):
                try:
                    self._derived[key] = derive.parse_expression(text)
                except derive.ExpressionError as err:
                    problems.add(("derived", key), f"{err}")
        if parsed.search:
            self._take_search(problems, parsed)
        problems.raise_if_any()

    def _claim(self, problems: Problems, key: str, path: KeyPath) -> bool:
        """Record where `key` is set; False (with a problem) if it is not settable there."""
        if key == "seed" and path[0] != "base":
            problems.add(path, "set seeds with the top-level `seeds:` key (seeds: 3 or seeds: [0, 1, 2])")
            return False
        if key not in FIELDS:
            hint = unknown_key(key, FIELDS) if problems.hints_wanted else "unknown key"
            problems.add(path, hint + " (not a training config key)")
            return False
        if key in self._origin:
            first = self._origin[key]
            problems.add(path, f"'{key}' is already set at {self.where(first)}; set each key in one place")
            return False
        self._origin[key] = path
        return True

    def _check_trial_count(self, problems: Problems, parsed: SweepFile) -> None:
        """The number of grid points from the lengths alone, so that a grid of a million
        points is refused at once (the values are checked afterwards)."""
        seeds = parsed.seeds
        n_seeds = 1 if seeds is None else seeds if isinstance(seeds, int) else len(seeds)
        zip_len = max((len(v) for v in parsed.zip.values()), default=1)
        total = n_seeds * math.prod(max(1, len(v)) for v in parsed.grid.values()) * zip_len
        if total > MAX_TRIALS:
            problems.add((), f"the sweep expands to {total} trials, more than the limit of {MAX_TRIALS}; "
                         "use fewer axis values or seeds, or split it into several sweeps")
            problems.raise_if_any()

    def _check_values(self, problems: Problems, path: KeyPath, key: str, values: list) -> list:
        """Each distinct value of an axis checked once (an error names its first index)."""
        out, checked = [], {}
        for i, value in enumerate(values):
            try:
                memo = (type(value), value)
                hash(memo)
            except TypeError:  # lists and mappings: checked each time
                memo = None
            if memo is not None and memo in checked:
                out.append(checked[memo])
                continue
            result = self._check_value(problems, path + (i,), key, value)[1]
            if memo is not None:
                checked[memo] = result
            out.append(result)
        return out

    def _check_value(self, problems: Problems, path: KeyPath, key: str, value: Any,
                     what: str = "") -> tuple[bool, Any]:
        """(ok, the value as the config will hold it: YAML's '1e-3' string becomes 0.001)."""
        prefix = f"{what} " if what else ""
        try:
            check_plain_value(key, value)
            return True, _field_adapter(key).validate_python(value)
        except ValueError as err:  # pydantic's ValidationError is one
            errors = err.errors() if isinstance(err, ValidationError) else [{"msg": str(err)}]
            msgs = {e["msg"].removeprefix("Value error, ") for e in errors}
            problems.add(path, f"{prefix}{' or '.join(sorted(msgs))} (got {brief(value)})")
            return False, value

    def _take_base(self, problems: Problems, parsed: SweepFile) -> None:
        base = dict(parsed.base)
        study_entry = base.pop("from_study", None)
        for key, value in base.items():
            if not isinstance(key, str):
                problems.add(("base",), f"key {brief(key)} is not text")
            elif self._claim(problems, key, ("base", key)):
                ok, checked = self._check_value(problems, ("base", key), key, value)
                if ok:
                    self.base[key] = checked
        if study_entry is not None:
            self._take_from_study(problems, study_entry)

    def _take_from_study(self, problems: Problems, entry: Any) -> None:
        path = ("base", "from_study")
        try:
            ref = FromStudyFile.model_validate(entry)
        except ValidationError as err:
            problems.add_validation_error(err, path, entry, {(): list(FromStudyFile.model_fields)})
            return
        problems.raise_if_any()  # the study lookup is slow and its errors would hide these
        # No storage: where `scalelab run` put a search sweep's study by default, from the same
        # tracking URI (the one precedence rule) and the default storage folder.
        storage = ref.storage or default_study_url(resolve_tracking_uri(None, self.tracking_uri), storage_dir(None))
        params = best_params(storage, ref.study, ref.keys, f"{self.source}: {self.where(path)}",
                             assumed=ref.storage is None)
        self.from_study = {"storage": storage, "study": ref.study, "params": params}
        for key, value in params.items():
            if self._claim(problems, key, path):
                ok, checked = self._check_value(problems, path, key, value, what=f"study value {key}:")
                if ok:
                    self.base[key] = checked

    def _take_seeds(self, problems: Problems, parsed: SweepFile) -> None:
        seeds = parsed.seeds
        if seeds is not None and "seed" in self.base:
            problems.add(("seeds",), f"seed is also set in {self.where(('base', 'seed'))}; keep one")
        if seeds is None:
            self.seeds = [int(self.base.pop("seed", 0))]
            self._origin.pop("seed", None)
        else:
            self.seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
        self._origin["seed"] = ("seeds",)

    def _check_zip_lengths(self, problems: Problems) -> None:
        lengths = {key: len(values) for key, values in self.zip.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{self.where(('zip', k))} has {n}" for k, n in lengths.items())
            problems.add(("zip",), f"zip axes vary together and need the same number of values: {listed}")

    def _take_search(self, problems: Problems, parsed: SweepFile) -> None:
        s = parsed.search
        for section in ("grid", "zip"):
            if getattr(parsed, section):
                problems.add((section,), f"`{section}:` axes cannot be combined with `search:` (Ray Tune's "
                             "OptunaSearch cannot take grid_search axes); put fixed values in base, "
                             "run one search sweep per value, or drop `search:` for a grid sweep "
                             "(`seeds:` is allowed with search)")
        if parsed.seeds is not None and not isinstance(parsed.seeds, int) and len(parsed.seeds) > 1 \
                or isinstance(parsed.seeds, int) and parsed.seeds > 1:
            # Optuna scores each sampled point by one objective value: several seeds per point
            # would need an average the searcher never sees, so a search runs one seed.
            problems.add(("seeds",), "a search sweep runs one seed per sampled point (Optuna scores each point "
                         "by one value); give one seed (seeds: [0]) and repeat the best point in a grid sweep "
                         "with several seeds")
        space, text = {}, {}
        for key, entry in s.space.items():
            path = ("search", "space", key)
            wrong = search_space.check_distribution(entry)
            if wrong:
                problems.add(path, wrong)
            elif self._claim(problems, key, path):
                for value in search_space.corner_values(entry):
                    self._check_value(problems, path, key, value, what="value in range:")
                space[key] = entry
                text[key] = search_space.describe(entry)
        problems.raise_if_any()
        # Without flags or environment at hand, the default is placed by the file's tracking_uri
        # (or the working directory); commands use Locations.resolve's study_url.
        storage = absolute_sqlite(s.storage) if s.storage else default_study_url(self.tracking_uri, os.getcwd())
        self.search = SearchSpec(
            metric=s.metric, mode=s.mode, num_samples=s.num_samples, storage=storage,
            study_name=s.study_name or self.name,
            space={k: search_space.to_optuna(e) for k, e in space.items()}, space_text=text,
            storage_is_default=s.storage is None, sampler_seed=s.sampler_seed)
        self._space_file = space

    def _check_search_corners(self) -> None:
        """Resolve the low and high ends of the space (and each categorical choice) so that
        impossible combinations show at load time, not in the middle of a search."""
        corners = {k: search_space.corner_values(e) for k, e in self._space_file.items()}
        points = [{k: v[0] for k, v in corners.items()}, {k: v[-1] for k, v in corners.items()}]
        for key, values in corners.items():
            points += [{**points[0], key: v} for v in values[1:-1]]
        for point in points:
            self.resolve(point)

    # --- expansion -----------------------------------------------------------------------------
    def _expand(self) -> list[Trial]:
        grid_keys = list(self.grid)
        zip_len = len(next(iter(self.zip.values()))) if self.zip else 1
        varying = grid_keys + list(self.zip) + ["seed"]
        problems = Problems(self._loaded)
        total = len(self.seeds) * math.prod(len(v) for v in self.grid.values()) * zip_len
        if total > MAX_TRIALS:
            problems.add((), f"the sweep expands to {total} trials, more than the limit of {MAX_TRIALS}; "
                         "use fewer axis values or seeds, or split it into several sweeps")
            problems.raise_if_any()
        trials: dict[str, Trial] = {}
        with _collector_paused():
            self._expand_into(trials, problems, grid_keys, zip_len, varying)
        problems.raise_if_any()
        self.merged_duplicates = total - len(trials)
        return list(trials.values())

    def _expand_into(self, trials: dict[str, Trial], problems: Problems, grid_keys: list[str], zip_len: int,
                     varying: list[str]) -> None:
        # seed-major: seed 0 of every point comes first, so early results cover the whole grid
        for seed in self.seeds:
            for combo in itertools.product(*(range(len(v)) for v in self.grid.values())):
                for z in range(zip_len):
                    index = {k: i for k, i in zip(grid_keys, combo)} | {k: z for k in self.zip}
                    overrides = {k: self._axis(k)[i] for k, i in index.items()} | {"seed": seed}
                    try:
                        trial = self._build_trial(overrides, varying, index)
                    except _PointError as err:
                        problems.add((), str(err))
                        continue
                    trials.setdefault(trial.hash, trial)

    def _axis(self, key: str) -> list[Any]:
        return self.grid[key] if key in self.grid else self.zip[key]

    def _build_trial(self, overrides: dict[str, Any], varying: list[str],
                     index: dict[str, int] | None = None) -> Trial:
        point = lambda: _point_text(overrides)  # noqa: E731 - text only for an error: a sweep builds 100,000 trials
        values = {**self.base, **overrides}
        for key, tree in self._derived.items():
            try:
                values[key] = derive.evaluate(tree, TrainConfig.model_construct(**values))
            except derive.ExpressionError as err:
                raise _PointError(f"{self.where(('derived', key))}: at {point()}: {err}") from None
        try:
            cfg = TrainConfig(**values)
        except ValidationError as err:
            raise _PointError(self._point_error(err, point(), overrides, index or {})) from None
        too_big = self._memory_problem(cfg)
        if too_big:
            spots = [self.where(self._origin[k] + ((index[k],) if index and k in index else ()))
                     for k in SIZE_KEYS if k in self._origin]
            raise _PointError(f"at {point()}{' (' + ', '.join(spots) + ')' if spots else ''}: {too_big}")
        if cfg.batch_size < self.workers:  # each worker trains its rows of the batch (trainer/distributed.py)
            raise _PointError(f"at {point()}: batch_size={cfg.batch_size} is smaller than resources.workers="
                              f"{self.workers}; every worker needs a row of the batch: raise batch_size or lower workers")
        return Trial(hash=trial_hash(cfg), config=cfg, overrides=overrides,
                     resources=self._resources_for(cfg),
                     label=trial_label(cfg, overrides, varying))

    def _point_error(self, err: ValidationError, point: str, overrides: dict, index: dict) -> str:
        lines = []
        for e in err.errors():
            key = e["loc"][0] if e["loc"] else None
            msg = e["msg"].removeprefix("Value error, ")
            if key is None:  # a combination of keys: name where each varying value comes from,
                # and where the fixed keys the message names (`d_model=100 ...`) are set
                spots = [self.where(self._origin[k] + ((index[k],) if k in index else ()))
                         for k in overrides if k in self._origin and k != "seed"]
                spots += [self.where(self._origin[k]) for k in self._origin
                          if k not in overrides and k != "seed" and f"{k}=" in msg]
                where = f"at {point}" + (f" ({', '.join(spots)})" if spots else "")
            else:
                path = self._origin.get(key, ("base", key))
                if key in index:
                    path = path + (index[key],)
                where = f"{self.where(path)} at {point}"
                if "input" in e:
                    msg += f" (got {brief(e['input'])})"
                if e["type"] == "int_from_float" and key in self._derived:
                    msg += "; wrap the expression in int(...) or round(...)"
            lines.append(f"{where}: {msg}")
        return "; ".join(lines)

    def _memory_problem(self, cfg: TrainConfig) -> str | None:
        """GPU trials against resources.gpu_memory_gb; CPU trials against this machine's RAM."""
        if self.resources["gpu"] == 0:  # every worker of a local run shares this machine's RAM
            ram = _ram_bytes()
            return memory_problem(cfg, ram and ram / self.workers, "RAM here (resources.gpu: 0)"
                                  + (f" shared by {self.workers} workers" if self.workers > 1 else ""), self.workers)
        return memory_problem(cfg, self.gpu_memory_gb * 2 ** 30, "resources.gpu_memory_gb", self.workers)

    def missing_corpora(self) -> list[str]:
        """'<where>: corpus file x.txt does not exist' for each corpus path that is not here
        (an error for local runs, a warning for `scalelab submit`: the cluster may have it)."""
        configs = [t.config for t in self._trials] or [TrainConfig.model_construct(**self.base)]
        seen, problems = set(), []
        for cfg in configs:
            for name, why in corpus_problems(cfg.corpus):
                if name not in seen:
                    seen.add(name)
                    problems.append((name, why))
        if not problems:
            return []
        where = self.where(self._origin.get("corpus", ("base", "corpus")))
        name, why = problems[0]
        more = f" (and {len(problems) - 1} more corpus entries like it)" if len(problems) > 1 else ""
        # One line however many entries are wrong: the first names the fix for all.
        relative = "" if os.path.isabs(os.path.expanduser(name)) else f"; relative to {brief(os.getcwd())}"
        return [f"{self.source}: {where}: corpus entry {brief(name)} {why}{more}{relative}"]

    def check_corpora(self) -> None:
        """Raise ConfigError when a corpus path is missing (local runs, validate, plan)."""
        missing = self.missing_corpora()
        if missing:
            raise ConfigError("\n".join(missing))

    def _resources_for(self, cfg: TrainConfig) -> dict[str, Any]:
        resources = {"cpu": self.resources["cpu"], "gpu": self._gpu_for(cfg)}
        if self.workers > 1:
            resources["workers"] = self.workers
        if self.placement:  # only with workers > 1 (spec_schema)
            resources["placement"] = self.placement
        return resources

    def _gpu_for(self, cfg: TrainConfig) -> float:
        gpu = self.resources["gpu"]
        if gpu != "auto":
            return gpu
        if self.workers > 1:
            return 1.0  # one rank per GPU (spec_schema)
        return gpu_fraction(estimate(cfg)["memory_bytes"], self.gpu_memory_gb)


@lru_cache(maxsize=1)
def _ram_bytes() -> int | None:
    return machine_memory_bytes()


def _parse_top_level(loaded: LoadedYaml) -> SweepFile:
    data = loaded.data
    if data is None:
        raise ConfigError(f"{loaded.source}: the file is empty; a sweep needs at least `name:` and "
                          "`base:` (see docs/sweeps.md)")
    if not isinstance(data, dict):
        raise ConfigError(f"{loaded.source}: expected a mapping of sweep keys at the top level "
                          f"(name, base, grid, ...), got {_type_name(data)}")
    problems = Problems(loaded)
    for key in data:
        if not isinstance(key, str):
            problems.add((), f"top-level key {brief(key)} is not text; allowed keys: {', '.join(ALLOWED_KEYS[()])}")
    problems.raise_if_any()
    try:
        return SweepFile.model_validate(data)
    except ValidationError as err:
        problems.add_validation_error(err, (), data, ALLOWED_KEYS)
    problems.raise_if_any()
    raise AssertionError("unreachable")


def _type_name(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


def _point_text(overrides: dict[str, Any]) -> str:
    return "point {" + ", ".join(f"{k}: {short_value(v)}" for k, v in overrides.items()) + "}"


__all__ = ["load_sweep", "load_sweep_text", "SweepSpec", "SearchSpec"]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a sweep's trials are built: 100,000 acyclic configs
    made it rescan the growing heap again and again (a quarter of validating such a sweep)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()

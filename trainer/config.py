"""TrainConfig: every knob of one training run, flat so sweeps and MLflow params can name it.

A config is validated on construction (pydantic): unknown keys, wrong types and impossible
combinations raise ConfigError with the key and what is allowed, never a bare traceback.
"""
from __future__ import annotations

import difflib
import math
import os
import stat
from dataclasses import replace
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, DataError, UserError, brief  # noqa: F401 - public here (docs/CONTRACTS.md)
from .yaml_lines import LoadedYaml, load_yaml_file, parse_yaml_value

# The matrices of the model by role, in the order the model holds them: every block has the
# attention and MLP matrices (the hidden ones, µP's "hidden weights").
ATTENTION_ROLES = ("attn_q", "attn_k", "attn_v", "attn_o")
MLP_ROLES = ("mlp_up", "mlp_gate", "mlp_down")
HIDDEN_ROLES = ATTENTION_ROLES + MLP_ROLES
MATRIX_ROLES = ("embedding", *HIDDEN_ROLES, "head")
MultiplierKind = Literal["none", "scalar", "row", "col", "vector"]

# How and where a run executes, not what it computes: these fields are left out of a run's
# identity (a trial's hash, a checkpoint's compatibility check). `device` and `compile` are
# here on purpose: the same trial run on a CPU or a GPU, compiled or not, is one trial (its
# precision follows the device, and the run records the device it used). `micro_batch_size`
# too: passes of fewer rows whose gradients add up give the same step as one pass of the whole
# batch (tests/test_data_parallel.py holds it to that). Every other field
# changes the trained model's numbers or what is measured of them, and is part of identity.
RUNTIME_FIELDS = frozenset({"device", "compile", "threads", "peak_flops", "cache_dir", "record_activations",
                            "micro_batch_size"})
# Bounds every value obeys: floats are finite (model_config), integers fit in this (a width of
# 1e30 is a typo, not a model), seeds fit numpy's and torch's seeding, text stays short.
MAX_INT = 2 ** 40
MAX_SEED = 2 ** 32 - 1
MAX_TEXT = 4096


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    # --- model (docs/science.md: decoder-only, pre-RMSNorm, RoPE, SwiGLU, untied head) ---
    d_model: int = Field(128, ge=8, description="width d")
    n_layers: int = Field(2, ge=1, description="depth L")
    head_dim: int = Field(32, ge=2, description="fixed head size; heads = d_model / head_dim")
    mlp_ratio: float = Field(4.0, gt=0, description="SwiGLU hidden size = mlp_ratio * d_model")
    vocab_size: int = Field(256, ge=2, description="byte-level tokens")
    seq_len: int = Field(128, ge=2)
    freeze_norms: bool = Field(False, description="RMSNorm weights frozen at 1")

    # --- parametrization (trainer/parametrization.py) ---
    scheme: Literal["sp", "mup"] = "sp"
    multipliers: MultiplierKind = Field(
        "none", description="learnable multipliers on every matrix (paper placement: "
        "embedding rows+cols, head none); 'vector' = rows and columns")
    multiplier_placement: Literal["paper", "minimal"] = Field(
        "paper", description="'minimal' = the symmetry-free placement of docs/science.md §3")
    multiplier_overrides: dict[str, MultiplierKind] = Field(
        default_factory=dict, description="per-role kind, e.g. {head: scalar, attn_k: none}")
    multiplier_init: Literal["one", "forward"] = Field(
        "one", description="init learnable multipliers at 1 or at the fixed forward multiplier")
    base_width: int = Field(128, ge=1, description="µP base width d_base; m = d_model / d_base")
    base_depth: int = Field(2, ge=1, description="depth-scaling base; depth multiplier = n_layers / base_depth")
    width_recipe: Literal["lr", "lr_wd", "multiplier"] = Field(
        "lr", description="docs/science.md §4 Table 1: scale hidden matrices through LR, LR and WD, or the forward multiplier")
    depth_scaling: Literal["none", "completep", "depth_mup"] = "none"
    init_std: float = Field(1.0, gt=0, description="σ: hidden init std = σ / sqrt(fan_in)")
    emb_init_std: float = Field(1.0, gt=0, description="embedding init std (width-independent)")
    head_init_std: float = Field(1.0, ge=0, description="head init std = this / sqrt(d_base) under µP "
                                 "(width-independent), / sqrt(d_model) under sp; 0 = zero init")
    alpha_emb: float = Field(1.0, gt=0, description="µP embedding forward multiplier")
    alpha_out: float = Field(1.0, gt=0, description="µP output multiplier: logits × α_out / m")
    alpha_attn: float = Field(1.0, gt=0, description="µP attention multiplier: q·k × α_attn / d_head")
    lr_mult_emb: float = Field(1.0, gt=0)
    lr_mult_hidden: float = Field(1.0, gt=0)
    lr_mult_head: float = Field(1.0, gt=0)
    lr_mult_vector: float = Field(1.0, gt=0, description="norm weights")
    lr_mult_multiplier: float = Field(1.0, gt=0, description="learnable multipliers")
    multiplier_lr_width_exponent: float = Field(
        0.0, description="multiplier LR × m^exponent (open question of docs/science.md §5; 0 = width-independent)")
    wd_mult_emb: float = Field(1.0, ge=0)
    wd_mult_hidden: float = Field(1.0, ge=0)
    wd_mult_head: float = Field(1.0, ge=0)
    wd_mult_vector: float = Field(0.0, ge=0)
    multiplier_wd: float = Field(2e-3, ge=0, description="absolute WD on learnable multipliers (paper: 2e-3)")

    # --- optimizer and schedule ---
    optimizer: Literal["adamw", "muon"] = Field("adamw", description="muon: hidden matrices on Muon, the rest on AdamW")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    wd_mode: Literal["decoupled", "independent"] = Field(
        "decoupled", description="decoupled: torch AdamW (decay ∝ lr·λ); independent: decay ∝ λ·schedule only")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    muon_momentum: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="global grad-norm clip (0 = off); multipliers excluded")
    schedule: Literal["wsd", "cosine", "constant"] = "wsd"
    warmup_steps: int = Field(20, ge=0)
    decay_frac: float = Field(0.2, ge=0, le=1, description="wsd: fraction of steps in the final linear decay")
    min_lr_ratio: float = Field(0.0, ge=0, le=1)

    # --- data ---
    corpus: str | list[str] = Field(
        "kjv", description="'kjv' (built-in King James text), text file(s)/directory, a .bin uint16 token "
        "file, or a .parquet file")
    parquet_column: str = "text"
    val_fraction: float = Field(0.05, gt=0, lt=0.5)
    batch_size: int = Field(16, ge=1, description="rows of one step (the global batch, however many workers)")
    micro_batch_size: int = Field(0, ge=0, description="gradient accumulation: rows per forward/backward pass on "
                                  "one worker (0 = all its rows at once); saves memory, same result")
    cache_dir: str | None = Field(None, description="prepared-token cache (default ~/.cache/scalelab)")

    # --- loop ---
    steps: int = Field(300, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    eval_interval: int = Field(50, ge=1)
    eval_batches: int = Field(4, ge=1)
    divergence_factor: float = Field(2.0, gt=1, description="diverged if train loss > factor × initial loss")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = leave as is)")
    peak_flops: float | None = Field(None, gt=0, description="device peak FLOP/s for MFU (auto on known GPUs)")
    record_activations: bool = Field(True, description="mean |activation| per block at eval points")

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info) -> Any:
        return check_plain_value(info.field_name, value)

    @model_validator(mode="after")
    def _check_combinations(self) -> "TrainConfig":
        if self.d_model % self.head_dim:
            raise ValueError(f"d_model={self.d_model} is not a multiple of head_dim={self.head_dim}; "
                             f"pick a width that is, e.g. {self.head_dim * max(1, round(self.d_model / self.head_dim))}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even (rotary embeddings rotate pairs)")
        bad = sorted(set(self.multiplier_overrides) - set(MATRIX_ROLES))
        if bad:
            raise ValueError(f"multiplier_overrides has unknown role(s) {bad}; roles are {list(MATRIX_ROLES)}")
        if self.warmup_steps >= self.steps and self.steps > 1:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be below steps={self.steps}")
        if self.width_recipe != "lr" and self.scheme == "sp":
            raise ValueError(f"width_recipe={self.width_recipe!r} only applies to scheme 'mup'; "
                             "set scheme: mup or leave width_recipe at 'lr'")
        return self

    # --- construction helpers -------------------------------------------------------------
    @classmethod
    def build(cls, values: dict[str, Any] | None = None, source: str = "config",
              loaded: LoadedYaml | None = None) -> "TrainConfig":
        """Validate a mapping; raise ConfigError naming `source` and each bad key (with its line
        when `loaded`, the file the values came from, has one)."""
        try:
            return cls(**(values or {}))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source, loaded)) from None
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_sources(cls, path: str | None = None, overrides: list[str] | None = None) -> "TrainConfig":
        """A YAML file of config keys, then key=value overrides (which replace the file's)."""
        loaded = load_yaml_mapping(path) if path else None
        given = parse_overrides(overrides or [])
        if loaded is not None:  # an overridden key's line no longer tells where its value is
            loaded = replace(loaded, lines={p: n for p, n in loaded.lines.items() if p[0] not in given})
        values = {**(loaded.data if loaded else {}), **given}
        return cls.build(values, source=path or "command line", loaded=loaded)

    def flat(self) -> dict[str, Any]:
        return self.model_dump()

    def identity(self) -> dict[str, Any]:
        """What defines this run's result: the experiment fields (not RUNTIME_FIELDS) whose value
        differs from the field's default. Leaving defaults out means a field added in a later
        version, at its default, does not change the identity of configs written before it
        existed; tests pin the defaults, since changing one would change what old hashes mean."""
        values = self.__dict__  # the validated field values: what model_dump() copies, 60x faster (a sweep hashes every trial)
        return {key: values[key] for key, default in _experiment_defaults(type(self)).items() if values[key] != default}

    @property
    def n_heads(self) -> int:
        return self.d_model // self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.d_model))

    @property
    def width_mult(self) -> float:
        return self.d_model / self.base_width

    @property
    def depth_mult(self) -> float:
        return self.n_layers / self.base_depth

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def matrix_shape(self, role: str) -> tuple[int, int]:
        """(d_in, d_out) of the matrices of `role` (one of MATRIX_ROLES)."""
        d, h = self.d_model, self.mlp_hidden
        shapes = {"embedding": (self.vocab_size, d), **dict.fromkeys(ATTENTION_ROLES, (d, d)),
                  "mlp_up": (d, h), "mlp_gate": (d, h), "mlp_down": (h, d), "head": (d, self.vocab_size)}
        return shapes[role]


@cache
def _experiment_defaults(config_class: type) -> dict[str, Any]:
    """{field: default} of the experiment fields, computed once: pydantic's get_default inspects
    signatures on every call, which was half the time of validating a 100,000-trial sweep. The
    defaults are only compared, never handed out, so sharing a factory's one result is safe."""
    return {key: field.get_default(call_default_factory=True) for key, field in config_class.model_fields.items()
            if key not in RUNTIME_FIELDS}


BUILTIN_CORPORA = ("kjv",)


# Folders that hold the system, not text: a corpus there is a slip (a walk of "/" meets
# /proc and stops on its first unreadable entry).
SYSTEM_FOLDERS = ("/", "/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/usr", "/bin", "/sbin", "/lib", "/var")


def corpus_problem(name: str) -> str | None:
    """Why a corpus entry cannot be read as text, or None: the one rule for sweeps (before a
    run) and for trainer/data.py (when it reads). Only looks; reads nothing."""
    if name in BUILTIN_CORPORA:
        return None
    path = os.path.expanduser(name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:
        return f"cannot be looked at ({err.strerror or err})"
    if stat.S_ISDIR(st.st_mode):
        real = os.path.realpath(path)
        if real in SYSTEM_FOLDERS or any(real.startswith(f + "/") for f in ("/proc", "/sys", "/dev")):
            return "is a system folder, not a folder of text files"
        return None
    if not stat.S_ISREG(st.st_mode):
        return "is a device, pipe or socket, not a file (give a text, .bin or .parquet file)"
    return None


def corpus_problems(corpus: str | list[str]) -> list[tuple[str, str]]:
    """(entry, why) for each corpus entry that cannot be read (see corpus_problem)."""
    names = [corpus] if isinstance(corpus, str) else list(corpus)
    return [(n, why) for n in names if (why := corpus_problem(n))]


_NUMBER_TYPES = (int, float, float | None)


@cache
def _annotations() -> dict[str, Any]:
    """TrainConfig's field types, read once: pydantic's model_fields is a descriptor that builds
    its answer on every access, and a sweep checks every value of every trial."""
    return {key: field.annotation for key, field in TrainConfig.model_fields.items()}


def check_plain_value(key: str, value: Any) -> Any:
    """The bounds of every field beyond its type (run before pydantic's own checks): YAML's
    `true` is not the number 1, floats are finite, integers and text have an upper size.
    Raises ValueError; sweep files check each value with this too (orchestrator/spec.py)."""
    annotation = _annotations()[key]
    if annotation in _NUMBER_TYPES:
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean (true/false)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("expected a finite number")
        if annotation is int and isinstance(value, (int, float)) and not abs(value) <= MAX_INT:
            raise ValueError(f"expected an integer of at most {MAX_INT:.3g}")
    elif isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError(f"text longer than {MAX_TEXT} characters")
    return value


def format_validation_error(err: ValidationError, source: str, loaded: LoadedYaml | None = None) -> str:
    lines = [f"{source}: invalid training config ({err.error_count()} problem(s)):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        line = loaded.line(e["loc"]) if loaded is not None and e["loc"] else None
        key += f" (line {line})" if line else ""
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), TrainConfig.model_fields, n=1)
            msg = "unknown key" + (f"; did you mean '{close[0]}'?" if close else "; see `scalelab train --help-config`")
        elif e["loc"] and "input" in e and e["type"] != "missing":  # top-level input is the whole mapping
            msg += f" (got {brief(e['input'])})"
        lines.append(f"  - {key}: {msg}")
    return "\n".join(lines)


def load_yaml_mapping(path: str) -> LoadedYaml:
    """The file's keys and values (`data`, a dict) with the line of each key."""
    loaded = load_yaml_file(path, what="config file")
    if loaded.data is None:
        loaded.data = {}
    if not isinstance(loaded.data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, "
                          f"got {type(loaded.data).__name__}")
    return loaded


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values parsed as YAML scalars/lists (lr=1e-3, corpus=[a.txt,b.txt])."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {brief(item)} is not of the form key=value (e.g. lr=1e-3)")
        out[key.strip()] = parse_yaml_value(raw) if raw != "" else ""
    return out

"""Inputs built to hurt: depths that would take minutes or all memory to enumerate, integers too
long to print, YAML tags that crash PyYAML's constructors. Each gives a number fast or one clean
line, never a traceback."""
from __future__ import annotations

import itertools
import time

import pytest

from trainer.config import HIDDEN_ROLES, TrainConfig
from trainer.estimate import _multiplier_count, estimate, flops_per_token
from trainer.parametrization import multiplier_placement


# --- estimate: closed form in depth ------------------------------------------------------------

def enumerated(cfg: TrainConfig) -> dict:
    """The counts by walking every matrix of the model one by one (as estimate once did)."""
    kinds = multiplier_placement(cfg.multipliers, cfg.multiplier_placement, cfg.multiplier_overrides)
    shapes = [(role, *cfg.matrix_shape(role)) for role in ["embedding", *HIDDEN_ROLES * cfg.n_layers, "head"]]
    matmul = sum(i * o for role, i, o in shapes if role != "embedding")
    return {"weights": sum(i * o for _, i, o in shapes),
            "multipliers": sum(_multiplier_count(kinds[role], i, o) for role, i, o in shapes),
            "flops_per_token": 6.0 * matmul + 6.0 * cfg.n_layers * cfg.seq_len * cfg.d_model}


@pytest.mark.parametrize("d_model,n_layers,mlp_ratio,vocab", list(itertools.product([8, 96], [1, 3, 12], [1.0, 8 / 3],
                                                                                  [2, 50257])))
@pytest.mark.parametrize("multipliers,placement,overrides", [
    ("none", "paper", {}), ("scalar", "minimal", {}), ("vector", "paper", {}), ("row", "minimal", {}),
    ("col", "paper", {"head": "scalar", "attn_k": "none", "mlp_down": "vector"})])
def test_estimate_equals_a_walk_over_every_matrix(d_model, n_layers, mlp_ratio, vocab, multipliers, placement,
                                                   overrides):
    cfg = TrainConfig(d_model=d_model, head_dim=4, n_layers=n_layers, mlp_ratio=mlp_ratio, vocab_size=vocab,
                      multipliers=multipliers, multiplier_placement=placement, multiplier_overrides=overrides)
    walk, got = enumerated(cfg), estimate(cfg)
    norms = (2 * n_layers + 1) * d_model
    assert got["n_params"] == walk["weights"] + walk["multipliers"] + norms
    assert flops_per_token(cfg) == walk["flops_per_token"]
    assert got["flops"] == walk["flops_per_token"] * cfg.steps * cfg.tokens_per_step


@pytest.mark.parametrize("n_layers", [100_000, 1_000_000_000, 2 ** 40])
def test_estimate_costs_the_same_at_any_depth(n_layers):
    cfg = TrainConfig(d_model=1_048_576, head_dim=64, n_layers=n_layers)
    start = time.perf_counter()
    got = estimate(cfg)
    assert time.perf_counter() - start < 1.0  # a walk over 10^9 layers takes minutes or all memory
    assert got["n_params"] > n_layers * 12 * 1_048_576 ** 2 and got["memory_bytes"] > 16 * got["n_params"]


# --- brief: quoting any value in a message ------------------------------------------------------

class FailingRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


class HugeRepr:
    def __repr__(self):
        return "x" * 10 ** 6


class NoClass:
    @property
    def __class__(self):
        raise RuntimeError("no class")


class Text(str):
    pass


HUGE = 16 ** 20_000  # `steps: 0x` + 20,000 hex digits: Python refuses str() past 4,300 digits


ODD_VALUES = [
    HUGE, -HUGE, [HUGE, {HUGE: (HUGE,)}], 10 ** 5000, "s" * 10 ** 6, b"b" * 10 ** 6, bytearray(10 ** 5),
    Text("t" * 10 ** 6), FailingRepr, HugeRepr, NoClass, {"k" * 1000: ["v" * 1000] * 100},
    [[[[[[1]]]]]], float("nan"), None, True, 12, "short"]


@pytest.mark.parametrize("index", range(len(ODD_VALUES)))  # by index: pytest cannot name a NoClass
def test_brief_quotes_any_value_briefly_without_failing(index):
    from trainer.errors import MAX_BRIEF, brief

    value = ODD_VALUES[index]
    value = value() if isinstance(value, type) else value
    start = time.perf_counter()
    text = brief(value)
    assert time.perf_counter() - start < 0.5
    assert isinstance(text, str) and 0 < len(text) <= MAX_BRIEF


def test_brief_says_what_it_cannot_print():
    from trainer.errors import brief

    assert brief(HUGE) == "<an integer of about 24,083 digits>"
    assert brief(12) == "12" and brief("short") == "'short'" and brief([1, "a"]) == "[1, 'a']"
    assert brief(10 ** 60).startswith("1000") and "..." in brief(10 ** 60)  # still quoted, shortened
    assert brief("s" * 1000).startswith("'sss") and len(brief("s" * 1000)) < 100


def test_a_huge_integer_in_a_config_is_one_clean_line():
    from trainer.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError) as err:
        TrainConfig.build({"steps": HUGE}, source="big.yaml")
    assert "steps" in str(err.value) and "24,083 digits" in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("text, where", [
    ("base: {{steps: {n}}}", "line 2, column 15"), ("seeds: {n}", "line 2"), ("retries: {n}", "line 2"),
    ("search: {{num_samples: 2, space: {{lr: {{uniform: [0, {n}]}}}}}}", "line 2"),
    ("search: {{num_samples: {n}, space: {{lr: {{uniform: [0, 1]}}}}}}", "line 2"), ("base:\n  ? {n}\n  : 1", "line 3"),
    ("grid: {{d_model: [-{n}]}}", "line 2")])
@pytest.mark.parametrize("n", [f"0x{'f' * 20_000}", "9" * 5000, "1" * 80])
def test_integers_no_file_means_are_refused_where_they_are_written(text, where, n):
    """Past MAX_INT_BITS: before, a seeds count past 4300 digits was quoted with Python's advice to
    raise its limit, a search bound raised OverflowError and a retry count was taken as is."""
    from orchestrator.spec import load_sweep_text
    from trainer.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_sweep_text("name: x\n" + text.format(n=n) + "\n", source="big.yaml")
    message = str(err.value)
    assert message.startswith(f"big.yaml: not valid YAML at {where}") and "at most 256 bits" in message
    assert len(message) < 200


def test_large_but_readable_integers_are_still_judged_by_their_key():
    from orchestrator.spec import load_sweep_text
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match=r"base.steps \(line 2\): expected an integer of at most"):
        load_sweep_text("name: x\nbase: {steps: 99999999999999999999}\n", source="big.yaml")


# --- YAML tags on values they do not fit ---------------------------------------------------------

TAGS = ["!!timestamp", "!!bool", "!!int", "!!float", "!!binary", "!!set", "!!omap", "!!pairs", "!!str", "!!null",
        "!!map", "!!seq", "!!merge", "!!value", "!<tag:yaml.org,2002:int>", "!local",
        "!!python/object:os.system", "!!python/object/apply:os.system", "!!python/name:os.system",
        "!!python/tuple", "!!python/bytes"]
SCALARS = ["99", "-1", "maybe", "yes", "1.5", "1e-3", "0x1f", "0b12", "0o7", "1_000", "12:30", ".inf", ".nan", "~",
           "null", "''", "'x'", '"2001-12-14"', "2001-12-14", "2001-13-45", "2001-12-14t21:59:43.10-05:00", "AAA",
           "abc", "-", "=", "<<", "", "[1, 2]", "{a: 1}", "[[a, b]]", "[{a: 1}]", "{a, b}"]


@pytest.mark.parametrize("tag", TAGS)
def test_a_tag_on_any_value_loads_or_is_one_clean_line(tag):
    from trainer.config import ConfigError
    from trainer.yaml_lines import load_yaml_text

    for value in SCALARS:
        for text in (f"description: {tag} {value}\n", f"{tag} {value}\n", f"a: [{tag} {value}]\n",
                     f"? {tag} {value}\n: 1\n"):
            try:
                load_yaml_text(text, source="t.yaml")
            except ConfigError as err:
                assert str(err).startswith("t.yaml: ") and "\n" not in str(err), text


@pytest.mark.parametrize("text, message", [
    ("description: !!timestamp 99\n", "line 1, column 14: !!timestamp '99': '99' is not a date or time"),
    ("description: !!bool maybe\n", "!!bool 'maybe': 'maybe' is not a boolean"),
    ("x: !!int ''\n", "'' is not an integer"), ("x: !!float abc\n", "'abc' is not a number"),
    ("x: 2001-13-45\n", "'2001-13-45' is not a date or time (2024-01-31, 2024-01-31T12:00:00Z); quote it"),
    ("x: !!binary A\n", "base64"), ("x: !!set 3\n", "expected a mapping node"),
    ("x: !!python/object/apply:os.system [ls]\n", "could not determine a constructor"),
])
def test_a_tag_that_does_not_fit_says_where_and_what(text, message):
    from trainer.config import ConfigError
    from trainer.yaml_lines import load_yaml_text

    with pytest.raises(ConfigError, match="^t.yaml: not valid YAML at line 1, column") as err:
        load_yaml_text(text, source="t.yaml")
    assert message in str(err.value)


def test_tags_that_fit_still_load():
    import datetime

    from trainer.yaml_lines import load_yaml_text

    text = ("a: !!str 1\nb: !!int 0x1f\nc: !!float 1\nd: !!bool yes\ne: !!timestamp 2001-12-14\n"
            "f: !!binary AAAA\ng: !!set {x, y}\nh: !!omap [x: 1]\ni: !!pairs [x: 1]\nj: !!null ''\n")
    assert load_yaml_text(text).data == {"a": "1", "b": 31, "c": 1.0, "d": True, "e": datetime.date(2001, 12, 14),
                                         "f": b"\0\0\0", "g": {"x", "y"}, "h": [("x", 1)], "i": [("x", 1)],
                                         "j": None}


@pytest.mark.parametrize("text", ["name: x\ndescription: !!timestamp 99\n",
                                  "name: x\nbase: {freeze_norms: !!bool maybe}\n",
                                  f"name: x\nbase: {{steps: 0x{'f' * 20_000}}}\n"])
def test_the_cli_answers_a_hostile_file_with_one_line(tmp_path, text):
    import os
    import subprocess
    import sys

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=root, env=env, timeout=120)
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, out
    assert "Traceback" not in out and len(out.splitlines()) == 1 and str(path) in out


def test_the_cached_memory_estimate_equals_the_estimate():
    """memory_bytes caches by MEMORY_FIELDS; configs that differ in every other field it could
    miss (steps, lr, seed, head_dim, ...) must still get estimate's own number."""
    from trainer.estimate import memory_bytes

    configs = [TrainConfig(d_model=d, head_dim=8, n_layers=n, steps=s, lr=lr, seed=seed, multipliers=m, batch_size=b)
               for d, n, s, lr, seed, m, b in itertools.product([16, 32], [1, 3], [30, 99], [1e-3, 1e-2], [0, 1],
                                                                ["none", "vector"], [2, 8])]
    assert all(memory_bytes(c) == estimate(c)["memory_bytes"] for c in configs)

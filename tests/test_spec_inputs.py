"""Sloppy or hostile sweep files and training values: bounded, clear, never a traceback
(issue 9). Each case names the key and answers quickly."""
from __future__ import annotations

import time

import pytest

from orchestrator.locations import safe_component, trials_root
from orchestrator.spec import MAX_TRIALS, load_sweep_text
from trainer.config import ConfigError, TrainConfig
from trainer.yaml_lines import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_yaml_text, parse_yaml_value

SOURCE = "in.yaml"


def error(text: str, within: float = 2.0) -> str:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_sweep_text(text, source=SOURCE)
    assert time.perf_counter() - start < within, "took too long"
    message = str(err.value)
    assert message.startswith(SOURCE)
    assert len(message) < 4000, "messages stay bounded"
    return message


def laughs(key_line: str, levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    return "\n".join(lines) + "\n" + key_line.replace("LAST", f"*a{levels - 1}") + "\n"


@pytest.mark.parametrize("key_line", ["seeds: LAST", "resources: {gpu: LAST}", "grid: {lr: LAST}"])
def test_alias_bombs_are_refused_at_once(key_line):
    msg = error("name: x\n" + laughs(key_line), within=1.0)
    assert f"more than {MAX_NODES}" in msg and "aliases" in msg


def test_aliases_of_small_values_still_work():
    spec = load_sweep_text("name: x\nbase: &b {lr: 1.0e-3}\ngrid:\n  d_model: &w [64, 128]\n", source=SOURCE)
    assert len(spec.trials()) == 2


def test_deep_nesting_and_size_limits():
    assert "nested too deeply" in error("name: x\nbase: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    assert "larger than" in error("name: x\n#" + "x" * MAX_FILE_BYTES + "\n")


def test_many_unknown_keys_are_linear_and_listed_briefly():
    text = "name: x\nbase:\n" + "".join(f"  k{i}: 1\n" for i in range(15000))
    msg = error(text, within=3.0)
    assert "15000 problems" in msg and "... and" in msg


def test_trial_count_before_expansion():
    values = ", ".join(str(i + 10) for i in range(1000))
    msg = error(f"name: x\ngrid:\n  steps: [{values}]\n  eval_batches: [{values}]\n", within=1.0)
    assert f"limit of {MAX_TRIALS}" in msg


@pytest.mark.parametrize("text, key, fragment", [
    ("resources: {gpu: .inf}", "resources.gpu", "from 0 to 64"),
    ("resources: {cpu: .inf}", "resources.cpu", "finite"),
    ("base: {lr: .inf}", "base.lr", "finite"),
    ("base: {lr: 1e400}", "base.lr", "finite"),
    ("base: {lr: Infinity}", "base.lr", "finite"),
    ("base: {lr: .nan}", "base.lr", "finite"),
    ("grid: {lr: [1.0e-3, .inf]}", "grid.lr[1]", "finite"),
    ("base: {steps: true}", "base.steps", "not a boolean"),
    ("base: {steps: '12:30'}", "base.steps", "integer"),
    ("base: {steps: 12:30}", "base.steps", "integer"),
    ("base: {d_model: 1e30}", "base.d_model", "at most"),
    ("seeds: [-1]", "seeds", "from 0"),
    ("base: {seed: -1}", "base.seed", "greater than or equal to 0"),
    ("derived: {lr: 'lr * 1e300 * 1e300'}", "derived.lr", "finite"),
    ("derived: {warmup_steps: '" + " + ".join(["1"] * 200) + "'}", "derived.warmup_steps", "nests more than"),
    ("derived: {warmup_steps: '" + "+".join(["1"] * 1000) + "'}", "derived.warmup_steps", "longer than"),
    ("search: {space: {lr: {uniform: [0, .inf]}}}", "search.space.lr", "finite"),
])
def test_bad_values_name_their_key(text, key, fragment):
    msg = error(f"name: x\nbase: {{}}\n{text}\n".replace("base: {}\nbase:", "base:"))
    assert key in msg and fragment in msg, msg


def test_names_are_bounded_and_safe():
    assert "at most 100 characters" in error("name: " + "a" * 300 + "\n")
    assert "not a usable sweep name" in error("name: ../x\n")
    assert "experiment (line 1): String should have at most 200" in error("experiment: " + "e" * 500 + "\nname: x\n")


@pytest.mark.parametrize("name", ["../../../x", "/abs/path", "..", ".", "", "a/b", "x" * 300, "é\x00"])
def test_safe_component_stays_inside(tmp_path, name):
    part = safe_component(name)
    assert part and "/" not in part and "\x00" not in part and part not in (".", "..")
    assert not part.startswith(".") and len(part) <= 100
    root = tmp_path / "storage"
    assert (root / "trials").resolve() in (root / "trials" / part).resolve().parents
    assert trials_root(str(root), name) == str(root / "trials" / part)


def test_safe_component_keeps_safe_names_and_separates_changed_ones():
    assert safe_component("quickstart-1.2_x") == "quickstart-1.2_x"
    assert safe_component("a/b") != safe_component("a_b") != safe_component("a?b")


def test_path_like_experiment_is_accepted_but_kept_inside_storage(tmp_path):
    spec = load_sweep_text("name: x\nexperiment: ../../../x\n", source=SOURCE)
    root = trials_root(str(tmp_path), spec.experiment)
    assert root.startswith(str(tmp_path / "trials") + "/")


def test_memory_beyond_the_device_is_refused():
    msg = error("name: x\nbase: {d_model: 16384, n_layers: 48, batch_size: 64, seq_len: 1024}\n"
                "resources: {gpu: 1, gpu_memory_gb: 80}\n")
    assert "needs about" in msg and "gpu_memory_gb" in msg
    msg = error("name: x\nbase: {batch_size: 100000000}\n")  # a CPU trial: this machine's RAM
    assert "needs about" in msg and "RAM" in msg


def test_missing_corpus(tmp_path):
    spec = load_sweep_text(f"name: x\nbase: {{corpus: {tmp_path / 'nope.txt'}}}\n", source=SOURCE)
    assert "does not exist" in spec.missing_corpora()[0] and "base.corpus" in spec.missing_corpora()[0]
    with pytest.raises(ConfigError):
        spec.check_corpora()
    ok = tmp_path / "yes.txt"
    ok.write_text("hello")
    assert load_sweep_text(f"name: x\ngrid: {{corpus: [kjv, {ok}]}}\n", source=SOURCE).missing_corpora() == []


def test_yaml_numbers():
    assert parse_yaml_value("12:30") == "12:30"       # YAML 1.1 base 60 would give 750
    assert parse_yaml_value("1e-3") == 0.001
    assert parse_yaml_value("0x10") == 16
    assert load_yaml_text("a: 190:20:30.15\n").data == {"a": "190:20:30.15"}


@pytest.mark.parametrize("values, fragment", [
    ({"lr": float("inf")}, "finite"), ({"lr": "inf"}, "finite"), ({"steps": True}, "boolean"),
    ({"seed": -1}, "seed"), ({"d_model": 10 ** 30}, "at most"), ({"peak_flops": float("nan")}, "finite"),
])
def test_train_config_refuses(values, fragment):
    with pytest.raises(ConfigError) as err:
        TrainConfig.build(values)
    assert fragment in str(err.value)


def test_messages_quote_long_keys_and_values_briefly():
    msg = error("name: x\nbase:\n  ? " + "k" * 100_000 + "\n  : 1\n")
    assert "kkk..." in msg and len(msg) < 1000
    values = ", ".join(f"/no/such/file{i}.txt" for i in range(3000))
    msg = error(f"name: x\nbase: {{corpus: [{values}], d_model: 100}}\n")
    assert len(msg) < 2000

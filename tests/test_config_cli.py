"""Bad configs give clear errors; `scalelab train` works from YAML and key=value overrides."""
import json

import pytest

from orchestrator.cli import main
from trainer.config import ConfigError, TrainConfig


@pytest.mark.parametrize("values,message", [
    ({"n_layer": 4}, "n_layer: unknown key; did you mean 'n_layers'"),
    ({"lr": "fast"}, "lr: Input should be a valid number"),
    ({"d_model": 100}, "not a multiple of head_dim=32"),
    ({"scheme": "ntk"}, "scheme: Input should be 'sp' or 'mup'"),
    ({"multiplier_overrides": {"bias": "scalar"}}, "unknown role(s) ['bias']"),
    ({"width_recipe": "lr_wd"}, "only applies to scheme 'mup'"),
    ({"lr": -1}, "lr: Input should be greater than 0"),
])
def test_bad_configs_name_the_key(values, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig.build(values, source="my.yaml")
    assert str(err.value).startswith("my.yaml: invalid training config")
    assert message in str(err.value)


def test_train_cli_bad_input_exits_2_without_traceback(tmp_path, capsys):
    assert main(["train", "dmodel=64"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'd_model'" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1\n")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "corpus=" + str(tmp_path / "none.txt"), "steps=2", "warmup_steps=0"]) == 2
    assert "none.txt does not exist" in capsys.readouterr().err


def test_train_config_file_errors_name_file_key_and_line(tmp_path, capsys):
    """`scalelab train my.yaml` reads the file with the sweep files' loader: each bad key is
    named with its line; a key given again on the command line is the command line's."""
    bad = tmp_path / "my.yaml"
    bad.write_text("d_model: 64\nn_layer: 4\nlr: fast\nmultiplier_overrides:\n  bias: scalar\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: invalid training config" in err and "Traceback" not in err
    assert "n_layer (line 2): unknown key; did you mean 'n_layers'" in err
    assert "lr (line 3): Input should be a valid number" in err
    assert main(["train", str(bad), "lr=slow", "n_layers=2"]) == 2
    err = capsys.readouterr().err
    assert "  - lr: Input should be a valid number" in err and "lr (line" not in err
    assert "n_layer (line 2)" in err
    twice = tmp_path / "twice.yaml"
    twice.write_text("lr: 1e-3\nsteps: 5\nlr: 2e-3\n")
    assert main(["train", str(twice)]) == 2
    assert "lr (line 3): duplicate key; it is already set on line 1" in capsys.readouterr().err
    number = tmp_path / "number.yaml"
    number.write_text("lr: 1e-3\nseed: 1e3\n")
    cfg = TrainConfig.from_sources(str(number), ["warmup_steps=1e1"])
    assert (cfg.lr, cfg.seed, cfg.warmup_steps) == (1e-3, 1000, 10)


def test_train_cli_yaml_overrides_and_json(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("d_model: 32\nhead_dim: 16\nn_layers: 1\nseq_len: 32\nbatch_size: 4\nsteps: 10\n"
                   "eval_interval: 5\nwarmup_steps: 2\nscheme: mup\n")
    out = tmp_path / "m.json"
    assert main(["train", str(cfg), "multipliers=scalar", "lr=1e-2", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["lr"] == 0.01 and data["config"]["multipliers"] == "scalar"
    assert data["status"] == "finished" and data["metrics"]["step"] == 10
    assert {r["kind"] for r in data["multipliers"]} == {"scalar"}
    assert "attn_q.0" in capsys.readouterr().out  # the final multiplier table is printed


def test_coord_check_cli_writes_plot_and_data(tmp_path, capsys):
    out = tmp_path / "cc"
    assert main(["coord-check", "--widths", "32,64", "--steps", "2", "--seeds", "1", "--out", str(out),
                 "n_layers=1"]) == 0
    assert (out / "coord_check.png").stat().st_size > 10_000 and (out / "coord_check.csv").exists()
    assert "sp" in capsys.readouterr().out

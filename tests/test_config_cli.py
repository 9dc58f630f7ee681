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

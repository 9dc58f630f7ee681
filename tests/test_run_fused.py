"""Fused packs through the whole path: sweep `fuse` → packs → one Ray trial per pack → one
MLflow run, hash, outcome, journal and checkpoint directory per member. The same sweep run
unfused gives the same numbers; a pack that crashed resumes, training only what had not ended."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import journal, trials_by_hash
from orchestrator.fuse import parse_fuse_flag
from orchestrator.packing import make_packs, pack_summary
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.spec import load_sweep, load_sweep_text
from orchestrator.faults import FAULT_ENV
from trainer.config import UserError

pytestmark = pytest.mark.timeout(600)

PACKED = {"base": {"scheme": "mup", "multipliers": "scalar"}, "grid": {"lr": [1e-3, 3e-3, 1.0]}, "seeds": 2,
          "concurrency": 2}


def history(uri: str, run, key: str) -> list[tuple[int, float]]:
    return sorted((h.step, h.value) for h in MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, key))


def run(path: Path, uri: str, storage: Path, fuse=None) -> tuple:
    out = io.StringIO()
    summary = run_sweep(load_sweep(str(path)), RunOptions(tracking_uri=uri, storage=str(storage), out=out, fuse=fuse))
    return summary, out.getvalue()


def test_fuse_key_and_flag_are_checked():
    spec = load_sweep_text("name: s\nfuse: 4\nbase: {steps: 100}\ngrid: {lr: [0.1, 0.2]}\n")
    assert spec.fuse == 4 and load_sweep_text("name: s\nbase: {steps: 100}\n").fuse == "off"
    assert load_sweep_text("name: s\nfuse: off\nbase: {steps: 100}\n").fuse == "off"   # YAML's off is false
    for bad in ("true", "0", "65", "2.5", "fast"):
        with pytest.raises(UserError, match=r"fuse \(line 2\).*'auto', 'off' or a pack size"):
            load_sweep_text(f"name: s\nfuse: {bad}\nbase: {{steps: 100}}\n")
    assert parse_fuse_flag("8") == 8 and parse_fuse_flag("off") == "off" and parse_fuse_flag(None) is None
    with pytest.raises(UserError, match="--fuse"):
        parse_fuse_flag("-3")


def test_packs_group_by_shape_keep_muon_alone_and_auto_leaves_cpu_trials_alone():
    text = ("name: s\nfuse: 3\nbase: {steps: 100, d_model: 64, head_dim: 16}\n"
            "grid: {lr: [0.1, 0.2, 0.3, 0.4], n_layers: [1, 2]}\n")
    trials = load_sweep_text(text).trials()
    packs = make_packs(trials, 3, gpu_auto=False, gpu_memory_gb=80)
    assert sorted(len(p.members) for p in packs) == [1, 1, 3, 3]
    assert sum(len(p.members) for p in packs) == len(trials)
    for p in packs:
        assert len({t.config.n_layers for t in p.members}) == 1          # one shape per pack
    assert all(not p.fused for p in make_packs(trials, "auto", gpu_auto=False, gpu_memory_gb=80))
    assert all(not p.fused for p in make_packs(trials, "off", gpu_auto=False, gpu_memory_gb=80))
    assert "6 trial(s) in 2 fused pack(s) (K = 3, 3), 2 alone" in pack_summary(packs, 3)
    muon = load_sweep_text("name: m\nfuse: 4\nbase: {steps: 100, optimizer: muon}\ngrid: {lr: [0.1, 0.2]}\n")
    packs = make_packs(muon.trials(), 4, gpu_auto=False, gpu_memory_gb=80)
    assert [len(p.members) for p in packs] == [1, 1] and "optimizer=muon cannot be fused" in packs[0].note


def test_longest_trials_and_packs_start_first():
    """A long trial or pack started last runs on alone while the other workers idle (the fused
    quickstart's tail): Tune gets them longest first, ties in sweep order."""
    text = ("name: s\nbase: {steps: 100, head_dim: 16}\n"
            "grid: {d_model: [32, 128, 64], lr: [0.1, 0.2]}\n")
    trials = load_sweep_text(text).trials()
    alone = make_packs(trials, "off", gpu_auto=False, gpu_memory_gb=80)
    assert [p.members[0].config.d_model for p in alone] == [128, 128, 64, 64, 32, 32]
    assert [p.members[0].config.lr for p in alone[:2]] == [0.1, 0.2]            # a tie keeps sweep order
    packs = make_packs(trials, 2, gpu_auto=False, gpu_memory_gb=80)
    assert [(p.members[0].config.d_model, len(p.members)) for p in packs] == [(128, 2), (64, 2), (32, 2)]


def test_gpu_auto_sizes_packs_from_estimated_memory():
    text = ("name: g\nresources: {gpu: auto, gpu_memory_gb: 1}\nbase: {steps: 100, d_model: 256, n_layers: 2, "
            "batch_size: 16}\ngrid: {lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}\n")
    spec = load_sweep_text(text)
    from trainer.estimate import estimate

    per = estimate(spec.trials()[0].config)["memory_bytes"]
    fit = int(0.9 * 2 ** 30 // per)
    assert 1 < fit < 8, fit  # the test needs a split
    packs = make_packs(spec.trials(), "auto", gpu_auto=True, gpu_memory_gb=1)
    assert max(len(p.members) for p in packs) == fit
    assert all(p.memory_bytes <= 0.9 * 2 ** 30 for p in packs)
    assert all(p.resources["gpu"] <= 1.0 for p in packs)


def test_a_fused_sweep_matches_the_unfused_one_member_by_member(ray_local, shared_tracking_uri, tmp_path,
                                                                 tiny_sweep):
    fused = tiny_sweep("fused", fuse=4, **PACKED)
    alone = tiny_sweep("alone", fuse="off", **PACKED)
    summary, out = run(fused, shared_tracking_uri, tmp_path / "store")
    assert "6 trial(s) in 2 fused pack(s) (K = 4, 2), 0 alone" in out
    assert summary.count("finished") == 4 and summary.count("diverged") == 2 and summary.count("failed") == 0
    run(alone, shared_tracking_uri, tmp_path / "store-alone")
    packed, single = trials_by_hash(shared_tracking_uri, "fused"), trials_by_hash(shared_tracking_uri, "alone")
    assert set(packed) == set(single) and len(packed) == 6
    for trial_hash, runs in packed.items():
        assert len(runs) == 1  # one run per member
        mine, ref = runs[0], single[trial_hash][0]
        assert mine.data.tags["scalelab.outcome"] == ref.data.tags["scalelab.outcome"]
        for key in ("train_loss", "val_loss"):
            got, want = history(shared_tracking_uri, mine, key), history(shared_tracking_uri, ref, key)
            assert [s for s, _ in got] == [s for s, _ in want]
            assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5, nan_ok=True)
        # each member keeps its own journal and checkpoint directory, as a lone trial does
        entries = journal(tmp_path / "store", "fused", trial_hash)
        assert entries[-1]["metrics"]["final"] and all(e["hash"] == trial_hash for e in entries)
        if mine.data.tags["scalelab.outcome"] == "finished":
            assert [p.name for p in (tmp_path / "store" / "trials" / "fused" / trial_hash / "checkpoints").iterdir()] \
                == ["step_00000020"]
    assert not [p for p in (tmp_path / "store" / "trials" / "fused").iterdir() if p.name.startswith("pack-")]
    # finished members are done: a rerun (fused or not) runs nothing and adds no run
    again, _ = run(fused, shared_tracking_uri, tmp_path / "store")
    assert again.ran == 0 and sum(map(len, trials_by_hash(shared_tracking_uri, "fused").values())) == 6


def test_a_crashed_pack_resumes_and_trains_only_the_members_that_had_not_ended(
        ray_local, shared_tracking_uri, tmp_path, tiny_sweep, monkeypatch):
    path = tiny_sweep("fused-crash", fuse=3, base={"scheme": "mup", "multipliers": "scalar"},
                      grid={"lr": [1.0, 1e-3, 3e-3]}, retries=1)
    spec = load_sweep(str(path))
    (pack,) = make_packs(spec.trials(), 3, gpu_auto=False, gpu_memory_gb=80)
    by_lr = {t.config.lr: t.hash for t in pack.members}
    last = pack.members[-1].hash
    assert last != by_lr[1.0], "the crash must come after the other members reported"
    monkeypatch.setenv(FAULT_ENV, f"{last[:10]}:10")
    summary, out = run(path, shared_tracking_uri, tmp_path / "store")
    assert summary.count("finished") == 2 and summary.count("diverged") == 1, out
    assert f"retrying {pack.label}" in out and f"resumed {pack.label} from step 10" in out
    assert out.count(f"diverged {pack.members[0].label}") == 1  # its replay is not news
    runs = {h: rs for h, rs in trials_by_hash(shared_tracking_uri, "fused-crash").items()}
    assert all(len(rs) == 1 for rs in runs.values()) and len(runs) == 3
    trials = tmp_path / "store" / "trials" / "fused-crash"
    assert (trials / last / "fault-10.count").read_text() == "1"
    diverged = runs[by_lr[1.0]][0]
    assert diverged.data.tags["scalelab.outcome"] == "diverged"
    # the diverged member ended before the crash: its journal holds one final report, not two
    assert sum(1 for e in journal(tmp_path / "store", "fused-crash", by_lr[1.0]) if e["metrics"].get("final")) == 1
    for trial_hash in (by_lr[1e-3], by_lr[3e-3]):
        run_ = runs[trial_hash][0]
        assert run_.data.tags["scalelab.outcome"] == "finished"
        # resumed from the step-10 checkpoint: every step once in MLflow and in the journal
        assert [s for s, _ in history(shared_tracking_uri, run_, "train_loss")] == [10, 20]
        assert [e["metrics"]["step"] for e in journal(tmp_path / "store", "fused-crash", trial_hash)] == [10, 20]


def test_plan_shows_the_packs_with_memory_and_a_speedup_measured_once_per_shape(tmp_path, tiny_sweep, capsys):
    from orchestrator.cli import main
    from orchestrator.locations import Locations
    from orchestrator.plan import build_plan, format_plan

    path = tiny_sweep("planned", fuse=2, grid={"lr": [1e-3, 2e-3, 3e-3], "mlp_ratio": [2, 4]})
    spec = load_sweep(str(path))
    trials = spec.trials()
    calls = []

    def measure(cfgs, cpus):
        calls.append((len(cfgs), cfgs[0].mlp_ratio, cpus))
        return 1.5

    done = {trials[0].hash: "finished"}
    plan = build_plan(spec, Locations.resolve(spec, "sqlite:///" + str(tmp_path / "none.db")), done, measure)
    packs = plan["packs"]
    members = [h for p in packs for h in p["hashes"]]
    assert trials[0].hash not in members and len(members) == len(set(members)) == 4  # 5 to run: 2 packs + 1 alone
    assert sorted(calls) == [(2, 2, 1.0), (2, 4, 1.0)]  # one measurement per (shape, K)
    for p in packs:
        assert p["k"] == 2 and p["speedup"] == 1.5
        assert p["memory_bytes"] == pytest.approx(2 * max(r["memory_bytes"] for r in plan["trials"]
                                                          if r["hash"] in p["hashes"]), rel=1e-9)
        assert [plan["trials"][i - 1]["hash"] for i in p["trials"]] == p["hashes"]
    assert "fuse: 2 → 4 of 5 trials to run in 2 fused pack(s)" in format_plan(plan)
    # the CLI measures for real; --fuse off wins over the file
    uri = "sqlite:///" + str(tmp_path / "none.db")
    assert main(["plan", str(path), "--json", "--tracking-uri", uri]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["packs"]) == 2 and all(isinstance(p["speedup"], float) and p["speedup"] > 0 for p in out["packs"])
    assert main(["plan", str(path), "--json", "--fuse", "off", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["packs"] == []


def test_plan_says_which_trials_run_alone_and_why(tmp_path, tiny_sweep):
    from orchestrator.locations import Locations
    from orchestrator.plan import build_plan, format_plan

    spec = load_sweep(str(tiny_sweep("mixed", fuse=4, grid={"lr": [1e-3, 2e-3], "optimizer": ["adamw", "muon"]})))
    plan = build_plan(spec, Locations.resolve(spec, "sqlite:///" + str(tmp_path / "none.db")), {}, None)
    muon = [i for i, t in enumerate(spec.trials(), 1) if t.config.optimizer == "muon"]
    assert [a["trial"] for a in plan["alone"]] == muon and len(plan["packs"]) == 1
    text = format_plan(plan)
    assert f"alone: #{muon[0]}, #{muon[1]}: optimizer=muon cannot be fused" in text
    assert "speed-up not measured (--no-measure)" in text

"""One model trained on several processes (DDP, gloo on CPU) or in several passes per step
(gradient accumulation) follows the curve of one process taking the whole batch at once: the
global batch and the data of a step do not depend on how a step is cut. That is what lets
`micro_batch_size` and a sweep's `resources.workers` stay out of a trial's identity."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import TINY_MODEL
from trainer.config import TrainConfig
from trainer.distributed import Shard, micro_batches
from trainer.loop import train

STEPS = 50
# a report (train and val loss) at every step: the whole curve is compared
CURVE = {**TINY_MODEL, "batch_size": 8, "steps": STEPS, "eval_interval": 1, "eval_batches": 1, "warmup_steps": 5,
         "threads": 1, "record_activations": False}
PARAMETRIZATIONS = {"sp": {}, "mup": {"scheme": "mup"}, "mup+vector": {"scheme": "mup", "multipliers": "vector"}}
RTOL = 1e-5


class Crash(Exception):
    pass


def curve(history: list[dict]) -> list[tuple[int, float, float, float]]:
    return [(h["step"], h["train_loss"], h["val_loss"], h["grad_norm"]) for h in history]


def assert_same_curve(got: list[dict], want: list[dict]) -> None:
    assert [h["step"] for h in got] == [h["step"] for h in want]
    for g, w in zip(curve(got), curve(want)):
        for a, b in zip(g[1:], w[1:]):
            assert math.isclose(a, b, rel_tol=RTOL), (g, w)


def test_micro_batches_cut_a_rank_s_rows():
    assert micro_batches(0, 8, 0) == [(0, 8)]
    assert micro_batches(4, 8, 3) == [(4, 7), (7, 8)]
    assert Shard(1, 2).rows(8) == (4, 8) and Shard(2, 3).rows(8) == (5, 8)
    with pytest.raises(Exception, match="raise batch_size to at least 4"):
        Shard(0, 4).rows(3)


@pytest.mark.parametrize("name", PARAMETRIZATIONS)
def test_gradient_accumulation_follows_one_big_batch(name):
    cfg = TrainConfig(**CURVE, **PARAMETRIZATIONS[name])
    whole = train(cfg)
    for micro in (1, 3):  # 3: passes of unequal size (3, 3, 2)
        assert_same_curve(train(cfg.model_copy(update={"micro_batch_size": micro})).history, whole.history)


# --- several processes (torch.multiprocessing + gloo, no Ray) ---------------------------------

def _rank_main(rank: int, world: int, store: str, job: dict) -> None:
    """One rank: train `job["config"]`, every rank's reports to `job["out"]`.rank<r>.json."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        cfg = TrainConfig(**job["config"])
        seen = []

        def report(metrics, path):
            seen.append(metrics)
            if metrics["step"] == job.get("crash_at"):
                raise Crash()
        try:
            train(cfg, report=report, checkpoint_dir=job.get("checkpoints"), resume_from=job.get("resume"))
        except Crash:
            pass
        Path(f"{job['out']}.rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def train_on(world: int, tmp: Path, config: dict, **job) -> list[list[dict]]:
    """Reports of every rank of one run on `world` processes."""
    out = tmp / f"run{len(list(tmp.glob('run*.rank0.json')))}"
    store = tmp / f"{out.name}.store"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on loopback
    mp.spawn(_rank_main, args=(world, str(store), {**job, "config": config, "out": str(out)}), nprocs=world)
    return [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("name", PARAMETRIZATIONS)
def test_two_workers_follow_one(tmp_path, name):
    config = {**CURVE, **PARAMETRIZATIONS[name]}
    one = train(TrainConfig(**config)).history
    rank0, rank1 = train_on(2, tmp_path, config)
    assert_same_curve(rank0, one)
    assert [h["train_loss"] for h in rank1] == [h["train_loss"] for h in rank0]  # one global loss
    assert all(math.isnan(h["val_loss"]) for h in rank1)  # rank 0 alone evaluates and reports
    # the global batch counts every rank's tokens
    assert rank0[-1]["tokens"] == one[-1]["tokens"] == STEPS * CURVE["batch_size"] * CURVE["seq_len"]


@pytest.mark.slow  # starts processes
def test_two_workers_with_accumulation_follow_one(tmp_path):
    config = {**CURVE, **PARAMETRIZATIONS["mup+vector"]}
    one = train(TrainConfig(**config)).history
    rank0, _ = train_on(2, tmp_path, {**config, "micro_batch_size": 3})
    assert_same_curve(rank0, one)


@pytest.mark.slow  # starts processes
def test_a_checkpoint_moves_between_two_workers_and_one(tmp_path):
    config = {**CURVE, **PARAMETRIZATIONS["mup+vector"], "steps": 20, "eval_interval": 5}
    one = train(TrainConfig(**config)).history
    # written at N = 2, resumed at N = 1
    two = tmp_path / "two"
    train_on(2, tmp_path, config, checkpoints=str(two), crash_at=10)
    assert sorted(p.name for p in two.iterdir()) == ["step_00000005", "step_00000010"]  # rank 0's alone
    resumed = train(TrainConfig(**config), checkpoint_dir=str(two), resume_from="latest").history
    assert_same_curve(resumed, one)
    # written at N = 1, resumed at N = 2
    lone = tmp_path / "one"

    def crash_at_10(metrics, path):
        if metrics["step"] == 10:
            raise Crash()
    with pytest.raises(Crash):
        train(TrainConfig(**config), report=crash_at_10, checkpoint_dir=str(lone))
    rank0, _ = train_on(2, tmp_path, config, checkpoints=str(lone), resume="latest")
    assert [h["step"] for h in rank0] == [15, 20]
    assert_same_curve(rank0[-1:], one[-1:])
    assert_same_curve(json.loads(json.dumps(resumed[-2:])), rank0)


# --- a sweep's `resources.workers` (orchestrator; nothing trains) ------------------------------

def _sweep(tmp_path, resources: dict, **sections):
    from helpers import write_sweep
    from orchestrator.spec import load_sweep

    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_sweep(str(write_sweep(tmp_path, "dp", resources=resources, **sections)))


@pytest.mark.parametrize("resources, words", [
    ({"workers": 0}, ["resources.workers (line", "from 1 to 1024", "got 0"]),
    ({"workers": "two"}, ["resources.workers (line", "e.g. workers: 2"]),
    ({"workers": 2.5}, ["resources.workers (line", "whole number"]),
    ({"workers": 2, "gpu": 0.5}, ["resources (line", "one whole GPU", "set gpu: 1"]),
    ({"workers": 8}, ["batch_size=4 is smaller than resources.workers=8", "raise batch_size"]),
    ({"workers": 2, "placement": "scatter"}, ["resources.placement (line", "pack, spread, strict_pack, strict_spread",
                                              "e.g. placement: spread", "scatter"]),
    ({"workers": 2, "placement": "SPREAD"}, ["resources.placement (line", "e.g. placement: spread"]),
    ({"placement": "spread"}, ["resources (line", "workers is 1", "set workers: 2 or more, or remove placement"]),
])
def test_bad_workers_name_the_file_the_key_and_the_fix(tmp_path, resources, words):
    from trainer.config import ConfigError

    with pytest.raises(ConfigError) as err:
        _sweep(tmp_path, {"cpu": 1, **resources})
    assert "dp.yaml" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_workers_and_accumulation_leave_the_trial_as_it_is(tmp_path):
    one = _sweep(tmp_path / "a", {"cpu": 1}).trials()[0]
    two = _sweep(tmp_path / "b", {"cpu": 1, "workers": 2}, base={"micro_batch_size": 1}).trials()[0]
    assert two.hash == one.hash  # a trial moved from 1 to N workers, or cut into passes, is the same trial
    assert two.resources == {"cpu": 1.0, "gpu": 0.0, "workers": 2} and one.resources == {"cpu": 1.0, "gpu": 0.0}
    gpu = _sweep(tmp_path / "c", {"cpu": 1, "gpu": "auto", "workers": 4}).trials()[0]
    assert gpu.resources["gpu"] == 1.0  # one rank per GPU


def test_placement_reaches_ray_train_and_leaves_the_trial_as_it_is(tmp_path):
    from orchestrator.trial import Trial, placement_strategy

    two = _sweep(tmp_path / "a", {"cpu": 1, "workers": 2}).trials()[0]
    spread = _sweep(tmp_path / "b", {"cpu": 1, "workers": 2, "placement": "strict_spread"}).trials()[0]
    assert spread.hash == two.hash  # where the ranks run does not change the curve
    assert spread.resources == {"cpu": 1.0, "gpu": 0.0, "workers": 2, "placement": "strict_spread"}
    assert Trial.from_payload(spread.to_payload()).resources == spread.resources  # through Tune's config
    assert placement_strategy(spread.resources) == "STRICT_SPREAD"  # ScalingConfig(placement_strategy=)
    assert placement_strategy(two.resources) == "PACK"  # Ray Train's own default


def test_strict_spread_over_fewer_nodes_than_workers_stops_before_training(tmp_path):
    from orchestrator.runner import _check_spread
    from trainer.config import UserError

    spec = _sweep(tmp_path, {"cpu": 1, "workers": 3, "placement": "strict_spread"})
    _check_spread(spec, nodes=3)
    with pytest.raises(UserError, match=r"dp.yaml: resources.placement=strict_spread .* 3 workers .* has 2 node\(s\); "
                                        "lower workers, use placement: spread, or add nodes"):
        _check_spread(spec, nodes=2)
    _check_spread(_sweep(tmp_path / "spread", {"cpu": 1, "workers": 3, "placement": "spread"}), nodes=1)


def test_multi_worker_trials_are_never_fused_and_reserve_through_ray_train(tmp_path):
    from orchestrator.packing import make_packs
    from orchestrator.runner import placement
    from orchestrator.trainable import DRIVER_CPU

    spec = _sweep(tmp_path, {"cpu": 2, "workers": 2}, grid={"lr": [1e-3, 2e-3, 3e-3]})
    packs = make_packs(spec.trials(), 8, gpu_auto=False, gpu_memory_gb=80)
    assert len(packs) == 3 and not any(p.fused for p in packs)
    assert {p.note for p in packs} == {"trials on several workers run alone"}
    # the Tune trial holds a sliver; the TorchTrainer's workers reserve cpu each themselves
    assert placement(spec.trials()[0].resources, has_gpu=False).bundles == [{"CPU": DRIVER_CPU}]
    assert placement({"cpu": 2, "gpu": 0}, has_gpu=False).bundles == [{"CPU": 2.0}]


def test_plan_shows_workers_memory_per_worker_and_wall_time(tmp_path):
    from orchestrator.locations import Locations
    from orchestrator.plan import build_plan, format_plan

    base = {"batch_size": 8}
    plans = {}
    for workers in (1, 4):
        spec = _sweep(tmp_path / str(workers), {"cpu": 1, "workers": workers}, base=base)
        where = Locations.resolve(spec, f"sqlite:///{tmp_path}/{workers}.db", str(tmp_path / "store"))
        plans[workers] = build_plan(spec, where, {}, measure=None)
    one, four = plans[1]["trials"][0], plans[4]["trials"][0]
    assert (one["workers"], four["workers"]) == (1, 4) and plans[4]["workers"] == 4
    assert four["seconds"] == pytest.approx(one["seconds"] / 4)  # wall time, the work shared
    assert four["memory_bytes"] < one["memory_bytes"]  # a worker holds activations of its rows only
    assert "workers: 4 per trial" in format_plan(plans[4]) and "workers:" not in format_plan(plans[1])
    assert "placement" not in format_plan(plans[4])
    spec = _sweep(tmp_path / "spread", {"cpu": 1, "workers": 4, "placement": "spread"}, base=base)
    where = Locations.resolve(spec, f"sqlite:///{tmp_path}/spread.db", str(tmp_path / "store"))
    spread = build_plan(spec, where, {}, measure=None)
    assert spread["placement"] == "spread" and "workers: 4 per trial, placement spread (" in format_plan(spread)

"""Fused packs (trainer/fused.py): each member trains as it would alone."""
import math

import pytest
import torch

from helpers import TINY_TRAIN as TINY
from trainer.config import ConfigError, TrainConfig, UserError
from trainer.fused import MEMBER_FIELDS, PACK_FIELDS, StackedAdamW, check_pack, group_packs, pack_key, train_fused
from trainer.loop import train

RUNTIME_KEYS = {"tokens_per_s", "elapsed_s", "wall_time_s", "mfu"}  # wall-clock measurements


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def assert_same_run(alone, fused, rel=1e-5):
    """Same reports (keys, steps, status) and losses within `rel` at every eval point."""
    assert [h["step"] for h in fused.history] == [h["step"] for h in alone.history]
    for a, f in zip(alone.history, fused.history):
        assert set(a) == set(f)
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert f[key] == pytest.approx(a[key], rel=rel, nan_ok=True), (a["step"], key)
        for key in set(a) - RUNTIME_KEYS - {"train_loss", "val_loss", "grad_norm"}:
            expected = a[key] if isinstance(a[key], str) else pytest.approx(a[key], rel=1e-4, abs=1e-6, nan_ok=True)
            assert f[key] == expected, (a["step"], key)
    assert fused.status == alone.status
    assert [r["layer"] for r in fused.multipliers] == [r["layer"] for r in alone.multipliers]


PACKS = {
    # different seeds (init and data order), LRs, WDs, clips, schedules, betas in one pack
    "sp": [cfg(), cfg(seed=1, lr=1e-2), cfg(seed=2, weight_decay=0.0, grad_clip=0.5, schedule="cosine")],
    "sp+mup": [cfg(seed=3), cfg(scheme="mup", base_width=16, alpha_attn=2.0, alpha_out=0.5, lr=1e-2),
               cfg(scheme="mup", width_recipe="lr_wd", init_std=0.5, beta1=0.8, beta2=0.99, seed=1)],
    "mup+scalar": [cfg(scheme="mup", multipliers="scalar"),
                   cfg(scheme="mup", multipliers="scalar", seed=1, multiplier_init="forward", alpha_out=2.0,
                       lr_mult_multiplier=3.0, multiplier_wd=0.0)],
    "mup+vector": [cfg(scheme="mup", multipliers="vector"),
                   cfg(scheme="mup", multipliers="vector", seed=1, lr=1e-2, wd_mode="independent",
                       grad_clip=0.0, eps=1e-6),
                   cfg(scheme="mup", multipliers="vector", seed=2, width_recipe="multiplier",
                       lr_mult_hidden=0.5, wd_mult_emb=0.0)],
}


@pytest.mark.parametrize("name", PACKS)
def test_each_member_trains_as_it_would_alone(name):
    cfgs = PACKS[name]
    sent = [[] for _ in cfgs]
    results = train_fused(cfgs, reports=[lambda m, p, k=k: sent[k].append((m, p)) for k in range(len(cfgs))])
    for k, (c, result) in enumerate(zip(cfgs, results)):
        seen = []
        alone = train(c, report=lambda m, p: seen.append((m, p)))
        assert_same_run(alone, result)
        assert [p for _, p in sent[k]] == [p for _, p in seen] == [None, None, None]
        assert [m for m, _ in sent[k]] == result.history and sent[k][-1][0]["final"] is True
        assert result.metrics["final_val_loss"] == pytest.approx(alone.metrics["final_val_loss"], rel=1e-5)


def test_pack_resume_is_exact_and_member_checkpoints_resume_alone(tmp_path):
    cfgs = [cfg(scheme="mup", multipliers="vector"), cfg(scheme="mup", multipliers="vector", seed=1, lr=1e-2)]
    dirs = lambda tag: [str(tmp_path / tag / str(k)) for k in range(len(cfgs))]  # noqa: E731
    full = train_fused(cfgs, checkpoint_dirs=dirs("a"))

    class Crash(Exception):
        pass

    def crash_at_16(metrics, path):
        if metrics["step"] == 16:
            raise Crash()
    with pytest.raises(Crash):
        train_fused(cfgs, reports=[None, crash_at_16], checkpoint_dirs=dirs("b"))
    seen = [[], []]
    resumed = train_fused(cfgs, reports=[lambda m, p, k=k: seen[k].append((m["step"], p)) for k in range(2)],
                          checkpoint_dirs=dirs("b"), resume_from="latest")
    assert [s for s, _ in seen[0]] == [s for s, _ in seen[1]] == [24]  # continued from step 16
    assert all(p and p.startswith(d) for (_, p), d in zip([seen[0][0], seen[1][0]], dirs("b")))
    for a, b in zip(full, resumed):
        assert [(h["step"], h["train_loss"], h["val_loss"]) for h in a.history] == \
               [(h["step"], h["train_loss"], h["val_loss"]) for h in b.history]
    # a member's checkpoint is a single-model checkpoint: it resumes alone, to the same losses
    alone = train(cfgs[1], checkpoint_dir=str(tmp_path / "c"), resume_from=str(tmp_path / "b" / "1" / "step_00000016"))
    assert alone.metrics["final_val_loss"] == pytest.approx(full[1].metrics["final_val_loss"], rel=1e-5)


def test_resume_refuses_members_at_different_steps(tmp_path):
    cfgs = [cfg(), cfg(seed=1)]
    for k, c in enumerate(cfgs):
        train(c, checkpoint_dir=str(tmp_path / str(k)))  # keeps the checkpoints of steps 16 and 24
    with pytest.raises(UserError, match=r"different steps \[16, 24\]"):
        train_fused(cfgs, resume_from=[str(tmp_path / "0" / "step_00000016"), str(tmp_path / "1" / "step_00000024")])
    with pytest.raises(UserError, match=r"members \[1\] have no checkpoint"):
        train_fused(cfgs, checkpoint_dirs=[str(tmp_path / "0"), str(tmp_path / "none")], resume_from="latest")


def test_a_diverged_member_stops_at_its_own_step_and_the_others_go_on():
    cfgs = [cfg(), cfg(seed=1, lr=30.0, grad_clip=0.0, warmup_steps=0, steps=24), cfg(seed=2, scheme="mup")]
    reports = [[] for _ in cfgs]
    results = train_fused(cfgs, reports=[lambda m, p, k=k: reports[k].append(m) for k in range(3)])
    alone = [train(c) for c in cfgs]
    assert alone[1].status == results[1].status == "diverged"
    assert results[1].metrics["diverged_at_step"] == alone[1].metrics["diverged_at_step"] < 24
    assert reports[1][-1]["status"] == "diverged" and math.isnan(reports[1][-1]["val_loss"])
    for k in (0, 2):
        assert results[k].status == "finished" and [r["step"] for r in reports[k]] == [8, 16, 24]
        assert_same_run(alone[k], results[k])


def test_a_frozen_member_is_left_exactly_as_it_is():
    w = torch.nn.Parameter(torch.randn(3, 4, 5))
    members = [type("M", (), {"cfg": cfg(lr=1e-2), "opt": None})() for _ in range(3)]
    groups = [[{"name": "attn_q", "is_multiplier": False, "params": [w], "base_lr": 1e-2, "weight_decay": 0.1}]] * 3
    for m, g in zip(members, groups):
        m.opt = type("O", (), {"groups": g})()
    opt = StackedAdamW([(w, [w, w, w])], members)
    w.grad = torch.randn_like(w)
    w.grad[1] = float("nan")  # a diverged member's gradients
    before = w.detach().clone()
    opt.forget(1)
    opt.clip([True, False, True])
    opt.step([1.0, 1.0, 1.0], [True, False, True])
    assert torch.equal(w[1], before[1])
    assert not torch.equal(w[0], before[0]) and torch.isfinite(w).all()


def test_configs_that_cannot_share_a_pack_are_refused_by_name():
    with pytest.raises(ConfigError, match="d_model differs"):
        check_pack([cfg(), cfg(d_model=64)])
    with pytest.raises(ConfigError, match="multipliers differs"):
        check_pack([cfg(), cfg(multipliers="vector")])
    with pytest.raises(ConfigError, match="member 1: optimizer=muon cannot be fused"):
        check_pack([cfg(), cfg(optimizer="muon")])
    with pytest.raises(ConfigError, match="optimizer=muon"):
        pack_key(cfg(optimizer="muon"))
    check_pack([cfg(), cfg(scheme="mup", lr=1.0, seed=5, schedule="cosine", grad_clip=0.0)])


def test_group_packs_by_shape_in_order_with_a_size_cap():
    cfgs = [cfg(seed=s, d_model=d) for s in range(3) for d in (32, 64)] + [cfg(optimizer="muon"), cfg(seed=9)]
    packs = group_packs(cfgs, max_members=2)
    assert packs == [[0, 2], [1, 3], [4, 7], [5], [6]]
    assert pack_key(cfgs[0]) == pack_key(cfgs[2]) != pack_key(cfgs[1])


def test_every_config_field_is_either_shared_by_a_pack_or_held_per_member():
    assert not set(PACK_FIELDS) & set(MEMBER_FIELDS)
    assert set(PACK_FIELDS) | set(MEMBER_FIELDS) == set(TrainConfig.model_fields)


def test_fused_model_runs_under_bf16_autocast_like_the_single_model():
    """The GPU path trains in bf16 autocast (no GPU here): CPU autocast runs the same casts."""
    from trainer.fused_model import FusedGPT
    from trainer.model import GPT
    cfgs = [cfg(scheme="mup", multipliers="vector", seed=k) for k in range(2)]
    members = []
    for c in cfgs:
        torch.manual_seed(c.seed)
        members.append(GPT(c))
    fused = FusedGPT(members)
    idx = torch.randint(0, 256, (2, 4, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses = fused(idx, idx)
        alone = [m(idx[k], idx[k])[1] for k, m in enumerate(members)]
    losses.sum().backward()
    torch.testing.assert_close(losses, torch.stack(alone).detach(), rtol=2e-2, atol=0)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in fused.parameters() if p.requires_grad)

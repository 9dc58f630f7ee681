"""The parametrization rules change by the predicted factors as width (and depth) doubles."""
import math

import numpy as np
import pytest

from trainer.config import TrainConfig
from trainer.parametrization import HIDDEN_ROLES, Tunables, multiplier_placement, param_rule

TUN = Tunables(head_dim=32, base_width=128, alpha_emb=2.0, alpha_out=3.0, alpha_attn=4.0)


def rule(role, m, scheme="mup", depth=1.0, tun=TUN, fan_in=None):
    return param_rule(role, m, depth, scheme, tun, fan_in or int(128 * m))


@pytest.mark.parametrize("m", [0.5, 1, 2, 8])
def test_mup_table8_when_width_doubles(m):
    a, b = rule("attn_q", m), rule("attn_q", 2 * m)
    assert b.lr_mult == pytest.approx(a.lr_mult / 2)            # hidden Adam LR ∝ 1/m
    assert b.init_std == pytest.approx(a.init_std / math.sqrt(2))  # σ / sqrt(fan_in)
    assert b.wd_mult == a.wd_mult and b.forward_mult == a.forward_mult == 1
    e1, e2 = rule("embedding", m), rule("embedding", 2 * m)
    assert e1 == e2 and e1.forward_mult == 2.0                   # embedding const, × α_emb
    h1, h2 = rule("head", m), rule("head", 2 * m)
    assert h2.forward_mult == pytest.approx(h1.forward_mult / 2)  # logits × α_out / m
    assert h1.forward_mult == pytest.approx(3.0 / m)
    assert h1.init_std == h2.init_std and h1.lr_mult == h2.lr_mult  # head init and LR const
    assert rule("attn_logits", m).forward_mult == pytest.approx(4.0 / 32)  # α_attn / d_head
    n = rule("norm", m)
    assert (n.init_std, n.lr_mult, n.forward_mult) == (1.0, 1.0, 1.0)


def test_sp_keeps_lr_and_uses_inverse_sqrt_attention():
    a, b = rule("mlp_down", 1, "sp"), rule("mlp_down", 4, "sp")
    assert a.lr_mult == b.lr_mult == 1
    assert b.init_std == pytest.approx(a.init_std / 2)
    assert rule("attn_logits", 1, "sp").forward_mult == pytest.approx(1 / math.sqrt(32))
    assert rule("head", 4, "sp").forward_mult == 1 and rule("embedding", 4, "sp").forward_mult == 1


def _exponent(attr, recipe):
    tun = Tunables(width_recipe=recipe)
    widths = np.array([128, 256, 512, 1024, 4096])
    vals = [getattr(param_rule("attn_v", w / 128, 1, "mup", tun, w), attr) for w in widths]
    return np.polyfit(np.log(widths), np.log(vals), 1)[0]


@pytest.mark.parametrize("recipe,eta,lam,s", [("lr", -1, 0, 0), ("lr_wd", -1, 1, 0), ("multiplier", 0, 0, -1)])
def test_width_recipes_match_paper_table1(recipe, eta, lam, s):
    assert _exponent("lr_mult", recipe) == pytest.approx(eta, abs=1e-9)
    assert _exponent("wd_mult", recipe) == pytest.approx(lam, abs=1e-9)
    assert _exponent("forward_mult", recipe) == pytest.approx(s, abs=1e-9)


def test_multiplier_recipe_keeps_effective_init():
    for m in (1, 4):
        r_lr = param_rule("attn_o", m, 1, "mup", Tunables(width_recipe="lr"), int(128 * m))
        r_s = param_rule("attn_o", m, 1, "mup", Tunables(width_recipe="multiplier"), int(128 * m))
        assert r_s.init_std * r_s.forward_mult == pytest.approx(r_lr.init_std)


@pytest.mark.parametrize("depth_scaling,alpha", [("completep", 1.0), ("depth_mup", 0.5)])
def test_depth_scaling(depth_scaling, alpha):
    tun = Tunables(depth_scaling=depth_scaling)
    for L in (1, 2, 4, 8):
        assert param_rule("residual", 1, L, "mup", tun, 128).forward_mult == pytest.approx(L ** -alpha)
        h = param_rule("mlp_up", 1, L, "mup", tun, 128)
        assert h.lr_mult == pytest.approx(L ** (alpha - 1))
        assert h.lr_mult * h.wd_mult == pytest.approx(1.0)  # η·λ fixed across depth
    assert param_rule("residual", 1, 8, "mup", Tunables(), 128).forward_mult == 1.0


def test_multiplier_lr_width_exponent():
    tun = Tunables(lr_mult_multiplier=2.0, multiplier_lr_width_exponent=-1.0)
    assert param_rule("multiplier", 4, 1, "mup", tun, 512).lr_mult == pytest.approx(0.5)


def test_paper_and_minimal_placements():
    paper = multiplier_placement("vector")
    assert paper["head"] == "none" and paper["embedding"] == "vector"
    assert all(paper[r] == "vector" for r in HIDDEN_ROLES)
    minimal = multiplier_placement("vector", "minimal")
    assert (minimal["attn_q"], minimal["attn_k"], minimal["attn_v"], minimal["attn_o"]) == ("row", "none", "none", "vector")
    assert (minimal["mlp_gate"], minimal["mlp_up"], minimal["mlp_down"]) == ("row", "none", "vector")
    assert multiplier_placement("scalar", "minimal")["attn_q"] == "scalar"
    assert multiplier_placement("vector", overrides={"head": "scalar"})["head"] == "scalar"
    assert set(multiplier_placement("none").values()) == {"none"}


def test_model_applies_rules():
    import torch
    from trainer.model import GPT
    cfg = TrainConfig(d_model=512, base_width=128, scheme="mup", alpha_out=2.0, init_std=1.0, n_layers=1)
    torch.manual_seed(0)
    model = GPT(cfg)
    std = model.blocks[0].attn.q.weight.std().item()
    assert std == pytest.approx(1 / math.sqrt(512), rel=0.02)
    assert model.head.forward_mult == pytest.approx(2.0 / 4)
    assert model.blocks[0].attn.logit_scale == pytest.approx(1.0 / cfg.head_dim)
    assert model.head.weight.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.05)


def test_unknown_role_is_an_error():
    with pytest.raises(ValueError, match="unknown parameter role"):
        param_rule("bias", 1, 1, "mup", Tunables(), 128)


def test_tunables_take_the_config_defaults():
    """Tunables is the TrainConfig fields the rules read, with the config's defaults."""
    from trainer.parametrization import TUNABLE_FIELDS

    assert set(TUNABLE_FIELDS) <= set(TrainConfig.model_fields)
    assert Tunables() == Tunables.from_config(TrainConfig())
    cfg = TrainConfig(scheme="mup", width_recipe="lr_wd", alpha_out=3.0)
    assert Tunables.from_config(cfg) == Tunables(width_recipe="lr_wd", alpha_out=3.0)

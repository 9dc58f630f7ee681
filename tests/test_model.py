"""Learnable multipliers: folding, gradients (docs/science.md §2), clipping, optimizer groups."""
import pytest
import torch

from trainer.config import TrainConfig
from trainer.estimate import estimate
from trainer.layers import Linear, row_col_scaled
from trainer.model import GPT
from trainer.optim import Optimizers, lr_factor

TINY = dict(d_model=64, head_dim=16, n_layers=2, seq_len=16, batch_size=2)


def make(**kw):
    torch.manual_seed(0)
    return GPT(TrainConfig(**{**TINY, **kw}))


def randomize_multipliers(model):
    with torch.no_grad():
        for layer in model.matrices().values():
            for p in layer.multiplier_params().values():
                p.copy_(torch.rand_like(p) + 0.5)


@pytest.mark.parametrize("kw", [
    dict(scheme="mup", multipliers="scalar", d_model=128),
    dict(scheme="mup", multipliers="vector", d_model=128),
    dict(scheme="sp", multipliers="vector", multiplier_placement="minimal"),
    dict(scheme="mup", multipliers="row", multiplier_overrides={"head": "col"}, multiplier_init="forward"),
    dict(scheme="mup", multipliers="vector", width_recipe="multiplier", d_model=256),
])
def test_folded_model_gives_same_logits(kw):
    model = make(**kw)
    randomize_multipliers(model)
    idx = torch.randint(0, 256, (2, 16))
    folded = model.folded()
    assert not any(layer.multiplier_params() for layer in folded.matrices().values())
    assert sum(p.numel() for p in folded.parameters()) < sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(folded(idx)[0], model(idx)[0], rtol=1e-5, atol=1e-5)


def test_vector_multiplier_gradients_match_formulas():
    torch.manual_seed(1)
    layer = Linear(5, 4, role="attn_q", kind="vector", forward_mult=1.0)
    with torch.no_grad():
        layer.weight.normal_()
        layer.row.uniform_(0.5, 1.5)
        layer.col.uniform_(0.5, 1.5)
    x = torch.randn(7, 5)
    w_eff = layer.effective_weight().detach().requires_grad_()
    upstream = torch.randn(7, 4)
    (torch.nn.functional.linear(x, w_eff) * upstream).sum().backward()
    G = w_eff.grad                                         # ∂L/∂W_eff
    (layer(x) * upstream).sum().backward()
    W, r, c = layer.weight.detach(), layer.row.detach(), layer.col.detach()
    torch.testing.assert_close(layer.weight.grad, r[:, None] * c[None, :] * G)  # ∂L/∂W = r_i c_j G_ij
    torch.testing.assert_close(layer.row.grad, (W * c[None, :] * G).sum(1))     # Σ_j W_ij c_j G_ij
    torch.testing.assert_close(layer.col.grad, (r[:, None] * W * G).sum(0))     # Σ_i r_i W_ij G_ij


@pytest.mark.parametrize("lead", [(), (3,)])  # one matrix, or a fused pack's stack of three
@pytest.mark.parametrize("parts", ["vector", "row", "col"])
def test_row_col_scaled_gradients_match_formulas(lead, parts):
    torch.manual_seed(3)
    W = torch.randn(*lead, 5, 4, dtype=torch.float64, requires_grad=True)
    r = (torch.rand(*lead, 5, dtype=torch.float64) + 0.5).requires_grad_() if parts != "col" else None
    c = (torch.rand(*lead, 4, dtype=torch.float64) + 0.5).requires_grad_() if parts != "row" else None
    assert torch.autograd.gradcheck(row_col_scaled, (W, r, c))
    r1 = r.detach() if r is not None else torch.ones(*lead, 5, dtype=torch.float64)
    c1 = c.detach() if c is not None else torch.ones(*lead, 4, dtype=torch.float64)
    G = torch.randn(*lead, 5, 4, dtype=torch.float64)                  # ∂L/∂W_eff
    out = row_col_scaled(W, r, c)
    torch.testing.assert_close(out, r1[..., :, None] * W * c1[..., None, :])
    (out * G).sum().backward()
    Wd = W.detach()
    torch.testing.assert_close(W.grad, r1[..., :, None] * c1[..., None, :] * G)      # r_i c_j G_ij
    if r is not None:
        torch.testing.assert_close(r.grad, (Wd * c1[..., None, :] * G).sum(-1))      # Σ_j W_ij c_j G_ij
    if c is not None:
        torch.testing.assert_close(c.grad, (r1[..., :, None] * Wd * G).sum(-2))      # Σ_i r_i W_ij G_ij


def test_row_col_scaled_rounds_a_stacked_slice_as_the_matrix_alone():
    """The fused trainer's members get their gradients to the last bit (fp32)."""
    torch.manual_seed(4)
    W, G = torch.randn(4, 96, 64), torch.randn(4, 64, 96).transpose(1, 2)  # G transposed, as bmm gives it
    r, c = torch.rand(4, 96) + 0.5, torch.rand(4, 64) + 0.5
    stacked = [t.clone().requires_grad_() for t in (W, r, c)]
    row_col_scaled(*stacked).backward(G)
    for k in range(4):
        alone = [t[k].clone().requires_grad_() for t in (W, r, c)]
        row_col_scaled(*alone).backward(G[k].contiguous())
        for s, a in zip(stacked, alone):
            assert torch.equal(s.grad[k], a.grad)


def test_scalar_multiplier_gradient_matches_formula():
    torch.manual_seed(2)
    layer = Linear(6, 3, role="mlp_up", kind="scalar", forward_mult=1.0)
    with torch.no_grad():
        layer.weight.normal_()
        layer.scale.fill_(1.7)
    x, upstream = torch.randn(4, 6), torch.randn(4, 3)
    G = upstream.t() @ x                                   # ∂L/∂W_eff for L = Σ y ⊙ upstream
    (layer(x) * upstream).sum().backward()
    torch.testing.assert_close(layer.scale.grad, (layer.weight.detach() * G).sum())  # Σ W_ij G_ij
    torch.testing.assert_close(layer.weight.grad, 1.7 * G)


def test_paper_placement_in_model():
    model = make(multipliers="vector")
    assert model.head.kind == "none" and model.embedding.kind == "vector"
    assert set(model.embedding.multiplier_params()) == {"row", "col"}
    assert model.embedding.row.shape == (64,) and model.embedding.col.shape == (256,)
    assert all(model.matrices()[f"{r}.0"].kind == "vector" for r in ("attn_q", "attn_k", "mlp_down"))


def test_multiplier_init_forward_takes_over_the_fixed_multiplier():
    model = make(scheme="mup", multipliers="scalar", multiplier_overrides={"head": "scalar"},
                 multiplier_init="forward", d_model=128, base_width=32, alpha_out=2.0)
    assert model.head.forward_mult == 1.0
    assert model.head.scale.item() == pytest.approx(2.0 / 4)


def test_multipliers_are_excluded_from_gradient_clipping():
    model = make(multipliers="vector")
    opt = Optimizers(model, model.cfg)
    mult, rest = opt.multiplier_params(), opt.clipped_params()
    assert mult and rest and not ({id(p) for p in mult} & {id(p) for p in rest})
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    torch.nn.utils.clip_grad_norm_(rest, 1.0)
    assert torch.nn.utils.get_total_norm([p.grad for p in rest]).item() == pytest.approx(1.0, rel=1e-4)
    assert all(torch.all(p.grad == 10.0) for p in mult)


def test_param_groups_carry_rules():
    cfg = TrainConfig(**{**TINY, "d_model": 256, "base_width": 64, "scheme": "mup", "multipliers": "scalar",
                         "lr": 1e-2, "weight_decay": 0.1, "multiplier_wd": 2e-3})
    torch.manual_seed(0)
    opt = Optimizers(GPT(cfg), cfg)
    by = {g["name"]: g for g in opt.groups}
    assert by["attn_q"]["base_lr"] == pytest.approx(1e-2 / 4)
    assert by["embedding"]["base_lr"] == pytest.approx(1e-2) and by["head"]["base_lr"] == pytest.approx(1e-2)
    assert by["multiplier"]["weight_decay"] == pytest.approx(2e-3)
    assert by["norm"]["weight_decay"] == 0.0 and by["attn_q"]["weight_decay"] == pytest.approx(0.1)
    ind = TrainConfig(**{**cfg.model_dump(), "wd_mode": "independent"})
    torch.manual_seed(0)
    g = {g["name"]: g for g in Optimizers(GPT(ind), ind).groups}["attn_q"]
    assert g["lr"] * g["weight_decay"] == pytest.approx(0.1)  # per-step decay = λ, not η·λ


def test_muon_puts_hidden_matrices_on_muon():
    cfg = TrainConfig(**TINY, optimizer="muon", multipliers="scalar")
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = Optimizers(model, cfg)
    adam, muon = opt.all
    assert isinstance(muon, torch.optim.Muon)
    assert {g["name"] for g in muon.param_groups} == {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_up", "mlp_gate", "mlp_down"}
    before = model.blocks[0].attn.q.weight.detach().clone()
    idx = torch.randint(0, 256, (2, 16))
    model(idx, idx)[1].backward()
    opt.step()
    assert not torch.equal(before, model.blocks[0].attn.q.weight)


def test_frozen_norms_stay_at_one():
    model = make(freeze_norms=True)
    assert all(not n.weight.requires_grad for n in model.norms().values())
    assert "norm" not in {g["name"] for g in Optimizers(model, model.cfg).groups}


@pytest.mark.parametrize("kw", [{}, dict(multipliers="scalar"), dict(multipliers="vector"),
                                dict(multipliers="vector", multiplier_placement="minimal", freeze_norms=True)])
def test_estimate_counts_parameters_exactly(kw):
    model = make(**kw)
    est = estimate(model.cfg)
    assert (est["n_params"], est["n_params_nonembedding"]) == model.count_params()


def test_schedules():
    wsd = TrainConfig(steps=100, warmup_steps=10, schedule="wsd", decay_frac=0.2)
    f = [lr_factor(s, wsd) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0 and f[79] == 1.0
    assert f[80] < 1.0 and f[99] == pytest.approx(0.0) and all(a >= b for a, b in zip(f[10:], f[11:]))
    cos = TrainConfig(steps=100, warmup_steps=0, schedule="cosine", min_lr_ratio=0.1)
    c = [lr_factor(s, cos) for s in range(100)]
    assert c[0] == 1.0 and c[50] == pytest.approx(0.55, abs=0.02) and c[99] == pytest.approx(0.1, abs=0.01)
    assert lr_factor(50, TrainConfig(steps=100, schedule="constant")) == 1.0


def test_model_matrices_follow_the_roles_and_shapes_of_the_config():
    """One list of roles and one shape per role: the model holds exactly the matrices that
    `estimate` counts, in the same order."""
    from trainer.config import HIDDEN_ROLES, MATRIX_ROLES
    from trainer.estimate import matrix_shapes

    cfg = TrainConfig(**{**TINY, "mlp_ratio": 3.0})
    layers = GPT(cfg).matrices()
    assert [(layer.role, layer.weight.shape[1], layer.weight.shape[0]) for layer in layers.values()] == \
        matrix_shapes(cfg)
    assert list(layers)[1:1 + len(HIDDEN_ROLES)] == [f"{role}.0" for role in HIDDEN_ROLES]
    assert {layer.role for layer in layers.values()} == set(MATRIX_ROLES)

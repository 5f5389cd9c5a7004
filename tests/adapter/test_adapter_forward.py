"""PILAAdapter.forward: identity at initialisation, the σ-gate, Eq. 5–8, gradients, inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from adapter_helpers import TEXT_DIM, make_batch, randomize_zero_layers, tiny_adapter

from pila.adapter import PARAMETER_GROUPS, AdapterCondition
from pila.categories import CATEGORIES
from pila.flow import apply_correction, sigma_gate
from pila.physics.bank import slot_mask, unpack_bank
from pila.physics.fused import ResidualPass
from pila.physics.loss import ResidualLoss
from pila.physics.masks import RECIPE_SLOTS
from pila.physics.residuals import category_residuals

VARIANTS = {
    "full": {},
    "plain": {"plain_adapter": True},
    "no_flow_correction": {"flow_correction": False},
    "no_afe": {"use_afe": False},
    "no_moe": {"moe_operator": False},
    "no_routing": {"expert_routing": False},
    "top0": {"top_k": 0},
    "top8": {"top_k": 8},
    "batched_experts": {"expert_dispatch": "batched"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fresh_adapter_is_exact_identity(variant: str) -> None:
    adapter = tiny_adapter(**VARIANTS[variant]).train()
    x_t, sigma, v_theta, cond = make_batch()
    out = adapter(x_t, sigma, v_theta, cond)
    assert torch.equal(out.v_pila, v_theta)  # bitwise
    assert not out.correction.any()


def test_identity_holds_for_bfloat16_backbone_velocity() -> None:
    adapter = tiny_adapter().eval()
    x_t, sigma, v_theta, cond = make_batch()
    v16 = v_theta.to(torch.bfloat16)
    out = adapter(x_t.to(torch.bfloat16), sigma, v16, cond)
    assert out.v_pila.dtype == torch.bfloat16 and torch.equal(out.v_pila, v16)


def test_correction_is_sigma_gated_decoder_output() -> None:
    adapter = tiny_adapter(g_min=0.2).eval()
    randomize_zero_layers(adapter)
    x_t, _, v_theta, cond = make_batch(batch=3)
    sigma = torch.tensor([0.0, 0.5, 1.0])
    out = adapter(x_t, sigma, v_theta, cond)
    gate = torch.tensor([1.0, 0.2 + 0.8 * 0.25, 0.2])
    torch.testing.assert_close(sigma_gate(sigma, 0.2), gate)
    torch.testing.assert_close(out.correction, gate[:, None, None, None, None] * out.delta_v)
    torch.testing.assert_close(out.v_pila - v_theta, out.correction)
    assert out.correction.abs().sum() > 0
    v_pila, correction = apply_correction(
        v_theta, sigma, out.delta_v, 0.2
    )  # what forward uses for Eq. 10
    assert torch.equal(out.v_pila, v_pila) and torch.equal(out.correction, correction)


def test_forward_steps_carry_the_docstrings_equation_numbers() -> None:
    import inspect
    import re

    from pila.adapter import adapter as module

    def numbers(pairs: list[tuple[str, str]]) -> set[int]:
        return {n for first, last in pairs for n in range(int(first), int(last or first) + 1)}

    documented = numbers(re.findall(r"^ +\((\d+)(?:–(\d+))?\) ", module.__doc__, re.MULTILINE))
    steps = numbers(
        re.findall(r"# \((\d+)\)(?:–\((\d+)\))? ", inspect.getsource(module.PILAAdapter.forward))
    )
    assert documented == steps == set(range(1, 11))


def test_refined_bank_is_weighted_sum_of_expert_updates() -> None:
    adapter = tiny_adapter(top_k=3).eval()
    randomize_zero_layers(adapter)
    out = adapter(*make_batch())
    expected = out.bank.clone()
    for b in range(out.bank.shape[0]):
        for j, k in enumerate(out.routing.indices[b].tolist()):
            expected[b] += out.routing.weights[b, k] * out.expert_updates[b, j]
    torch.testing.assert_close(out.refined_bank, expected)
    assert not torch.equal(out.refined_bank, out.bank)


def test_each_expert_writes_only_its_recipe_slots() -> None:
    adapter = tiny_adapter(top_k=8).eval()
    randomize_zero_layers(adapter, scale=0.3)
    out = adapter(*make_batch())
    for b in range(2):
        for j, k in enumerate(out.routing.indices[b].tolist()):
            written = out.expert_updates[b, j].abs().amax(dim=(1, 2, 3)) > 0  # (32,)
            allowed = slot_mask(RECIPE_SLOTS[CATEGORIES[k]], dtype=torch.bool)
            assert torch.equal(written, allowed), CATEGORIES[k]


def test_top_k_zero_applies_no_expert_update() -> None:
    adapter = tiny_adapter(top_k=0).train()
    randomize_zero_layers(adapter)
    out = adapter(*make_batch())
    assert out.routing.indices.shape == (2, 0)
    assert torch.equal(out.refined_bank, out.bank)
    assert out.residual_loss == 0 and not out.expert_active.any()


@pytest.mark.parametrize("top_k", range(9))
def test_every_top_k_of_table_14_routes_k_experts(top_k: int) -> None:
    out = tiny_adapter(top_k=top_k).eval()(*make_batch())
    assert out.routing.indices.shape == (2, top_k)
    assert out.expert_updates.shape[:2] == (2, top_k)


def test_routed_residual_objective_matches_eq_7_by_hand() -> None:
    adapter = tiny_adapter(top_k=3, loss_weighting="fixed").train()
    randomize_zero_layers(adapter, scale=0.2)
    x_t, sigma, v_theta, cond = make_batch(batch=3)
    out = adapter(x_t, sigma, v_theta, cond)
    reference = ResidualLoss("fixed")
    totals = []
    for b in range(3):
        chosen = [
            (j, k) for j, k in enumerate(out.routing.indices[b].tolist()) if cond.labels[b, k] > 0
        ]
        z = sum(float(out.routing.weights[b, k].detach()) for _, k in chosen)
        total = torch.zeros(())
        for j, k in chosen:
            category = CATEGORIES[k]
            own_bank = out.bank[b : b + 1] + out.expert_updates[b : b + 1, j]  # P + ΔP_k, not P̃
            residuals = category_residuals(category, unpack_bank(own_bank))
            loss_k = reference({category: residuals}, out.mask[b : b + 1]).per_category[category][0]
            torch.testing.assert_close(out.per_expert_loss[category][b], loss_k.detach())
            total = total + float(out.routing.weights[b, k].detach()) / z * loss_k
        totals.append(total)
        assert out.expert_active[b].sum() == len(chosen)
    assert any(out.expert_active.sum(1) > 0)
    torch.testing.assert_close(out.residual_loss, torch.stack(totals).mean())


def test_residual_loss_is_zero_without_label_consistent_experts() -> None:
    adapter = tiny_adapter(top_k=2, beta=0.0).train()
    randomize_zero_layers(adapter, scale=0.2)
    with torch.no_grad():  # the router selects experts 0 and 1 whatever c is
        adapter.router.proj.weight.zero_()
        adapter.router.proj.bias.copy_(torch.tensor([5.0, 4.0, 0, 0, 0, 0, 0, 0]))
    labels = torch.zeros(2, 8)
    labels[:, 7] = 1.0  # optical only: never selected
    out = adapter(*make_batch(labels=labels))
    assert out.routing.indices.tolist() == [[0, 1], [0, 1]]
    assert out.residual_loss == 0 and not out.expert_active.any() and not out.per_term
    labels[:, 0] = 1.0  # now rigid_body is selected and labelled
    out = adapter(*make_batch(labels=labels))
    assert out.residual_loss > 0
    assert out.expert_active[:, 0].all() and out.expert_active.sum() == 2
    assert set(cat for cat, _ in out.per_term) == {"rigid_body"}


def test_residuals_are_skipped_at_inference_unless_asked() -> None:
    adapter = tiny_adapter().eval()
    batch = make_batch()
    assert adapter(*batch).mask is None and adapter(*batch).residual_loss == 0
    assert adapter(*batch, residuals=True).residual_loss > 0


def test_mask_blend_moves_to_the_physical_mask() -> None:
    adapter = tiny_adapter().eval()
    randomize_zero_layers(adapter)
    x_t, sigma, v_theta, cond = make_batch()
    motion = adapter(x_t, sigma, v_theta, cond, residuals=True).mask
    cond.mask_blend = 1.0
    physical = adapter(x_t, sigma, v_theta, cond, residuals=True).mask
    cond.mask_blend = 0.5
    half = adapter(x_t, sigma, v_theta, cond, residuals=True).mask
    assert not torch.allclose(motion, physical)
    torch.testing.assert_close(half, 0.5 * (motion + physical))


class StandInBackbone(torch.nn.Module):
    """A trainable-looking backbone: if the adapter leaked gradients, they would land here."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv3d(16, 16, 1)

    def forward(self, x_t: torch.Tensor) -> torch.Tensor:
        return self.proj(x_t)


def test_gradients_reach_every_part_and_never_the_backbone() -> None:
    adapter = tiny_adapter().train()
    randomize_zero_layers(adapter, scale=0.1)
    backbone = StandInBackbone()
    x_t, sigma, _, cond = make_batch()
    v_theta = backbone(x_t)  # carries a graph back to the stand-in's weights
    out = adapter(x_t, sigma, v_theta, cond)
    target = torch.randn_like(x_t)
    (F.mse_loss(out.v_pila, target) + out.residual_loss).backward()
    assert backbone.proj.weight.grad is None and backbone.proj.bias.grad is None
    for name, params in adapter.parameter_groups().items():
        assert params, name
        grad = sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
        assert grad > 0, f"no gradient reached {name}"


def test_tiny_wan_backbone_stays_frozen(tiny_backbone) -> None:
    adapter = tiny_adapter().train()
    randomize_zero_layers(adapter, scale=0.1)
    x_t, sigma, _, cond = make_batch(grid=(5, 6, 8))
    text = torch.randn(2, 7, tiny_backbone.text_dim)
    v_theta = tiny_backbone.velocity(x_t, sigma, text)
    out = adapter(x_t, sigma, v_theta, cond)
    (F.mse_loss(out.v_pila, torch.randn_like(x_t)) + out.residual_loss).backward()
    for name, p in tiny_backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    assert adapter.decoder.head.weight.grad.abs().sum() > 0


def test_parameter_groups_partition_the_parameters() -> None:
    for changes in ({}, {"plain_adapter": True}, {"use_afe": False, "expert_routing": False}):
        adapter = tiny_adapter(**changes)
        groups = adapter.parameter_groups()
        assert tuple(groups) == PARAMETER_GROUPS
        ids = [id(p) for params in groups.values() for p in params]
        assert len(ids) == len(set(ids)) == len(list(adapter.parameters()))
    full = tiny_adapter().parameter_groups()
    assert len(full["anchor"]) == 2  # H_v weight and bias, trained from stage A on


def test_encode_bank_matches_forward_bank() -> None:
    adapter = tiny_adapter().eval()
    x_t, sigma, v_theta, cond = make_batch()
    enc = adapter.encode_bank(x_t, sigma, v_theta, phase=4)
    out = adapter(x_t, sigma, v_theta, cond)
    torch.testing.assert_close(enc.bank, out.bank)
    torch.testing.assert_close(enc.x0_hat, x_t - sigma[:, None, None, None, None] * v_theta)
    core = adapter.encode_bank(x_t, sigma, v_theta, phase=0)
    assert core.active_slots == ("u", "v", "p", "rho", "strain", "stress")
    assert not core.fields["w"].any()


def test_scalar_sigma_is_broadcast() -> None:
    adapter = tiny_adapter().eval()
    randomize_zero_layers(adapter)
    x_t, _, v_theta, cond = make_batch()
    a = adapter(x_t, 0.3, v_theta, cond)
    b = adapter(x_t, torch.full((2,), 0.3), v_theta, cond)
    torch.testing.assert_close(a.v_pila, b.v_pila)


def test_bad_inputs_name_the_problem() -> None:
    adapter = tiny_adapter()
    x_t, sigma, v_theta, cond = make_batch()
    with pytest.raises(ValueError, match="x_t must have shape"):
        adapter(x_t[:, :8], sigma, v_theta[:, :8], cond)
    with pytest.raises(ValueError, match="v_theta"):
        adapter(x_t, sigma, v_theta[:, :, :3], cond)
    with pytest.raises(ValueError, match="sigma"):
        adapter(x_t, torch.rand(3), v_theta, cond)
    with pytest.raises(ValueError, match="text_dim"):
        adapter(x_t, sigma, v_theta, AdapterCondition(torch.randn(2, TEXT_DIM + 1), cond.labels))
    one = AdapterCondition(cond.pooled_text[:1], cond.labels[:1])
    with pytest.raises(ValueError, match="batch"):
        adapter(x_t, sigma, v_theta, one)
    with pytest.raises(ValueError, match="phase"):
        adapter(x_t, sigma, v_theta, AdapterCondition(cond.pooled_text, cond.labels, phase=5))
    with pytest.raises(ValueError, match="plain adapter"):
        tiny_adapter(plain_adapter=True).encode_bank(x_t, sigma, v_theta)


@pytest.mark.slow
def test_compiled_residual_pass_trains_like_the_eager_one() -> None:
    """Stage C's routed objective through ResidualPass(compile=True): same loss, same
    per-term values, same gradients on every parameter, same running means."""
    torch._dynamo.reset()
    eager = tiny_adapter(seed=3).train()
    randomize_zero_layers(eager, scale=0.1)
    fused = copy.deepcopy(eager)
    fused.residual_pass = ResidualPass(compile=True)
    x_t, sigma, v_theta, cond = make_batch(batch=3)
    outs = []
    for adapter in (eager, fused):
        out = adapter(x_t, sigma, v_theta, cond)
        (F.mse_loss(out.v_pila, torch.zeros_like(x_t)) + out.residual_loss).backward()
        outs.append(out)
    assert fused.residual_pass.compile  # compiled, not fallen back to eager
    assert outs[0].residual_loss > 0 and outs[0].expert_active.sum() >= 2
    torch.testing.assert_close(outs[1].residual_loss, outs[0].residual_loss, rtol=1e-5, atol=1e-7)
    assert outs[1].per_term.keys() == outs[0].per_term.keys()
    for key, value in outs[0].per_term.items():
        torch.testing.assert_close(outs[1].per_term[key], value, rtol=1e-5, atol=1e-7)
    for (name, a), b in zip(fused.named_parameters(), eager.parameters(), strict=True):
        if b.grad is None:
            assert a.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)  # grads are O(1)
    torch.testing.assert_close(fused.residual_loss.running_mean, eager.residual_loss.running_mean)

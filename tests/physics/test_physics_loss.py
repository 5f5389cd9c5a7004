"""The weighted residual loss (Eq. 6): masking, fixed and adaptive weights, buffers."""

from __future__ import annotations

import pytest
import torch

from pila.categories import CATEGORIES
from pila.physics.afe import AnchoredFieldEstimator
from pila.physics.loss import ResidualLoss
from pila.physics.masks import motion_mask
from pila.physics.residuals import TERM_KEYS, residuals_for_categories

B, T, H, W = 3, 5, 6, 7


def residual_set(seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return {
        "fluid": {
            "continuity": scale * torch.randn(B, 1, T - 2, H - 2, W - 2, generator=g),
            "momentum": 10 * scale * torch.randn(B, 2, T - 2, H - 2, W - 2, generator=g),
        },
        "optical": {"wave": 0.01 * scale * torch.randn(B, 1, T - 2, H - 2, W - 2, generator=g)},
    }


def masked_mean(r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over (C, T', H', W') of m·r² with the mask cropped to the interior: (B,)."""
    m = mask[:, :, 1:-1, 1:-1, 1:-1]
    return (m * r.square()).mean(dim=(1, 2, 3, 4))


def test_fixed_weights_give_the_weighted_masked_mean_per_sample():
    res = residual_set()
    mask = torch.rand(B, 1, T, H, W, generator=torch.Generator().manual_seed(1))
    loss = ResidualLoss(weighting="fixed", fixed_weights={"fluid/momentum": 0.5})
    out = loss(res, mask)
    expected = masked_mean(res["fluid"]["continuity"], mask) + 0.5 * masked_mean(
        res["fluid"]["momentum"], mask
    )
    assert out.per_category["fluid"].shape == (B,)
    torch.testing.assert_close(out.per_category["fluid"], expected)
    torch.testing.assert_close(
        out.per_category["optical"], masked_mean(res["optical"]["wave"], mask)
    )
    torch.testing.assert_close(
        out.per_term[("fluid", "momentum")], masked_mean(res["fluid"]["momentum"], mask).mean()
    )
    assert not out.per_term[("fluid", "momentum")].requires_grad


def test_the_mask_is_cropped_to_the_interior_and_weights_points():
    res = residual_set()
    mask = torch.zeros(B, 1, T, H, W)
    loss = ResidualLoss(weighting="fixed")
    assert float(loss(res, mask).per_category["fluid"].abs().max()) == 0.0
    mask[:, :, 0] = 1.0  # only boundary frames: outside the interior crop
    mask[:, :, -1] = 1.0
    assert float(loss(res, mask).per_category["fluid"].abs().max()) == 0.0
    mask[:, :, 2] = 1.0
    assert float(loss(res, mask).per_category["fluid"].min()) > 0.0


def test_adaptive_weights_put_every_term_at_order_one():
    res = residual_set()
    mask = torch.ones(B, 1, T, H, W)
    loss = ResidualLoss().train()
    out = loss(res, mask)
    # the first update sets μ to the batch value: each term's batch mean becomes 1
    torch.testing.assert_close(out.per_category["fluid"].mean(), torch.tensor(2.0))
    wave = out.per_term[("optical", "wave")]  # ≈ 1e-4: eps is visible at this size
    torch.testing.assert_close(out.per_category["optical"].mean(), wave / (wave + loss.eps))
    assert 0.999 < float(out.per_category["optical"].mean()) <= 1.0
    weight = out.weights[("fluid", "momentum")]
    torch.testing.assert_close(weight, 1 / (out.per_term[("fluid", "momentum")] + loss.eps))


def test_running_means_follow_the_momentum_in_training_only():
    mask = torch.ones(B, 1, T, H, W)
    loss = ResidualLoss(momentum=0.9).train()
    first = loss(residual_set(seed=0), mask).per_term[("fluid", "continuity")]
    second = loss(residual_set(seed=1, scale=3.0), mask).per_term[("fluid", "continuity")]
    i = TERM_KEYS.index(("fluid", "continuity"))
    torch.testing.assert_close(loss.running_mean[i], 0.9 * first + 0.1 * second)
    assert int(loss.num_updates[i]) == 2
    untouched = TERM_KEYS.index(("elastic", "velocity_wave"))
    assert int(loss.num_updates[untouched]) == 0
    before = loss.running_mean.clone()
    loss.eval()
    out = loss(residual_set(seed=2, scale=5.0), mask)
    torch.testing.assert_close(loss.running_mean, before)
    torch.testing.assert_close(out.weights[("fluid", "continuity")], 1 / (before[i] + loss.eps))


def test_running_means_are_saved_and_restored():
    mask = torch.ones(B, 1, T, H, W)
    loss = ResidualLoss().train()
    loss(residual_set(), mask)
    state = loss.state_dict()
    assert {"running_mean", "num_updates", "fixed_weight"} <= set(state)
    assert state["running_mean"].shape == (29,)
    restored = ResidualLoss()
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.running_mean, loss.running_mean)
    restored.eval()
    torch.testing.assert_close(
        restored(residual_set(), mask).per_category["fluid"],
        loss.eval()(residual_set(), mask).per_category["fluid"],
    )


def test_gradients_reach_the_residuals_but_not_the_weights_or_mask():
    res = residual_set()
    for terms in res.values():
        for r in terms.values():
            r.requires_grad_()
    mask = torch.rand(B, 1, T, H, W, requires_grad=True)
    out = ResidualLoss().train()(res, mask)
    sum(v.sum() for v in out.per_category.values()).backward()
    assert res["fluid"]["momentum"].grad is not None
    assert mask.grad is None
    assert not out.weights[("fluid", "momentum")].requires_grad


def test_bad_inputs():
    mask = torch.ones(B, 1, T, H, W)
    with pytest.raises(ValueError, match="weighting"):
        ResidualLoss(weighting="learned")
    with pytest.raises(ValueError, match="momentum"):
        ResidualLoss(momentum=1.0)
    with pytest.raises(ValueError, match="unknown residual term 'fluid/viscosity'"):
        ResidualLoss(fixed_weights={"fluid/viscosity": 1.0})
    with pytest.raises(ValueError, match="unknown residual term fluid/drag"):
        ResidualLoss()({"fluid": {"drag": torch.zeros(B, 1, T - 2, H - 2, W - 2)}}, mask)
    with pytest.raises(ValueError, match=r"does not fit the interior-cropped mask"):
        ResidualLoss()({"fluid": {"continuity": torch.zeros(B, 1, T, H, W)}}, mask)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, 1, T, H, W\)"):
        ResidualLoss()(residual_set(), torch.ones(B, 2, T, H, W))


def test_afe_to_residuals_to_loss_end_to_end():
    torch.manual_seed(0)
    afe = AnchoredFieldEstimator(8)
    h = torch.randn(2, 8, T, H, W)
    scaffold = torch.randn(2, 32, T, H, W)
    out = afe(h, scaffold, phase=4)
    mask = motion_mask(out.v_hat, torch.randn(2, 16, T, H, W))
    res = residuals_for_categories(CATEGORIES, out.fields)
    losses = ResidualLoss().train()(res, mask)
    assert set(losses.per_category) == set(CATEGORIES)
    assert len(losses.per_term) == 29
    total = sum(v.mean() for v in losses.per_category.values())
    total.backward()
    grads = [p.grad for p in afe.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_a_non_finite_step_leaves_the_running_means_untouched():
    from pila.physics.loss import ResidualLoss

    loss = ResidualLoss(weighting="adaptive").train()
    mask = torch.ones(1, 1, 5, 6, 6)
    good = {"optical": {"wave": torch.ones(1, 1, 3, 4, 4)}}
    loss(good, mask)
    before = loss.running_mean.clone(), loss.num_updates.clone()
    loss({"optical": {"wave": torch.full((1, 1, 3, 4, 4), float("nan"))}}, mask)
    assert torch.equal(loss.running_mean, before[0]) and torch.equal(loss.num_updates, before[1])


# ---------------------------------------------------------------- readings of λ_{k,j} (R6)
def _one_term(value: float) -> dict:
    """optical/wave with mean(m·r²) = value for every sample (all-ones mask)."""
    return {"optical": {"wave": torch.full((2, 1, 3, 4, 4), value**0.5)}}


def test_the_earlier_spelling_adaptive_is_the_inverse_running_mean():
    assert ResidualLoss(weighting="adaptive").weighting == "inverse_running_mean"
    from pila.adapter import AdapterConfig

    assert AdapterConfig(loss_weighting="adaptive").loss_weighting == "inverse_running_mean"
    assert AdapterConfig().loss_weighting == "inverse_running_mean"  # the default stays


def test_frozen_scales_stop_changing_after_the_measured_steps():
    mask = torch.ones(2, 1, 5, 6, 6)
    frozen = ResidualLoss(weighting="frozen", freeze_steps=3).train()
    running = ResidualLoss(weighting="inverse_running_mean", momentum=0.0).train()
    i = frozen.index[("optical", "wave")]
    values = [4.0, 2.0, 3.0, 1e-6, 1e-6, 1e-6]
    seen = []
    for v in values:
        frozen(_one_term(v), mask)
        running(_one_term(v), mask)
        seen.append(float(frozen.running_mean[i]))
    # the scale is the plain mean of the first three values, then fixed
    assert seen[2] == pytest.approx(3.0, rel=1e-5) and seen[3:] == [seen[2]] * 3
    assert int(frozen.num_updates[i]) == 3
    # a satisfied term no longer enters at O(1): its loss falls with it
    small = frozen(_one_term(1e-6), mask).per_category["optical"]
    torch.testing.assert_close(small, torch.full((2,), 1e-6 / 3.0), rtol=1e-4, atol=0)
    assert float(running(_one_term(1e-6), mask).per_category["optical"][0]) > 0.5  # today's


def test_category_mean_makes_l_k_independent_of_the_number_of_terms():
    mask = torch.ones(2, 1, 5, 6, 6)
    r = torch.full((2, 1, 3, 4, 4), 0.7)
    two = {"thermal": {t: r for t in ("heat_transport", "thermal_regularity")}}
    fluid_terms = ("continuity", "momentum", "pressure_regularity", "density_stability")
    four = {"fluid": {t: r.clone() for t in fluid_terms}}
    from pila.physics.residuals import RESIDUAL_TERMS

    assert set(two["thermal"]) == set(RESIDUAL_TERMS["thermal"])
    assert set(four["fluid"]) == set(RESIDUAL_TERMS["fluid"])
    for weighting in ("category_mean", "inverse_running_mean"):
        loss = ResidualLoss(weighting=weighting).train()
        out = loss({**two, **four}, mask).per_category
        ratio = float(out["fluid"][0] / out["thermal"][0])
        assert ratio == pytest.approx(1.0 if weighting == "category_mean" else 2.0, rel=1e-5)
    fixed_mean = ResidualLoss(weighting="category_mean").eval()
    torch.testing.assert_close(fixed_mean(four, mask).per_category["fluid"], torch.ones(2))


def test_unknown_weightings_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="grad_balanced"):
        ResidualLoss(weighting="learned")
    with pytest.raises(ValueError, match="freeze_steps"):
        ResidualLoss(weighting="frozen", freeze_steps=0)

"""Motion mask, physical mask, blending and recipe masks."""

from __future__ import annotations

import pytest
import torch

from pila.categories import CATEGORIES
from pila.physics import ops
from pila.physics.bank import pack_bank, slot_mask, slot_slice
from pila.physics.masks import (
    RECIPE_SLOTS,
    blend_masks,
    motion_mask,
    normalise_mask,
    physical_mask,
    recipe_masks,
)

B, T, H, W = 2, 6, 12, 14


def moving_blob(amplitude: float = 1.0) -> torch.Tensor:
    """A velocity field that is non-zero and changing only around (4, 5)."""
    t = torch.arange(T, dtype=torch.float32).reshape(1, 1, T, 1, 1)
    y = torch.arange(H, dtype=torch.float32).reshape(1, 1, 1, H, 1)
    x = torch.arange(W, dtype=torch.float32).reshape(1, 1, 1, 1, W)
    blob = torch.exp(-((x - 5) ** 2 + (y - 4) ** 2) / 4.0) * (1 + 0.5 * t)
    return amplitude * torch.cat([blob, -blob], dim=1)


def test_motion_mask_is_high_where_things_move_and_floored_elsewhere():
    v = moving_blob()
    x0 = torch.zeros(1, 16, T, H, W)
    mask = motion_mask(v, x0)
    assert mask.shape == (1, 1, T, H, W)
    assert float(mask.min()) == pytest.approx(0.08) and float(mask.max()) == 1.0
    assert float(mask[0, 0, :, 4, 5].min()) == 1.0  # the blob's centre
    torch.testing.assert_close(mask[0, 0, :, 11, 13], torch.full((T,), 0.08))  # far corner


def test_motion_mask_blends_its_three_cues_with_the_paper_weights():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(B, 2, T, H, W, generator=g)
    x0 = torch.randn(B, 16, T, H, W, generator=g)
    speed_change = ops.magnitude(ops.d_dt(v, boundary="same"))
    latent_change = ops.d_dt(x0, boundary="same").abs().mean(dim=1, keepdim=True)
    shear = ops.magnitude(ops.jacobian(v, boundary="same"))
    raw = 0.55 * speed_change + 0.25 * latent_change + 0.20 * shear
    scale = torch.quantile(raw.flatten(1), 0.9, dim=1).reshape(B, 1, 1, 1, 1)
    expected = (raw / (scale + 1e-6)).clamp(0.08, 1.0)
    torch.testing.assert_close(motion_mask(v, x0), expected)
    only_v = motion_mask(v, x0, weights=(1.0, 0.0, 0.0))
    torch.testing.assert_close(only_v, normalise_mask(speed_change))


def test_normalisation_is_per_sample_and_scale_free():
    v = moving_blob()
    both = torch.cat([v, 10 * v], dim=0)
    x0 = torch.zeros(2, 4, T, H, W)
    mask = motion_mask(both, x0)
    torch.testing.assert_close(mask[0], mask[1])
    # 90 % quantile: about a tenth of a random raw field reaches the clamp at 1
    raw = torch.rand(1, 1, 10, 20, 20, generator=torch.Generator().manual_seed(2))
    saturated = float((normalise_mask(raw) == 1.0).float().mean())
    assert 0.09 < saturated < 0.12


def test_static_input_gives_the_floor_everywhere():
    mask = motion_mask(torch.zeros(1, 2, T, H, W), torch.zeros(1, 16, T, H, W), floor=0.2)
    torch.testing.assert_close(mask, torch.full_like(mask, 0.2))


def test_masks_are_detached():
    v = moving_blob().requires_grad_()
    mask = motion_mask(v, torch.zeros(1, 16, T, H, W))
    assert not mask.requires_grad
    bank = torch.randn(1, 32, T, H, W, requires_grad=True)
    assert not physical_mask(bank, ("v",)).requires_grad


def test_physical_mask_reads_only_the_active_slots():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(B, 32, T, H, W, generator=g)
    mask = physical_mask(bank, ("v", "p"), quantile=0.9, floor=0.08)
    assert mask.shape == (B, 1, T, H, W)
    assert float(mask.min()) >= 0.08 and float(mask.max()) == 1.0
    changed = bank.clone()
    changed[:, slot_slice("w")] *= 100  # inactive
    torch.testing.assert_close(physical_mask(changed, ("v", "p")), mask)
    changed[:, slot_slice("p")] *= 100  # active
    assert not torch.allclose(physical_mask(changed, ("v", "p")), mask)
    on = slot_mask(("v", "p"), dtype=torch.bool)
    raw = bank[:, on].square().mean(dim=1, keepdim=True).sqrt()
    torch.testing.assert_close(mask, normalise_mask(raw))


def test_physical_mask_of_an_afe_style_bank_follows_the_active_field():
    blob = moving_blob()[:, :1]
    bank = pack_bank({"p": blob, "v": torch.zeros(1, 2, T, H, W)})
    mask = physical_mask(bank, ("p", "v"))
    assert float(mask[0, 0, -1, 4, 5]) == 1.0 and float(mask[0, 0, 0, 11, 13]) == pytest.approx(
        0.08
    )
    with pytest.raises(ValueError, match="at least one active slot"):
        physical_mask(bank, ())


def test_blend():
    a, b = torch.full((1, 1, 3, 3, 3), 0.2), torch.full((1, 1, 3, 3, 3), 0.6)
    torch.testing.assert_close(blend_masks(a, b, 0.0), a)
    torch.testing.assert_close(blend_masks(a, b, 1.0), b)
    torch.testing.assert_close(blend_masks(a, b, 0.25), torch.full_like(a, 0.3))
    torch.testing.assert_close(blend_masks(a, b, torch.tensor(0.5)), torch.full_like(a, 0.4))
    with pytest.raises(ValueError, match="alpha must lie in"):
        blend_masks(a, b, 1.5)
    with pytest.raises(ValueError, match="same shape"):
        blend_masks(a, torch.zeros(1, 1, 3, 3, 4), 0.5)


def test_recipe_masks():
    masks = recipe_masks(dtype=torch.float64)
    assert masks.shape == (8, 32) and masks.dtype == torch.float64
    for k, category in enumerate(CATEGORIES):
        torch.testing.assert_close(masks[k], slot_mask(RECIPE_SLOTS[category], dtype=torch.float64))
    fluid = masks[CATEGORIES.index("fluid")]
    assert fluid[4:12].sum() == 8 and fluid.sum() == 8  # v (4) + p (2) + rho (2)
    assert masks[CATEGORIES.index("optical")].sum() == 6  # w (4) + phi (2)


def test_bad_mask_arguments():
    v, x0 = torch.zeros(1, 2, T, H, W), torch.zeros(1, 16, T, H, W)
    with pytest.raises(ValueError, match="weights"):
        motion_mask(v, x0, weights=(0.5, -0.1, 0.6))
    with pytest.raises(ValueError, match="quantile"):
        motion_mask(v, x0, quantile=0.0)
    with pytest.raises(ValueError, match="floor"):
        motion_mask(v, x0, floor=1.5)
    with pytest.raises(ValueError, match="v_hat"):
        motion_mask(torch.zeros(1, 3, T, H, W), x0)
    with pytest.raises(ValueError, match="x0_hat"):
        motion_mask(v, torch.zeros(1, 16, T, H, W + 1))

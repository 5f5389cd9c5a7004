"""Spatial masks for the residual loss and recipe masks for the experts (pila-method.md §3, §5).

* Motion mask (bootstrap, paper App. B.3): where the latent video moves,

      raw = w_v·|∂t v̂| + w_x·mean_c |∂t x̂0_c| + w_g·|∇v̂|        (w = 0.55, 0.25, 0.20)
      m   = clamp(raw / q_0.9(raw), floor, 1)                   per sample, floor 0.08

  (weights and floor from App. B.3; the quantile's value was lost there, 0.9 is ours)

  with |·| the Euclidean norm over components (the 2-vector ∂t v̂, the 4-entry Jacobian
  ∇v̂) and q the per-sample quantile over (T, H, W).
* Physical mask: the same normalisation applied to the magnitude (root mean square over
  channels) of the active slots of the bank.
* Blend: ``(1 − α)·motion + α·physical``; stage C ramps α from 0 to 1 over its warm-up.
* Recipe masks M_k (Eq. 5): the bank channels expert k may update, which are the slots
  its residuals read.

The spatial masks are weights of the loss, not a path for gradients: they are returned
detached. Derivatives use ``boundary="same"`` so the masks keep the full (T, H, W) grid;
the residual loss crops them to the interior points itself.

Shapes: B batch, C channels, T latent frames, H, W latent height and width, E experts (8).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from pila.categories import CATEGORIES
from pila.physics import ops
from pila.physics.bank import BANK_CHANNELS, slot_mask

MOTION_WEIGHTS: tuple[float, float, float] = (0.55, 0.25, 0.20)
"""Weights of |∂t v̂|, |∂t x̂0| and |∇v̂| in the motion mask. [paper, App. B.3: 55 %, 25 %, 20 %]"""

MASK_QUANTILE = 0.9
"""Per-sample quantile that normalises a raw mask to about [0, 1]. [ours: App. B.3 says
"a per-sample quantile", its value was lost; 0.9 keeps the most active tenth at 1]"""

MASK_FLOOR = 0.08
"""Smallest mask value: static regions keep a little weight. [paper, App. B.3: "a floor of 0.08"]"""

RECIPE_SLOTS: dict[str, tuple[str, ...]] = {
    "rigid_body": ("u", "v", "strain", "stress"),
    "elastic": ("u", "v", "strain", "stress"),
    "fluid": ("v", "p", "rho"),
    "compressible_flow": ("v", "p", "rho"),
    "phase_change": ("phi", "T", "v", "rho"),
    "collision": ("u", "v", "J"),
    "thermal": ("T", "v"),
    "optical": ("w", "phi"),
}
"""Category → the bank slots its expert may update (the slots its residuals read)."""


def normalise_mask(
    raw: Tensor, *, quantile: float = MASK_QUANTILE, floor: float = MASK_FLOOR, eps: float = 1e-6
) -> Tensor:
    """Divide by the per-sample quantile and clamp to [floor, 1]: (B, 1, T, H, W) → same.

    Args:
        raw: non-negative raw mask (B, 1, T, H, W).
        quantile: quantile over (T, H, W) of each sample used as the scale, in (0, 1].
        floor: lower clamp, in [0, 1].
        eps: added to the quantile so a sample with almost no activity does not divide by 0.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"mask quantile must be in (0, 1], got {quantile}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"mask floor must be in [0, 1], got {floor}")
    if raw.ndim != 5 or raw.shape[1] != 1:
        raise ValueError(f"a raw mask must have shape (B, 1, T, H, W), got {tuple(raw.shape)}")
    flat = raw.detach().float().flatten(1)  # (B, T·H·W)
    scale = torch.quantile(flat, quantile, dim=1).reshape(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
    mask = (raw.detach().float() / (scale + eps)).clamp(min=floor, max=1.0)
    return mask.to(raw.dtype)


def motion_mask(
    v_hat: Tensor,
    x0_hat: Tensor,
    *,
    weights: tuple[float, float, float] = MOTION_WEIGHTS,
    quantile: float = MASK_QUANTILE,
    floor: float = MASK_FLOOR,
) -> Tensor:
    """Bootstrap motion mask from the kinematic anchor and the latent estimate.

    Args:
        v_hat: kinematic anchor v̂ (B, 2, T, H, W).
        x0_hat: latent estimate x̂0 (B, C, T, H, W) on the same grid.
        weights: weights of |∂t v̂|, channel-mean |∂t x̂0| and |∇v̂|.
        quantile: per-sample normalising quantile.
        floor: lower clamp of the mask.

    Returns:
        The mask (B, 1, T, H, W) in [floor, 1], detached.
    """
    if len(weights) != 3 or any(w < 0 for w in weights):
        raise ValueError(f"motion-mask weights must be three non-negative numbers, got {weights}")
    if v_hat.ndim != 5 or v_hat.shape[1] != 2:
        raise ValueError(f"v_hat must have shape (B, 2, T, H, W), got {tuple(v_hat.shape)}")
    if x0_hat.ndim != 5 or (x0_hat.shape[0], *x0_hat.shape[2:]) != (
        v_hat.shape[0],
        *v_hat.shape[2:],
    ):
        raise ValueError(
            f"x0_hat {tuple(x0_hat.shape)} must be (B, C, T, H, W) on the grid of v_hat "
            f"{tuple(v_hat.shape)}"
        )
    with torch.no_grad():
        w_v, w_x, w_g = weights
        speed_change = ops.magnitude(ops.d_dt(v_hat, boundary="same"))  # (B, 1, T, H, W)
        latent_change = ops.d_dt(x0_hat, boundary="same").abs().mean(dim=1, keepdim=True)
        shear = ops.magnitude(ops.jacobian(v_hat, boundary="same"))  # (B, 1, T, H, W)
        raw = w_v * speed_change + w_x * latent_change.to(v_hat.dtype) + w_g * shear
        return normalise_mask(raw, quantile=quantile, floor=floor)


def physical_mask(
    bank: Tensor,
    active_slots: Iterable[str],
    *,
    quantile: float = MASK_QUANTILE,
    floor: float = MASK_FLOOR,
) -> Tensor:
    """Physical mask from the active slots of the bank.

    Args:
        bank: attribute bank (B, 32, T, H, W).
        active_slots: slot names whose channels count (e.g. ``AFEOutput.active_slots``).
        quantile: per-sample normalising quantile.
        floor: lower clamp of the mask.

    Returns:
        The mask (B, 1, T, H, W) in [floor, 1], detached: the root mean square over the
        active channels, normalised like the motion mask.
    """
    if bank.ndim != 5 or bank.shape[1] != BANK_CHANNELS:
        raise ValueError(
            f"bank must have shape (B, {BANK_CHANNELS}, T, H, W), got {tuple(bank.shape)}"
        )
    channels = slot_mask(tuple(active_slots), device=bank.device, dtype=torch.bool)
    if not bool(channels.any()):
        raise ValueError("physical_mask needs at least one active slot")
    with torch.no_grad():
        active = bank[:, channels]  # (B, C_active, T, H, W)
        raw = active.float().square().mean(dim=1, keepdim=True).sqrt()  # (B, 1, T, H, W)
        return normalise_mask(raw, quantile=quantile, floor=floor).to(bank.dtype)


def blend_masks(motion: Tensor, physical: Tensor, alpha: float | Tensor) -> Tensor:
    """(1 − α)·motion + α·physical, α ∈ [0, 1] (a float, or a tensor broadcastable to the masks)."""
    if motion.shape != physical.shape:
        raise ValueError(
            f"masks to blend must have the same shape, got {tuple(motion.shape)} and "
            f"{tuple(physical.shape)}"
        )
    if isinstance(alpha, Tensor):
        if bool(((alpha < 0) | (alpha > 1)).any()):
            raise ValueError("blend weight alpha must lie in [0, 1]")
    elif not 0.0 <= alpha <= 1.0:
        raise ValueError(f"blend weight alpha must lie in [0, 1], got {alpha}")
    return torch.lerp(motion, physical, alpha)


def recipe_masks(
    *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Recipe masks M_k (E, 32), rows in ``CATEGORIES`` order, 1 on the slots of RECIPE_SLOTS."""
    return torch.stack(
        [slot_mask(RECIPE_SLOTS[cat], device=device, dtype=dtype) for cat in CATEGORIES]
    )  # (E, 32)

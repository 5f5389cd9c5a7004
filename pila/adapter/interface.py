"""What passes into and out of ``PILAAdapter``: the latent inputs' check, the bank
encoding of stages A and B, and the full forward's output.

Legend: B batch, C latent channels (16), T latent frames, H, W latent height and width,
E experts (8), K top-k, Dc condition width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pila.adapter.router import Routing


def check_latents(x_t: Tensor, sigma: Tensor | float, v_theta: Tensor, channels: int) -> Tensor:
    """Validate the latent inputs; return σ as a (B,) tensor on x_t's device."""
    if x_t.ndim != 5 or x_t.shape[1] != channels:
        raise ValueError(
            f"x_t must have shape (B, {channels}, T, H, W), got {tuple(x_t.shape)}"
        )
    if v_theta.shape != x_t.shape:
        raise ValueError(
            f"v_theta {tuple(v_theta.shape)} must have the shape of x_t {tuple(x_t.shape)}"
        )
    batch = x_t.shape[0]
    sigma = torch.as_tensor(sigma, device=x_t.device, dtype=torch.float32)
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    if sigma.shape != (batch,):
        raise ValueError(
            f"sigma must be a scalar or have shape ({batch},), got {tuple(sigma.shape)}"
        )
    return sigma


@dataclass
class BankEncoding:
    """Steps (1)–(3) alone: what stages A and B train.

    Attributes:
        x0_hat: latent estimate x̂0 (B, C, T, H, W).
        h: physical feature (B, hidden, T, H, W).
        scaffold: pre-AFE scaffold S (B, 32, T, H, W).
        bank: attribute bank P (B, 32, T, H, W).
        fields: slot name → component field (B, K, T, H, W) read from the bank.
        v_hat: kinematic anchor v̂ (B, 2, T, H, W).
        descriptors: AFE's kinematic descriptors (empty without AFE).
        active_slots: slots active in the recovery phase.
    """

    x0_hat: Tensor
    h: Tensor
    scaffold: Tensor
    bank: Tensor
    fields: dict[str, Tensor]
    v_hat: Tensor
    descriptors: dict[str, Tensor]
    active_slots: tuple[str, ...]


@dataclass
class AdapterOutput:
    """Result of :meth:`PILAAdapter.forward`.

    Attributes:
        v_pila: corrected velocity v_θ + g(σ)·Δv (B, C, T, H, W), in v_θ's dtype.
        correction: g(σ)·Δv (B, C, T, H, W).
        delta_v: the ungated decoder output Δv (B, C, T, H, W).
        cond: the condition vector c (B, Dc).
        x0_hat: the latent estimate x̂0 (B, C, T, H, W).
        residual_loss: scalar L_res averaged over the batch (0 when not computed).
        bank: P (B, 32, T, H, W); None for the plain adapter.
        refined_bank: P̃ (B, 32, T, H, W); None for the plain adapter.
        routing: the routing decision (indices (B, K), dense weights (B, E), logits);
            None for the plain adapter.
        expert_updates: ΔP (B, K, 32, T, H, W) aligned with ``routing.indices``; None
            without the MoE operator or for the plain adapter.
        per_expert_loss: category → L_k (B,), detached, zero where the expert was not
            selected and labelled (see ``expert_active``).
        expert_active: (B, E) bool, S∩Y; None when residuals were not computed.
        per_term: (category, term) → detached batch mean of m·r².
        mask: the spatial mask m (B, 1, T, H, W) of Eq. 6; None when residuals were not
            computed.
        v_hat: kinematic anchor v̂ (B, 2, T, H, W); None for the plain adapter.
    """

    v_pila: Tensor
    correction: Tensor
    delta_v: Tensor
    cond: Tensor
    x0_hat: Tensor
    residual_loss: Tensor
    bank: Tensor | None = None
    refined_bank: Tensor | None = None
    routing: Routing | None = None
    expert_updates: Tensor | None = None
    per_expert_loss: dict[str, Tensor] = field(default_factory=dict)
    expert_active: Tensor | None = None
    per_term: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    mask: Tensor | None = None
    v_hat: Tensor | None = None

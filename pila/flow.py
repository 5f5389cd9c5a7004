"""Flow-matching math of the frozen Wan generator (pila-method.md, "Notation").

Wan 2.1/2.2 are rectified-flow generators: a clean latent ``x0`` and Gaussian noise ``ε``
are joined by the straight path ``x_t = (1 − σ)·x0 + σ·ε`` and the network predicts the
velocity ``v = ε − x0`` along it. Diffusers calls the transformer with ``timestep =
1000·σ`` (after the scheduler's shift) and text embeddings padded to a fixed length
(:func:`pad_text`).

Shapes: B batch, C latent channels (16), T latent frames, H, W latent height and width,
L text tokens, D text width.
Every function here is pure; σ is a (B,) tensor unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

TIMESTEP_SCALE = 1000.0
"""Diffusers' Wan transformers take ``timestep = TIMESTEP_SCALE · σ``."""


def _expand(sigma: Tensor, like: Tensor) -> Tensor:
    """σ (B,) → (B, 1, 1, …) broadcastable against ``like`` (B, …)."""
    if sigma.ndim == 0:
        return sigma
    if sigma.shape[0] != like.shape[0]:
        raise ValueError(f"sigma has {sigma.shape[0]} entries but the batch has {like.shape[0]}")
    return sigma.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def shift_sigma(sigma: Tensor, shift: float) -> Tensor:
    """Resolution shift of the flow schedule: ``σ' = s·σ / (1 + (s − 1)·σ)``.

    ``s = 1`` is the identity; ``s > 1`` moves mass towards high noise. The map is
    monotone on [0, 1] and fixes 0 and 1, so shifting a range's end points gives the
    shifted range.
    """
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def unshift_sigma(sigma: Tensor, shift: float) -> Tensor:
    """Inverse of :func:`shift_sigma`: ``σ = σ' / (s − (s − 1)·σ')``."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return sigma / (shift - (shift - 1.0) * sigma)


@dataclass(frozen=True)
class SigmaSampler:
    """Training-time σ: uniform, then shifted, restricted to ``[sigma_min, sigma_max]``.

    The range is a range of the *shifted* σ (the σ the backbone sees). Sampling draws
    ``u ~ U(a, b)`` with ``a, b`` the unshifted end points and returns ``shift(u)``, which is
    the shifted-uniform distribution conditioned on the range (the shift is monotone).

    Args:
        shift: schedule shift ``s``. [ours: the paper does not state it; 3.0 is
            diffusers' value for Wan at 480p (5.0 at 720p)]
        sigma_min: lower end of the stage's σ range. [ours: the full range; the
            paper's stage ranges were lost (App. B.2)]
        sigma_max: upper end of the stage's σ range. [ours: as ``sigma_min``]
    """

    shift: float = 3.0
    sigma_min: float = 0.0
    sigma_max: float = 1.0

    def __post_init__(self) -> None:
        if self.shift <= 0:
            raise ValueError(f"SigmaSampler.shift must be positive, got {self.shift}")
        if not 0.0 <= self.sigma_min < self.sigma_max <= 1.0:
            raise ValueError(
                "SigmaSampler needs 0 <= sigma_min < sigma_max <= 1, "
                f"got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
            )

    def with_range(self, sigma_min: float, sigma_max: float) -> SigmaSampler:
        """The same sampler on another σ range (stage A widens it in phases)."""
        return SigmaSampler(self.shift, sigma_min, sigma_max)

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw (B,) σ values in float32."""
        bounds = torch.tensor([self.sigma_min, self.sigma_max], dtype=torch.float64)
        lo, hi = unshift_sigma(bounds, self.shift).tolist()
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        sigma = shift_sigma(lo + (hi - lo) * u, self.shift)
        return sigma.clamp_(self.sigma_min, self.sigma_max).to(torch.float32).to(device)


def noisy_latent(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """``x_t = (1 − σ)·x0 + σ·ε``: (B, C, T, H, W)."""
    s = _expand(sigma, x0)
    return (1.0 - s) * x0 + s * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """Flow-matching target ``v* = ε − x0``: (B, C, T, H, W)."""
    return noise - x0


def estimate_x0(x_t: Tensor, sigma: Tensor, velocity: Tensor) -> Tensor:
    """Latent estimate fed to the physics path, Eq. (1): ``x̂0 = x_t − σ·v``."""
    return x_t - _expand(sigma, x_t) * velocity


def sigma_to_timestep(sigma: Tensor) -> Tensor:
    """Diffusers' Wan timestep for σ: ``1000·σ``."""
    return sigma * TIMESTEP_SCALE


def sigma_gate(sigma: Tensor, g_min: float = 0.1) -> Tensor:
    """σ-gate of Eq. (10): ``g(σ) = g_min + (1 − g_min)·(1 − σ)²``.

    Full strength near the clean end (σ → 0), ``g_min`` at pure noise.
    """
    if not 0.0 <= g_min <= 1.0:
        raise ValueError(f"g_min must lie in [0, 1], got {g_min}")
    return g_min + (1.0 - g_min) * (1.0 - sigma) ** 2


def apply_correction(
    v_theta: Tensor, sigma: Tensor, delta_v: Tensor, g_min: float = 0.1
) -> tuple[Tensor, Tensor]:
    """Eq. (10): ``v_PILA = v_θ + g(σ)·Δv`` with σ (B,) broadcast over (B, C, T, H, W).

    Returns:
        ``(v_PILA, g(σ)·Δv)``: the corrected velocity in v_θ's dtype and the gated
        correction in Δv's dtype, both (B, C, T, H, W).
    """
    correction = _expand(sigma_gate(sigma, g_min), delta_v) * delta_v  # (B, C, T, H, W)
    return v_theta + correction.to(v_theta.dtype), correction


def pad_text(embeds: Tensor, length: int) -> Tensor:
    """Zero-pad (or refuse to truncate) text embeddings (B, L, D) to (B, length, D).

    Wan's transformer attends to every text position, padding included, and
    ``WanPipeline`` always feeds ``max_sequence_length`` positions; training pads the same
    way so v_θ sees what it sees at sampling time.
    """
    if embeds.shape[1] > length:
        raise ValueError(
            f"prompt embeddings have {embeds.shape[1]} tokens but text_length is {length}; "
            "raise text_length or re-run `pila prepare` with a shorter --max-sequence-length"
        )
    return F.pad(embeds, (0, 0, 0, length - embeds.shape[1]))

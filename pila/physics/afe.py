"""Anchored field estimation (AFE): encoder feature and scaffold → attribute bank.

pila-method.md §1 (paper Sec. 3.1, App. A.1, Eqs. 14–20), observable first:

    (14) v̂ = H_v(S_v)                                  kinematic anchor, 2 ch
    (15) D = [∇v̂, div v̂, curl v̂, ∂t v̂]                  kinematic descriptors
    (16) ε = ½(∇v̂ + ∇v̂ᵀ)                               strain-like descriptor (xx, yy, xy)
    (17) p = H_p([h, v̂, |v̂|, div v̂, curl v̂]) − mean_sample(·)
    (18) ρ = softplus(H_ρ([h, v̂, |v̂|, div v̂, curl v̂])) + ρ_min
    (19) u_{t_m} = 0,  u_{t+1} = u_t + ½(v̂_t + v̂_{t+1}),  u_{t−1} = u_t − ½(v̂_t + v̂_{t−1})
    (20) σ_s = −κ_p·p̃·I + κ_ε·ε,   p̃ = p / (std_sample(p) + eps)

then the weakly observed slots under the only-u recovery policy, one per phase:

    phase 0 (core)  u, v, p, ρ, ε, σ_s
    phase 1         + φ  from motion (v̂, |v̂|), density and displacement
    phase 2         + T  from motion, density and phase φ
    phase 3         + J  from ∂t v̂, ε and σ_s (kinematic descriptors and closure proxies)
    phase 4         + w  from the physical feature h and φ

Slots not active in the current phase are exact zeros in the bank and in the fields,
and their constructors are not evaluated (so their parameters get no gradient before
their phase: distributed data parallel needs ``find_unused_parameters`` in stage B).

Choices where the paper leaves room (each a field of :class:`AFEConfig` or written here):

* H_v is a 1×1×1 convolution of the 4-channel velocity scaffold slot, initialised to the
  slot readout (the average of the repeated x and y channels), so a fresh anchor equals
  :func:`pila.physics.bank.read_slot` of the scaffold.
* The quantity heads H_p, H_ρ, H_φ, H_T, H_J, H_w are pointwise two-layer MLPs
  (1×1×1 convolutions, width ``head_width``, SiLU). Spatial context comes from the
  encoder feature h and the finite-difference descriptors.
* Descriptors and strain use ``boundary="same"`` differences (one-sided at the edges of
  the grid) so every slot keeps the full (T, H, W) grid.
* t_m = T // 2 (frame 10 of 21); std_sample is the population standard deviation over
  (C, T, H, W) of each sample.

The two AFE ablations of the paper (App. C.1, Table 9), as we read them:

* ``kinematic_anchor=False`` ("w/o Kinematic Anchor": "removes the motion-derived
  velocity proxy used as the primary AFE construction anchor"). No motion-derived proxy
  grounds the construction: the velocity slot is the scaffold's own velocity slot read
  back (no anchor head H_v); the constructors of p, ρ, φ, T and J receive zeros in place
  of their kinematic inputs (v̂, |v̂|, div v̂, curl v̂, ∂t v̂), so they are built from h
  and the other proxies only; displacement and strain are the scaffold's own u and
  strain slots, not the integral and symmetric gradient of v̂. Stress keeps the closure
  (Eq. 20) on that strain. The heads keep their input widths, so both variants have the
  same parameters apart from H_v.
* ``staged_recovery=False`` ("w/o Staged Recovery": "a non-staged field recovery path
  rather than the observable-first AFE recovery schedule"). All ten slots are active in
  every phase: the weakly observed slots are recovered jointly with the core from the
  start instead of being switched on one phase at a time. The ``phase`` argument is
  still validated but no longer changes the active set.

Shapes: B batch, C channels, T latent frames, H, W latent height and width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pila.physics import ops
from pila.physics.bank import (
    BANK_CHANNELS,
    SLOT_COMPONENTS,
    SLOT_NAMES,
    SLOT_WIDTHS,
    pack_bank,
    read_slot,
    slot_slice,
)

RECOVERY_PHASES: tuple[tuple[str, ...], ...] = (
    ("u", "v", "p", "rho", "strain", "stress"),
    ("phi",),
    ("T",),
    ("J",),
    ("w",),
)
"""Slots each recovery phase switches on (phase 0 is the core). [paper, App. A.1 (Table 5)
and App. B.3: core, then φ, T, J, w, each built from the ones before]"""

NUM_PHASES = len(RECOVERY_PHASES)
"""Recovery phases 0 … 4."""


def active_slots(phase: int, *, staged_recovery: bool = True) -> tuple[str, ...]:
    """Slots active in ``phase`` (0 … 4), in bank order; all ten without staged recovery."""
    if isinstance(phase, bool) or not isinstance(phase, int) or not 0 <= phase < NUM_PHASES:
        raise ValueError(
            f"recovery phase must be an integer in 0 … {NUM_PHASES - 1} "
            f"(core, +phi, +T, +J, +w), got {phase!r}"
        )
    if not staged_recovery:
        return SLOT_NAMES
    switched_on = {name for names in RECOVERY_PHASES[: phase + 1] for name in names}
    return tuple(name for name in SLOT_NAMES if name in switched_on)


@dataclass
class AFEConfig:
    """Configuration of :class:`AnchoredFieldEstimator`.

    Each entry ends with its provenance: ``[paper, <where>]`` or ``[ours: <why>]``.

    Args:
        rho_min: density floor ρ_min of Eq. 18. [ours: App. A.1 says "a small floor",
            its value was lost; 1e-3 keeps ρ positive without shifting O(1) densities]
        kappa_p: pressure scale κ_p of the stress closure (Eq. 20), fixed. [ours: App.
            A.1 calls κ_p a fixed scale factor, its value was lost; 1 with p̃ normalised]
        kappa_eps: strain scale κ_ε of the stress closure (Eq. 20), fixed. [ours: value
            lost, as κ_p; 1]
        std_eps: added to std_sample(p) when normalising pressure in Eq. 20. [ours: only
            guards a division by zero]
        head_width: hidden width of the pointwise quantity heads. [ours: half the hidden
            width; the heads are pointwise and cheap]
        kinematic_anchor: build the bank from the motion-derived anchor v̂ (False is the
            "w/o kinematic anchor" ablation, see the module docstring).
            [paper, Table 9: full AFE]
        staged_recovery: switch the weakly observed slots on phase by phase (False is
            the "w/o staged recovery" ablation: all slots active at once).
            [paper, Table 9: full AFE]
    """

    rho_min: float = 1e-3
    kappa_p: float = 1.0
    kappa_eps: float = 1.0
    std_eps: float = 1e-6
    head_width: int = 64
    kinematic_anchor: bool = True
    staged_recovery: bool = True

    def __post_init__(self) -> None:
        if not self.rho_min > 0:
            raise ValueError(f"AFEConfig.rho_min must be positive, got {self.rho_min}")
        if not self.std_eps > 0:
            raise ValueError(f"AFEConfig.std_eps must be positive, got {self.std_eps}")
        if not self.head_width >= 1:
            raise ValueError(f"AFEConfig.head_width must be >= 1, got {self.head_width}")
        for name in ("kappa_p", "kappa_eps"):
            value = getattr(self, name)
            if not value == value or abs(value) == float("inf"):
                raise ValueError(f"AFEConfig.{name} must be finite, got {value}")


@dataclass
class AFEOutput:
    """Result of :class:`AnchoredFieldEstimator`.

    Attributes:
        bank: the attribute bank P (B, 32, T, H, W) in ``BANK_SLOTS`` order.
        fields: all ten proxies in component form (slot name → (B, K, T, H, W)); the
            inactive ones are zeros. This is the ``fields`` argument of the residuals.
        v_hat: the kinematic anchor v̂ (B, 2, T, H, W).
        descriptors: ``grad_v`` (B, 4, …) as (∂x v̂_x, ∂y v̂_x, ∂x v̂_y, ∂y v̂_y),
            ``div_v`` (B, 1, …), ``curl_v`` (B, 1, …), ``dt_v`` (B, 2, …), ``speed``
            |v̂| (B, 1, …), all on the full grid.
        active_slots: slots active in this phase, in bank order.
    """

    bank: Tensor
    fields: dict[str, Tensor]
    v_hat: Tensor
    descriptors: dict[str, Tensor]
    active_slots: tuple[str, ...]


# Field construction: pure functions ---------------------------------------------------------------


def kinematic_descriptors(v_hat: Tensor) -> dict[str, Tensor]:
    """Eqs. 15–16 on the full grid: ∇v̂, div v̂, curl v̂, ∂t v̂, |v̂| and the strain ε.

    Args:
        v_hat: kinematic anchor (B, 2, T, H, W), T, H, W ≥ 2.

    Returns:
        ``grad_v`` (B, 4, T, H, W), ``div_v``, ``curl_v``, ``speed`` (B, 1, T, H, W),
        ``dt_v`` (B, 2, T, H, W) and ``strain`` (B, 3, T, H, W) as (xx, yy, xy).
    """
    vx = ops.d_dx(v_hat, boundary="same")  # (B, 2, T, H, W)
    vy = ops.d_dy(v_hat, boundary="same")  # (B, 2, T, H, W)
    return {
        "grad_v": ops.gradient_from_partials(vx, vy),
        "div_v": ops.divergence_from_partials(vx, vy),
        "curl_v": ops.curl_from_partials(vx, vy),
        "dt_v": ops.d_dt(v_hat, boundary="same"),
        "speed": ops.magnitude(v_hat),
        "strain": ops.sym_gradient_from_partials(vx, vy),
    }


def centre_per_sample(x: Tensor) -> Tensor:
    """x − mean over (C, T, H, W) of each sample (Eq. 17): (B, C, T, H, W) → same."""
    return x - x.mean(dim=(1, 2, 3, 4), keepdim=True)


def density_from_logits(logits: Tensor, rho_min: float) -> Tensor:
    """softplus(logits) + ρ_min (Eq. 18): a density ≥ ρ_min."""
    return F.softplus(logits) + rho_min


def midpoint_displacement(v_hat: Tensor, middle: int | None = None) -> Tensor:
    """Displacement by midpoint (trapezoidal) integration of v̂ from frame t_m (Eq. 19).

    u_{t_m} = 0 and u_{t+1} − u_t = ½(v̂_t + v̂_{t+1}) for every t, forward and backward,
    which is u_t = U_t − U_{t_m} with U the cumulative sum of the increments.

    Args:
        v_hat: velocity (B, 2, T, H, W) in cells per latent frame.
        middle: t_m; ``None`` for T // 2.

    Returns:
        Displacement u (B, 2, T, H, W).
    """
    frames = v_hat.shape[2]
    middle = frames // 2 if middle is None else middle
    if not 0 <= middle < frames:
        raise ValueError(f"middle frame {middle} is outside 0 … {frames - 1}")
    increments = 0.5 * (v_hat[:, :, 1:] + v_hat[:, :, :-1])  # (B, 2, T−1, H, W)
    cumulative = torch.cat(
        [torch.zeros_like(v_hat[:, :, :1]), increments.cumsum(dim=2)], dim=2
    )  # (B, 2, T, H, W)
    return cumulative - cumulative[:, :, middle : middle + 1]


def stress_closure(
    p: Tensor, strain: Tensor, *, kappa_p: float, kappa_eps: float, eps: float
) -> Tensor:
    """σ_s = −κ_p·p̃·I + κ_ε·ε with p̃ = p / (std_sample(p) + eps) (Eq. 20).

    Args:
        p: centred pressure (B, 1, T, H, W).
        strain: ε (B, 3, T, H, W) as (xx, yy, xy).

    Returns:
        Stress (B, 3, T, H, W) as (xx, yy, xy).
    """
    std = p.std(dim=(1, 2, 3, 4), keepdim=True, correction=0)  # (B, 1, 1, 1, 1)
    return kappa_eps * strain - kappa_p * pressure_identity(p, std, eps)


def pressure_identity(p: Tensor, std: Tensor, eps: float) -> Tensor:
    """p̃·I as (xx, yy, xy) with p̃ = p / (std + eps).

    Shapes: p (B, 1, …), std (B, 1, 1, 1, 1) → (B, 3, …).
    """
    p_tilde = p / (std + eps)
    return torch.cat([p_tilde, p_tilde, torch.zeros_like(p_tilde)], dim=1)


# Module -------------------------------------------------------------------------------------------


class PointwiseHead(nn.Sequential):
    """Two-layer pointwise MLP on (B, C_in, T, H, W) → (B, C_out, T, H, W)."""

    def __init__(self, in_channels: int, width: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, width, kernel_size=1),
            nn.SiLU(),
            nn.Conv3d(width, out_channels, kernel_size=1),
        )


def _slot_readout_conv(name: str) -> nn.Conv3d:
    """A 1×1×1 convolution initialised to :func:`read_slot` of a repeated slot."""
    width, comps = SLOT_WIDTHS[name], SLOT_COMPONENTS[name]
    conv = nn.Conv3d(width, comps, kernel_size=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for channel in range(width):
            conv.weight[channel % comps, channel] = comps / width
    return conv


class AnchoredFieldEstimator(nn.Module):
    """AFE (Eqs. 14–20 and the phased constructors): (h, scaffold, phase) → bank.

    Args:
        hidden: channel width of the encoder feature h (128 in the paper).
        config: :class:`AFEConfig`.
    """

    KINEMATIC_INPUTS = 5
    """v̂ (2), |v̂|, div v̂, curl v̂: kinematic inputs of the pressure and density heads."""

    def __init__(self, hidden: int, config: AFEConfig | None = None) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden width must be >= 1, got {hidden}")
        self.hidden = hidden
        self.config = config = config if config is not None else AFEConfig()
        width = config.head_width
        kin = self.KINEMATIC_INPUTS
        self.anchor_head = _slot_readout_conv("v") if config.kinematic_anchor else None
        self.pressure_head = PointwiseHead(hidden + kin, width, 1)
        self.density_head = PointwiseHead(hidden + kin, width, 1)
        self.phase_head = PointwiseHead(3 + 1 + 2, width, 1)  # motion, ρ, u
        self.temperature_head = PointwiseHead(3 + 1 + 1, width, 1)  # motion, ρ, φ
        self.impulse_head = PointwiseHead(2 + 3 + 3, width, 2)  # ∂t v̂, ε, σ_s
        self.wave_head = PointwiseHead(hidden + 1, width, 1)  # h, φ

    def _check_inputs(self, h: Tensor, scaffold: Tensor) -> None:
        if h.ndim != 5 or h.shape[1] != self.hidden:
            raise ValueError(f"h must have shape (B, {self.hidden}, T, H, W), got {tuple(h.shape)}")
        if scaffold.ndim != 5 or scaffold.shape[1] != BANK_CHANNELS:
            raise ValueError(
                f"scaffold must have shape (B, {BANK_CHANNELS}, T, H, W), got "
                f"{tuple(scaffold.shape)}"
            )
        if (h.shape[0], *h.shape[2:]) != (scaffold.shape[0], *scaffold.shape[2:]):
            raise ValueError(
                f"h {tuple(h.shape)} and scaffold {tuple(scaffold.shape)} must share (B, T, H, W)"
            )
        if min(h.shape[2:]) < 2:
            raise ValueError(
                "AFE differentiates the anchor in t, y and x, which needs at least 2 points "
                f"along T, H and W; got (T, H, W) = {tuple(h.shape[2:])}"
            )

    def forward(self, h: Tensor, scaffold: Tensor, phase: int) -> AFEOutput:
        """Build the bank.

        Args:
            h: encoder feature (B, hidden, T, H, W).
            scaffold: pre-AFE slot scaffold S (B, 32, T, H, W).
            phase: recovery phase 0 … 4 (core, +φ, +T, +J, +w).

        Returns:
            :class:`AFEOutput` with the bank (B, 32, T, H, W) and the fields.
        """
        cfg = self.config
        self._check_inputs(h, scaffold)
        active = active_slots(phase, staged_recovery=cfg.staged_recovery)
        anchored = cfg.kinematic_anchor

        # 1. kinematic anchor (Eq. 14)
        if self.anchor_head is not None:
            v_hat = self.anchor_head(scaffold[:, slot_slice("v")])  # (B, 2, T, H, W)
        else:
            v_hat = read_slot(scaffold, "v")  # (B, 2, T, H, W)

        # 2. kinematic descriptors and strain (Eqs. 15–16)
        descriptors = kinematic_descriptors(v_hat)
        derived_strain = descriptors.pop("strain")
        strain = derived_strain if anchored else read_slot(scaffold, "strain")
        kinematic = torch.cat(
            [v_hat, descriptors["speed"], descriptors["div_v"], descriptors["curl_v"]], dim=1
        )  # (B, 5, T, H, W)
        if not anchored:
            kinematic = torch.zeros_like(kinematic)

        # 3. pressure, centred per sample, and density with a floor (Eqs. 17–18)
        context = torch.cat([h, kinematic.to(h.dtype)], dim=1)  # (B, hidden + 5, T, H, W)
        p = centre_per_sample(self.pressure_head(context))  # (B, 1, T, H, W)
        rho = density_from_logits(self.density_head(context), cfg.rho_min)  # (B, 1, T, H, W)

        # 4. displacement by midpoint integration from the middle frame (Eq. 19)
        u = midpoint_displacement(v_hat) if anchored else read_slot(scaffold, "u")

        # 5. stress closure (Eq. 20)
        stress = stress_closure(
            p, strain, kappa_p=cfg.kappa_p, kappa_eps=cfg.kappa_eps, eps=cfg.std_eps
        )  # (B, 3, T, H, W)

        fields: dict[str, Tensor] = {
            "u": u,
            "v": v_hat,
            "p": p,
            "rho": rho,
            "strain": strain,
            "stress": stress,
        }

        # 6. weakly observed slots, switched on by phase (only-u recovery policy)
        motion = kinematic[:, :3]  # v̂ and |v̂| (zeros without the anchor), (B, 3, T, H, W)
        if "phi" in active:
            fields["phi"] = self.phase_head(torch.cat([motion, rho, u], dim=1))
        if "T" in active:
            fields["T"] = self.temperature_head(torch.cat([motion, rho, fields["phi"]], dim=1))
        if "J" in active:
            dt_v = descriptors["dt_v"] if anchored else torch.zeros_like(v_hat)
            fields["J"] = self.impulse_head(torch.cat([dt_v, strain, stress], dim=1))
        if "w" in active:
            fields["w"] = self.wave_head(torch.cat([h, fields["phi"].to(h.dtype)], dim=1))

        # 7. inactive slots are exact zeros; repack the fixed 32-channel contract
        batch, _, frames, height, width = v_hat.shape
        for name in SLOT_NAMES:
            if name not in active:
                fields[name] = v_hat.new_zeros(batch, SLOT_COMPONENTS[name], frames, height, width)
        fields = {name: fields[name] for name in SLOT_NAMES}
        bank = pack_bank(fields)  # (B, 32, T, H, W)
        return AFEOutput(
            bank=bank, fields=fields, v_hat=v_hat, descriptors=descriptors, active_slots=active
        )

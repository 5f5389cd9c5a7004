"""``PILAAdapter``: the trainable adapter inside the frozen flow-matching dynamics (Sec. 3.1–3.3).

One denoising step, as in the paper; each step is numbered by its equation, and
:meth:`PILAAdapter.forward` carries the same numbers:

    (1)   x̂0 = x_t − σ·v_θ                         latent estimate
          c  = C(text, y, σ)                       condition vector (no equation number)
    (2)   h  = E(x̂0),  S = H_scaffold(h)           physical feature and scaffold (and Eq. 13)
    (3)   P  = AFE(h, S)                           attribute bank (32 channels)
    (4)   S, π = LPMER(c, y)                       routing (detailed in Eq. 21–23)
    (5)   ΔP_k = M_k ⊙ O_k(P, c)                   masked operator experts
    (6–7) L_res over S∩Y on P + ΔP_k               routed residual objective
    (8)   P̃ = P + Σ_k π_k ΔP_k                     refined bank
    (9)   Δv = D([P̃, c, v_θ])                      attribute-to-flow decoder
    (10)  v_PILA = v_θ + g(σ)·Δv                   σ-gated correction

Step (10) is :func:`pila.flow.apply_correction`. The backbone velocity v_θ is detached on
entry: no gradient reaches the backbone.

Legend: B batch, C latent channels (16), P bank channels (32), T latent frames, H, W
latent height and width, E experts (8), K top-k, D text width, Dc condition width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pila.adapter.condition import AdapterCondition, ConditionEncoder
from pila.adapter.config import AdapterConfig
from pila.adapter.decoder import FlowDecoder
from pila.adapter.encoder import PhysicalEncoder, ScaffoldHead
from pila.adapter.experts import OperatorExperts
from pila.adapter.interface import AdapterOutput, BankEncoding, check_latents
from pila.adapter.layers import conv3d, count_parameters
from pila.adapter.objective import routed_residual_objective
from pila.adapter.plain import PlainAdapterBody, matched_plain_width
from pila.adapter.pretrained import PretrainedMixin
from pila.adapter.router import LPMERRouter, dense_routing
from pila.flow import apply_correction, estimate_x0
from pila.physics.afe import AnchoredFieldEstimator, active_slots
from pila.physics.bank import SLOT_NAMES, unpack_bank
from pila.physics.fused import ResidualPass
from pila.physics.loss import ResidualLoss
from pila.physics.masks import blend_masks, motion_mask, physical_mask, recipe_masks

PARAMETER_GROUPS: tuple[str, ...] = (
    "encoder",
    "anchor",
    "afe",
    "condition",
    "router",
    "experts",
    "decoder",
)
"""Names of :meth:`PILAAdapter.parameter_groups`: E + scaffold head, the kinematic-anchor
head H_v, the other AFE constructors, the condition encoder, the router, the experts and
the decoder D."""


def plain_width_for(config: AdapterConfig) -> int:
    """Width of the plain adapter: ``config.plain_hidden`` or the capacity-matched width."""
    if config.plain_hidden is not None:
        return config.plain_hidden
    full = config.replace(plain_adapter=False)
    with torch.device("meta"):
        target = count_parameters(PILAAdapter(full)) - count_parameters(
            ConditionEncoder(config.text_dim, config.cond_dim, config.sigma_embed_dim)
        )
    return matched_plain_width(target, **_plain_kwargs(config))


def _plain_kwargs(config: AdapterConfig) -> dict[str, int]:
    return {
        "latent_channels": config.latent_channels,
        "cond_dim": config.cond_dim,
        "encoder_depth": config.encoder_depth,
        "decoder_depth": config.decoder_depth,
        "kernel_size": config.kernel_size,
        "norm_groups": config.norm_groups,
    }


class PILAAdapter(nn.Module, PretrainedMixin):
    """The PILA adapter: encoder, AFE bank, condition encoder, LPMER router, experts, decoder.

    In a LightningCLI YAML the config is nested under ``init_args``::

        class_path: pila.adapter.PILAAdapter
        init_args:
          config: {hidden: 128, top_k: 4, afe: {staged_recovery: true}}

    Args:
        config: every size, constant and ablation switch (:class:`AdapterConfig`);
            ``None`` for the paper's defaults.

    Attributes:
        residual_pass: how training computes the routed residual objective; eager by
            default, ``ResidualPass(compile=True)`` fuses it with ``torch.compile``
            (set by ``PILAModule(compile_residuals=True)``).
    """

    def __init__(self, config: AdapterConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config if config is not None else AdapterConfig()
        self.condition = ConditionEncoder(
            cfg.text_dim, cfg.cond_dim, cfg.sigma_embed_dim, cfg.num_experts
        )
        self.plain: PlainAdapterBody | None = None
        self.encoder: PhysicalEncoder | None = None
        self.scaffold: ScaffoldHead | None = None
        self.afe: AnchoredFieldEstimator | None = None
        self.router: LPMERRouter | None = None
        self.experts: OperatorExperts | None = None
        self.decoder: FlowDecoder | None = None
        self.residual_loss: ResidualLoss | None = None
        # How the residual objective runs (eager or compiled); an execution choice of the
        # training run, not part of the adapter's config or weights.
        self.residual_pass = ResidualPass()
        if cfg.plain_adapter:
            self.plain = PlainAdapterBody(width=plain_width_for(cfg), **_plain_kwargs(cfg))
            return
        if not cfg.use_afe and cfg.wo_afe_reading == "pathway":
            # R5, Table 12's "w/o AFE": no physical-encoder pathway, a pointwise lift of x̂0
            self.encoder = conv3d(cfg.latent_channels, cfg.hidden, 1)
        else:
            self.encoder = PhysicalEncoder(
                cfg.latent_channels, cfg.hidden, cfg.encoder_depth, cfg.kernel_size, cfg.norm_groups
            )
        self.scaffold = ScaffoldHead(cfg.hidden, cfg.bank_channels)
        if cfg.use_afe:
            self.afe = AnchoredFieldEstimator(cfg.hidden, cfg.afe)
        if cfg.expert_routing:
            self.router = LPMERRouter(cfg.cond_dim, cfg.num_experts, cfg.beta, cfg.top_k, cfg.tau)
        if cfg.moe_operator:
            self.experts = OperatorExperts(
                recipe_masks(),
                cfg.cond_dim,
                cfg.expert_width,
                cfg.expert_depth,
                cfg.kernel_size,
                cfg.expert_dispatch,
            )
        attribute_channels = cfg.bank_channels if cfg.flow_correction else 0
        if cfg.decoder_reads_feature:  # reading R7: h beside P̃
            attribute_channels += cfg.hidden
        self.decoder = FlowDecoder(
            attribute_channels,
            cfg.cond_dim,
            cfg.latent_channels,
            cfg.hidden,
            cfg.decoder_depth,
            cfg.kernel_size,
            cfg.norm_groups,
        )
        self.residual_loss = ResidualLoss(
            cfg.loss_weighting,
            cfg.loss_momentum,
            fixed_weights=cfg.loss_fixed_weights,
            freeze_steps=cfg.loss_freeze_steps,
        )

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.condition.out.weight.dtype

    @property
    def num_parameters(self) -> int:
        return count_parameters(self)

    # ------------------------------------------------------------------ steps 1-3
    def _encode(self, x0_hat: Tensor, phase: int) -> BankEncoding:
        """Steps (2)–(3) from the latent estimate."""
        if self.encoder is None or self.scaffold is None:
            raise ValueError(
                "the plain adapter (AdapterConfig.plain_adapter=True) has no physical bank"
            )
        h = self.encoder(x0_hat)  # (B, hidden, T, H, W)
        scaffold = self.scaffold(h)  # (B, 32, T, H, W)
        if self.afe is not None:
            out = self.afe(h, scaffold, phase)
            return BankEncoding(
                x0_hat,
                h,
                scaffold,
                out.bank,
                out.fields,
                out.v_hat,
                out.descriptors,
                out.active_slots,
            )
        # "w/o AFE": no field construction; the scaffold of the generic branch (the physical
        # encoder, or under R5's default reading the pointwise lift of x̂0) is the bank.
        active_slots(phase)  # validates the phase argument
        fields = unpack_bank(scaffold)
        return BankEncoding(x0_hat, h, scaffold, scaffold, fields, fields["v"], {}, SLOT_NAMES)

    def residual_mask(self, enc: BankEncoding, blend: float = 0.0) -> Tensor:
        """The residuals' spatial mask (B, 1, T, H, W): the motion mask of v̂ and x̂0, blended
        toward the physical mask of the active bank slots by ``blend`` in [0, 1] (App. B.3)."""
        cfg = self.config
        quantile, floor = cfg.mask_quantile, cfg.mask_floor
        mask = motion_mask(
            enc.v_hat, enc.x0_hat, weights=cfg.mask_weights, quantile=quantile, floor=floor
        )
        if blend > 0:
            physical = physical_mask(enc.bank, enc.active_slots, quantile=quantile, floor=floor)
            mask = blend_masks(mask, physical, blend)
        return mask

    def encode_bank(
        self, x_t: Tensor, sigma: Tensor | float, v_theta: Tensor, phase: int = 4
    ) -> BankEncoding:
        """Steps (1)–(3) alone (stages A and B).

        Args:
            x_t: (B, C, T, H, W) noisy latents.
            sigma: (B,) noise levels (or a scalar).
            v_theta: (B, C, T, H, W) frozen backbone velocity.
            phase: AFE recovery phase 0 … 4.

        Returns:
            :class:`BankEncoding` (x̂0, h, S, P, fields, v̂, descriptors, active slots).
        """
        sigma = check_latents(x_t, sigma, v_theta, self.config.latent_channels)
        x0_hat = estimate_x0(x_t.detach().to(self.dtype), sigma, v_theta.detach().to(self.dtype))
        return self._encode(x0_hat, phase)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x_t: Tensor,
        sigma: Tensor | float,
        v_theta: Tensor,
        cond: AdapterCondition,
        *,
        residuals: bool | None = None,
    ) -> AdapterOutput:
        """One corrected velocity, v_PILA = v_θ + g(σ)·Δv.

        The steps carry the paper's equation numbers (module docstring): (1) x̂0, the
        condition c, (2)–(3) the bank P, (4) routing, (5) expert updates, (6)–(7) the
        routed residual objective (when asked), (8) P̃, (9) Δv, (10) v_PILA.

        Args:
            x_t: (B, C, T, H, W) noisy latents.
            sigma: (B,) noise levels (or a scalar).
            v_theta: (B, C, T, H, W) frozen backbone velocity (detached here).
            cond: pooled text, labels, conditioning scale, AFE phase, mask blend.
            residuals: compute the routed residual objective; ``None`` computes it in
                training mode only (sampling never needs it).

        Returns:
            :class:`AdapterOutput`.
        """
        cfg = self.config
        sigma = check_latents(x_t, sigma, v_theta, self.config.latent_channels)
        if cond.batch_size != x_t.shape[0]:
            raise ValueError(
                f"the condition has batch {cond.batch_size} but x_t has batch {x_t.shape[0]}"
            )
        dtype = self.dtype
        v = v_theta.detach().to(dtype)  # (B, C, T, H, W)
        labels = cond.labels.to(dtype)  # (B, E)
        compute_residuals = cfg.computes_residuals and (
            self.training if residuals is None else residuals
        )

        # (1) latent estimate x̂0 = x_t − σ·v_θ
        x0_hat = estimate_x0(x_t.detach().to(dtype), sigma, v)  # (B, C, T, H, W)

        # c: condition vector from the pooled text, y and σ, ramped by the warm-up
        c = self.condition(cond.pooled_text, labels, sigma, cond.cond_scale)  # (B, Dc)

        if self.plain is not None:
            # "+ Plain Adapter": a generic branch, no bank, routing or residuals.
            delta_v = self.plain(x0_hat, c, v)  # (B, C, T, H, W)
            v_pila, correction = apply_correction(
                v_theta.detach(), sigma, delta_v, cfg.g_min
            )  # (B, C, T, H, W)
            return AdapterOutput(
                v_pila=v_pila,
                correction=correction,
                delta_v=delta_v,
                cond=c,
                x0_hat=x0_hat,
                residual_loss=x0_hat.new_zeros((), dtype=torch.float32),
            )

        # (2)–(3) physical feature h, scaffold S (Eq. 13) and attribute bank P
        enc = self._encode(x0_hat, cond.phase)
        bank = enc.bank  # (B, 32, T, H, W)

        # (4) route: learned logits + label prior, top-k, temperature (Eq. 21–23)
        if self.router is not None:
            routing = self.router(c, labels)
        else:  # "w/o Expert Routing": dense, non-routed experts
            routing = dense_routing(bank.shape[0], cfg.num_experts, device=bank.device, dtype=dtype)

        # (5) recipe-masked expert updates ΔP_k = M_k ⊙ O_k(P, c)
        updates = (
            self.experts(bank, c, routing.indices) if self.experts is not None else None
        )  # (B, K, 32, T, H, W)

        # (6)–(7) routed residual objective on experts in S∩Y, each on its own P + ΔP_k
        residual_loss = x0_hat.new_zeros((), dtype=torch.float32)
        per_expert: dict[str, Tensor] = {}
        per_term: dict[tuple[str, str], Tensor] = {}
        expert_active = mask = None
        if compute_residuals:
            assert self.residual_loss is not None
            mask = self.residual_mask(enc, cond.mask_blend)  # (B, 1, T, H, W)
            objective = routed_residual_objective(
                bank,
                updates,
                routing,
                labels,
                mask,
                self.residual_loss,
                scales=cfg.residual_scales,
                families=cfg.residual_families,
                residual_pass=self.residual_pass,
            )
            residual_loss = objective.loss.mean()
            per_expert, per_term, expert_active = (
                objective.per_expert,
                objective.per_term,
                objective.active,
            )

        # (8) refined bank P̃ = P + Σ_k π_k ΔP_k
        refined = bank
        if updates is not None and routing.top_k > 0:
            refined = bank + torch.einsum(
                "bk,bkcthw->bcthw", routing.topk_weights.to(dtype), updates
            )

        # (9) decode Δv from [P̃, c, v_θ]; without flow correction the bank is not read;
        # reading R7 adds the physical feature h
        attributes = [refined] if cfg.flow_correction else []
        if cfg.decoder_reads_feature:
            attributes.append(enc.h.to(dtype))
        delta_v = self.decoder(
            torch.cat(attributes, dim=1) if attributes else None, c, v
        )  # (B, C, T, H, W)

        # (10) σ-gated composition v_PILA = v_θ + g(σ)·Δv
        v_pila, correction = apply_correction(
            v_theta.detach(), sigma, delta_v, cfg.g_min
        )  # (B, C, T, H, W)
        return AdapterOutput(
            v_pila=v_pila,
            correction=correction,
            delta_v=delta_v,
            cond=c,
            x0_hat=x0_hat,
            bank=bank,
            refined_bank=refined,
            routing=routing,
            expert_updates=updates,
            residual_loss=residual_loss,
            per_expert_loss=per_expert,
            expert_active=expert_active,
            per_term=per_term,
            mask=mask,
            v_hat=enc.v_hat,
        )

    # ------------------------------------------------------------------ parameters
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part, keys :data:`PARAMETER_GROUPS` (a group may be empty).

        Stage A trains ``encoder`` + ``anchor``; stage B ``encoder`` + ``anchor`` + ``afe``;
        stage C everything, with its own learning-rate scale for ``encoder``. Every
        parameter is in exactly one group. The plain adapter's generic branch counts as
        ``encoder`` (its feature extractor) and ``decoder``.
        """
        groups: dict[str, list[nn.Parameter]] = {name: [] for name in PARAMETER_GROUPS}
        parts: dict[str, list[nn.Module | None]] = {
            "encoder": [
                self.encoder,
                self.scaffold,
                self.plain.encoder if self.plain is not None else None,
            ],
            "condition": [self.condition],
            "router": [self.router],
            "experts": [self.experts],
            "decoder": [self.decoder, self.plain.decoder if self.plain is not None else None],
        }
        for name, modules in parts.items():
            for module in modules:
                if module is not None:
                    groups[name].extend(module.parameters())
        if self.afe is not None:
            for pname, parameter in self.afe.named_parameters():
                groups["anchor" if pname.startswith("anchor_head.") else "afe"].append(parameter)
        return groups

    def extra_repr(self) -> str:
        return f"parameters={self.num_parameters:,}"


def describe(config: AdapterConfig) -> dict[str, Any]:
    """Parameter counts per group of the adapter ``config`` builds (on the meta device)."""
    with torch.device("meta"):
        adapter = PILAAdapter(config)
    counts: dict[str, Any] = {
        name: sum(p.numel() for p in params) for name, params in adapter.parameter_groups().items()
    }
    counts["total"] = adapter.num_parameters
    return counts

"""The three training stages of paper App. B.2–B.3, one LightningModule each.

=====  ================================  ===========================  =========================
stage  trains                            loss                         schedule (callbacks)
=====  ================================  ===========================  =========================
A      encoder E + scaffold,             observable anchor vs flow f  σ-range phases
       kinematic anchor H_v
B      E, H_v and the AFE constructors   recovery residuals + 0.1·A   recovery phases core → w
C      everything (E at lr × 0.1         Eq. 11: FM + λ_phys·L_res    λ_phys, c, mask, E freeze
       after a freeze)
=====  ================================  ===========================  =========================

Each stage starts from the previous one with ``init_from``.

Legend: B batch, C latent channels, T latent frames, H, W latent height and width,
E experts, K top-k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pila.adapter import PARAMETER_GROUPS, AdapterConfig, BankEncoding
from pila.categories import CATEGORIES
from pila.flow import velocity_target
from pila.physics.afe import midpoint_displacement
from pila.physics.masks import motion_mask
from pila.physics.ops import crop_interior, sym_gradient
from pila.physics.residuals import (
    RESIDUAL_TERMS,
    TERM_FAMILIES,
    TERM_FIELDS,
)
from pila.stages.checkpoints import CHECKPOINT_KEY
from pila.stages.gradients import GradientBalance, gradient_norms, worst_ratio
from pila.stages.metrics import expert_update_maps
from pila.stages.module import PILAModule

ENCODER_SIDE = ("encoder", "anchor", "afe")
HEAD_SIDE = ("condition", "router", "experts", "decoder")


def _masked_mean(sq: Tensor, mask: Tensor) -> Tensor:
    """mean over everything of m·Σ_c sq: sq (B, C, T, H, W), m (B, 1, T, H, W)."""
    return (mask * sq.sum(dim=1, keepdim=True)).mean()


class ObservableAnchorLoss:
    """Stage A's loss: the kinematic anchor v̂ against the dense flow target f.

    ``mean(m·|v̂ − f|²) + w_ε·mean(m·|ε(v̂) − ε(f)|²) + w_u·mean(m·|u(v̂) − u(f)|²)``, with ε
    the symmetric gradient (Eq. 16) and u the midpoint-integrated displacement (Eq. 19).
    The mask m is the motion mask built from the *target* flow f and x̂0 (detached): while
    v̂ is still being learned, f is the reliable motion cue.

    Args:
        strain_weight: w_ε. [ours: App. B.3 names "dense flow/deformation proxy targets"
            but no weights]
        displacement_weight: w_u. [ours: displacements add up over frames, hence a
            smaller weight]
    """

    def __init__(self, strain_weight: float = 1.0, displacement_weight: float = 0.1) -> None:
        if strain_weight < 0 or displacement_weight < 0:
            raise ValueError(
                f"anchor loss weights must be >= 0, got {strain_weight}, {displacement_weight}"
            )
        self.strain_weight, self.displacement_weight = strain_weight, displacement_weight

    def __call__(self, enc: BankEncoding, flow: Tensor, config: AdapterConfig) -> dict[str, Tensor]:
        f = flow.to(enc.v_hat.dtype)  # (B, 2, T, H, W)
        mask = motion_mask(
            f,
            enc.x0_hat,
            weights=config.mask_weights,
            quantile=config.mask_quantile,
            floor=config.mask_floor,
        )  # (B, 1, T, H, W)
        velocity = _masked_mean((enc.v_hat - f).square(), mask)
        strain_error = (sym_gradient(enc.v_hat) - sym_gradient(f)).square()
        strain = _masked_mean(strain_error, crop_interior(mask))
        displacement_error = (midpoint_displacement(enc.v_hat) - midpoint_displacement(f)).square()
        displacement = _masked_mean(displacement_error, mask)
        total = velocity + self.strain_weight * strain + self.displacement_weight * displacement
        return {
            "anchor": total,
            "anchor_velocity": velocity,
            "anchor_strain": strain,
            "anchor_displacement": displacement,
        }


def _check_flow(batch: dict[str, Any], stage: str) -> Tensor:
    if "flow" not in batch:
        raise KeyError(
            f"{stage} needs the dense flow targets ('flow' in the batch); "
            "build the cache with `pila prepare` "
            "(it computes them) or use a datamodule that provides them"
        )
    return batch["flow"].float()


class StageA(PILAModule):
    """Stage A: observable attribute-bank pretraining against dense pseudo-flow.

    The σ ranges and steps are :class:`~pila.callbacks.SigmaRangePhases`' (three phases
    of 3000 steps: paper, App. B.2; the ranges' ends: ours, they were lost).

    Args:
        strain_weight: weight of the strain term of the anchor loss. [ours: 1]
        displacement_weight: weight of the displacement term. [ours: 0.1, see
            :class:`ObservableAnchorLoss`]
        **kwargs: :class:`~pila.stages.module.PILAModule` arguments.
    """

    stage_name = "A"
    optimizer_groups = {"encoder": ("encoder", "anchor")}

    def __init__(
        self,
        *args: Any,
        strain_weight: float = 1.0,
        displacement_weight: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.anchor_loss = ObservableAnchorLoss(strain_weight, displacement_weight)
        self.phase = 0
        self.encoder_lr_factor = 1.0  # the encoder is what stage A trains

    def compute_loss(
        self, batch: dict[str, Any], step: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        flow = _check_flow(batch, "stage A")
        enc = self.adapter.encode_bank(step["x_t"], step["sigma"], step["v_theta"], phase=0)
        terms = self.anchor_loss(enc, flow, self.adapter.config)
        logs = {k: v for k, v in terms.items() if k != "anchor"}
        logs["sigma_max"] = torch.tensor(float(self.sigma_range[1]))
        return terms["anchor"], logs


#: Stage B's recovery terms: each switches on once every field it reads is active.
STAGE_B_TERMS: tuple[str, ...] = (
    # core: only-u fluid terms and kinematic consistency
    "fluid/continuity",
    "fluid/momentum",
    "compressible_flow/continuity",
    "compressible_flow/compression",
    "rigid_body/kinematic",
    "elastic/compatibility",
    # phase 1 (φ): phase transport
    "phase_change/phase_transport",
    # phase 2 (T): thermal transport
    "thermal/heat_transport",
    "phase_change/thermal_phase",
    # phase 3 (J): impulse fitting
    "collision/impulse",
    # phase 4 (w): wave anchors
    "optical/wave",
)


class StageB(PILAModule):
    """Stage B: encoder completion and field recovery, phases core → φ → T → J → w.

    The loss is the masked, adaptively weighted residuals of ``terms`` evaluated on the
    AFE bank P (no experts yet) — each term joins once the recovery phase has switched
    on every slot it reads — plus ``anchor_weight`` × stage A's observable anchor, so
    the kinematic anchor does not drift while the other slots are fitted.

    The phases are :class:`~pila.callbacks.RecoveryPhases`' (their order: paper, App. A.1
    and B.3; 1000 steps each: ours, the paper states no length).

    Args:
        terms: ``"category/term"`` names of the recovery residuals. [paper, App. B.3: the
            families (only-u fluid terms, kinematic consistency, phase/thermal transport,
            impulse fitting, wave anchors); ours: which terms stand for each]
        anchor_weight: weight of stage A's observable anchor. [ours: App. B.3 says "a
            small observable anchor", no value; 0.1]
        strain_weight: stage A anchor's strain weight. [ours: as stage A]
        displacement_weight: stage A anchor's displacement weight. [ours: as stage A]
        physical_mask_steps: reading R4 (``design/pila-method.md`` §7): App. B.3 blends the
            residual mask from the motion mask to the physical mask; with N > 0 stage B
            does so too, linearly over its first N steps (as stage C's ``MaskBlend``);
            0 keeps the motion mask throughout stage B. [ours: 0, the blend belongs to
            stage C's warm-ups in App. B.2; lab.md §4 measures both]
        **kwargs: :class:`~pila.stages.module.PILAModule` arguments.
    """

    stage_name = "B"
    optimizer_groups = {"encoder": ENCODER_SIDE}
    grad_parts = ("anchor", "recovery")

    def __init__(
        self,
        *args: Any,
        terms: Sequence[str] = STAGE_B_TERMS,
        anchor_weight: float = 0.1,
        strain_weight: float = 1.0,
        displacement_weight: float = 0.1,
        physical_mask_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if physical_mask_steps < 0:
            raise ValueError(f"physical_mask_steps must be >= 0, got {physical_mask_steps}")
        self.physical_mask_steps = int(physical_mask_steps)
        self.terms = self._parse_terms(terms)
        self.anchor_weight = anchor_weight
        self.anchor_loss = ObservableAnchorLoss(strain_weight, displacement_weight)
        self.phase = 0
        self.encoder_lr_factor = 1.0

    @staticmethod
    def _parse_terms(terms: Sequence[str]) -> tuple[tuple[str, str], ...]:
        parsed = []
        for name in terms:
            category, _, term = name.partition("/")
            if category not in RESIDUAL_TERMS or term not in RESIDUAL_TERMS[category]:
                valid = ", ".join(f"{c}/{t}" for c in CATEGORIES for t in RESIDUAL_TERMS[c])
                raise ValueError(
                    f"unknown residual term {name!r} for stage B; valid terms: {valid}"
                )
            parsed.append((category, term))
        return tuple(parsed)

    def active_terms(self, active_slots: Sequence[str]) -> list[tuple[str, str]]:
        """The terms whose fields are all active (and whose family is kept)."""
        families = set(self.adapter.config.residual_families)
        return [
            key
            for key in self.terms
            if set(TERM_FIELDS[key]) <= set(active_slots) and TERM_FAMILIES[key] in families
        ]

    def physical_mask_blend(self) -> float:
        """R4: the motion → physical mask blend factor at the current step (0 when off)."""
        if not self.physical_mask_steps:
            return 0.0
        return min(1.0, (self.global_step + 1) / self.physical_mask_steps)

    def compute_loss(
        self, batch: dict[str, Any], step: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        flow = _check_flow(batch, "stage B")
        cfg = self.adapter.config
        enc = self.adapter.encode_bank(
            step["x_t"], step["sigma"], step["v_theta"], phase=int(self.phase)
        )
        anchor = self.anchor_loss(enc, flow, cfg)["anchor"]
        keys = self.active_terms(enc.active_slots)
        logs: dict[str, Tensor] = {
            "anchor": anchor.detach(),
            "phase": torch.tensor(float(self.phase)),
        }
        if not keys:
            return self.anchor_weight * anchor, logs  # one part: nothing to compare
        categories = sorted({c for c, _ in keys}, key=CATEGORIES.index)
        blend = self.physical_mask_blend()
        mask = self.adapter.residual_mask(enc, blend)  # (B, 1, T, H, W)
        logs["mask_blend"] = torch.tensor(blend)
        means = self.adapter.residual_pass(
            categories, enc.fields, mask, cfg.residual_scales, cfg.residual_families
        )  # category → term → mean(m·r²) (B,), one shared pass
        chosen = {c: {t: m for t, m in means[c].items() if (c, t) in keys} for c in categories}
        # the adapter's own residual loss: its running means carry into stage C
        out = self.adapter.residual_loss.weigh(chosen)
        recovery = torch.stack([v.mean() for v in out.per_category.values()]).sum()
        if self.training:
            self.residual_metrics.update(out.per_term)
        logs["recovery"] = recovery.detach()
        self.loss_parts = {"anchor": self.anchor_weight * anchor, "recovery": recovery}
        return recovery + self.anchor_weight * anchor, logs


class StageC(PILAModule):
    """Stage C: physics-to-FM coupling, Eq. (11): ``mean‖v_PILA − v*‖² + λ_phys·L_res``.

    λ_phys, the conditioning scale, the mask blend and the encoder's learning rate follow
    the callbacks of ``lightning_configs/stageC.yaml`` (λ_phys 0 → 0.30 over 2000 steps,
    c over 1000, the mask over 300, the encoder frozen for 1000: paper, App. B.2–B.3).
    ``encoder_lr_scale`` defaults to 0.1 here [ours: App. B.2 scales the encoder's rate
    after the freeze by a factor that was lost].

    Args:
        expert_map_sample: index in the batch whose expert maps are kept for TensorBoard.
            [ours: the first sample]
        **kwargs: :class:`~pila.stages.module.PILAModule` arguments.
    """

    stage_name = "C"
    optimizer_groups = {"encoder": ENCODER_SIDE, "heads": HEAD_SIDE}
    grad_parts = ("fm", "residual")

    def __init__(self, *args: Any, expert_map_sample: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("encoder_lr_scale", 0.1)
        super().__init__(*args, **kwargs)
        self.expert_map_sample = expert_map_sample
        self.phase = 4
        cfg = self.adapter.config
        self.balance: GradientBalance | None = None
        if cfg.loss_weighting == "grad_balanced":
            self.balance = GradientBalance(cfg.loss_balance_ratio, cfg.loss_balance_smoothing)

    def balance_groups(self) -> list[str]:
        """The shared groups ``"grad_balanced"`` watches: every group L_res reaches (all but
        the decoder), without the encoder side while :class:`~pila.callbacks.EncoderFreeze`
        holds it at learning rate 0."""
        frozen = ENCODER_SIDE if self.encoder_lr_factor == 0 else ()
        return [g for g in PARAMETER_GROUPS if g != "decoder" and g not in frozen]

    def balance_scale(self, fm: Tensor, physics: Tensor) -> float:
        """``"grad_balanced"``: the scale s of λ_phys·L_res for this training step
        (:class:`~pila.stages.gradients.GradientBalance`), from both parts' gradient norms
        on :meth:`balance_groups`, averaged over processes."""
        assert self.balance is not None
        groups = self.adapter.parameter_groups()
        shared = {g: groups[g] for g in self.balance_groups()}
        norms = gradient_norms({"fm": fm, "residual": physics}, shared)
        names = list(norms["fm"])
        if self.trainer is not None and self.trainer.world_size > 1 and names:
            stacked = torch.stack([norms[p][g] for p in ("fm", "residual") for g in names])
            stacked = self.trainer.strategy.reduce(stacked.to(self.device), reduce_op="mean").cpu()
            norms = {p: dict(zip(names, stacked[i * len(names):(i + 1) * len(names)], strict=True))
                     for i, p in enumerate(("fm", "residual"))}  # fmt: skip
        return self.balance.update(worst_ratio(norms["fm"], norms["residual"], names))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.balance is not None:
            checkpoint[CHECKPOINT_KEY]["gradient_balance"] = self.balance.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = (checkpoint.get(CHECKPOINT_KEY) or {}).get("gradient_balance")
        if self.balance is not None and state:
            self.balance.load_state_dict(state)

    def compute_loss(
        self, batch: dict[str, Any], step: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        cond = self.condition(batch, phase=4)
        out = self.adapter(step["x_t"], step["sigma"], step["v_theta"], cond, residuals=True)
        target = velocity_target(step["x0"], step["noise"])  # (B, C, T, H, W)
        fm = F.mse_loss(out.v_pila.float(), target.float())
        residual = out.residual_loss.float() if out.residual_loss is not None else fm.new_zeros(())
        physics = float(self.lambda_phys) * residual  # λ_phys·L_res
        logs = {
            "fm_loss": fm.detach(),
            "residual_loss": residual.detach(),
            "cond_scale": torch.tensor(float(self.cond_scale)),
        }
        if self.balance is not None:
            measure = self.training and physics.requires_grad and self.lambda_phys > 0
            scale = self.balance_scale(fm, physics) if measure else self.balance.scale
            physics = scale * physics
            logs["balance_scale"] = torch.tensor(scale)
        self.loss_parts = {"fm": fm, "residual": physics}
        loss = fm + physics
        if self.training and out.routing is not None:
            self.router_metrics.update(out.routing, cond.labels)
            per_expert = {}
            if out.expert_active is not None:
                for k, name in enumerate(CATEGORIES):
                    if name in out.per_expert_loss:
                        value = out.per_expert_loss[name].detach().float()
                        nan = torch.full_like(value, float("nan"))
                        per_expert[name] = torch.where(out.expert_active[:, k], value, nan)
            self.residual_metrics.update(out.per_term, per_expert)
            log_now = (self.global_step + 1) % self.hparams.log_every_n_steps == 0
            if out.expert_updates is not None and log_now:
                sample = min(self.expert_map_sample, out.v_pila.shape[0] - 1)
                self._figures["expert_maps"] = self.expert_maps(out, sample)
        return loss, logs

    @staticmethod
    def expert_maps(out, sample: int) -> Tensor:
        """Where each expert changes the bank: mean |ΔP_k| over channels, one sample (E, T, H, W).

        Unselected experts get zero maps (:func:`pila.stages.metrics.expert_update_maps`).
        """
        rows = slice(sample, sample + 1)
        return expert_update_maps(out.expert_updates[rows], out.routing.indices[rows])[0].cpu()

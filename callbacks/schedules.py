"""Training schedules of pila-method.md §5 as Lightning callbacks.

Each callback sets one knob of the stage module before every training batch, from the
optimizer step count (``trainer.global_step``):

==========================  ==========================================  ============================
callback                    knob on the LightningModule                 default (provenance)
==========================  ==========================================  ============================
:class:`PhysicsWarmup`      ``lambda_phys``: 0 → target                 0.30 over 2000 steps
                                                                        (paper, App. B.2–B.3)
:class:`ConditioningWarmup` ``cond_scale``: 0 → 1                       1000 steps
                                                                        (paper, App. B.2–B.3)
:class:`MaskBlend`          ``mask_blend``: motion (0) → physical (1)   300 steps (paper, App. B.3)
:class:`EncoderFreeze`      the encoder parameter group's learning rate 0 for 1000 steps (paper,
                                                                        App. B.2), then lr × 0.1
                                                                        (ours: the factor was lost)
:class:`SigmaRangePhases`   ``sigma_range``: stage A's widening ranges  3 phases × 3000 steps
                                                                        (paper, App. B.2); [0, .25],
                                                                        [0, .5], [0, 1] (ours: lost)
:class:`RecoveryPhases`     ``phase``: stage B's AFE recovery phase     core → φ → T → J → w (paper,
                                                                        App. A.1, B.3) × 1000 steps
                                                                        (ours: not stated)
==========================  ==========================================  ============================

Because the schedules are functions of the step count, which Lightning restores on
resume, a resumed run continues each schedule where it stopped. Each callback also saves
its settings and last value in the checkpoint (``state_dict``) and warns when a resumed
run was started with different settings, since the schedule then jumps.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ pure schedules
def linear_ramp(step: int, start: float, end: float, steps: int, delay: int = 0) -> float:
    """``start`` until ``delay``, then linear to ``end`` over ``steps`` steps, then ``end``."""
    if steps <= 0:
        return end if step >= delay else start
    progress = min(max(step - delay, 0) / steps, 1.0)
    return start + (end - start) * progress


def piecewise_phase(step: int, steps_per_phase: Sequence[int]) -> int:
    """Index of the phase that ``step`` falls in; the last phase lasts forever."""
    boundary = 0
    for index, length in enumerate(steps_per_phase):
        boundary += length
        if step < boundary:
            return index
    return len(steps_per_phase) - 1


# ----------------------------------------------------------------------------- base class
class StepSchedule(Callback, abc.ABC):
    """A value derived from ``trainer.global_step`` and written to the module before each batch."""

    attribute: str = ""

    @abc.abstractmethod
    def value_at(self, step: int) -> Any:
        """The knob's value at optimizer step ``step``."""

    def settings(self) -> dict[str, Any]:
        """The constructor arguments; saved so a resume with other settings is noticed."""
        return {}

    def apply(self, trainer: Trainer, pl_module: LightningModule) -> Any:
        value = self.value_at(trainer.global_step)
        setattr(pl_module, self.attribute, value)
        self._last_value = value
        return value

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not hasattr(pl_module, self.attribute):
            raise AttributeError(
                f"{type(self).__name__} drives `{self.attribute}`, which "
                f"{type(pl_module).__name__} does not have; use it with a pila stage module"
            )
        self.apply(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.apply(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"settings": self.settings(), "last_value": getattr(self, "_last_value", None)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("settings", {})
        if saved and saved != self.settings():
            log.warning(
                "%s resumed with settings %s but the checkpoint was written with %s; the schedule "
                "follows the new settings from the restored step on",
                type(self).__name__, self.settings(), saved,
            )
        self._last_value = state_dict.get("last_value")

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.attribute}]"


# ------------------------------------------------------------------------------ callbacks
class PhysicsWarmup(StepSchedule):
    """λ_phys of Eq. (11) ramps linearly from 0 to ``target`` over ``steps`` steps.

    Args:
        target: final weight of the routed residual loss (0.30). [paper, App. B.3: "the
            physics weight target is 0.30"]
        steps: length of the ramp in optimizer steps (2000). [paper, App. B.2 and B.3:
            "the physics warmup is 2000 steps"]
    """

    attribute = "lambda_phys"

    def __init__(self, target: float = 0.30, steps: int = 2000) -> None:
        if target < 0 or steps < 0:
            raise ValueError(
                f"PhysicsWarmup needs target >= 0 and steps >= 0, got {target}, {steps}"
            )
        self.target, self.steps = target, steps

    def settings(self) -> dict[str, Any]:
        return {"target": self.target, "steps": self.steps}

    def value_at(self, step: int) -> float:
        return linear_ramp(step, 0.0, self.target, self.steps)


class ConditioningWarmup(StepSchedule):
    """The condition vector c ramps in: ``cond_scale`` goes 0 → 1 over ``steps`` steps.

    Args:
        steps: length of the ramp (1000). [paper, App. B.2 and B.3: "the conditioning
            warmup is 1000 steps"]
    """

    attribute = "cond_scale"

    def __init__(self, steps: int = 1000) -> None:
        if steps < 0:
            raise ValueError(f"ConditioningWarmup.steps must be >= 0, got {steps}")
        self.steps = steps

    def settings(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def value_at(self, step: int) -> float:
        return linear_ramp(step, 0.0, 1.0, self.steps)


class MaskBlend(StepSchedule):
    """The residual mask moves from the motion mask (0) to the physical mask (1).

    Args:
        steps: length of the blend (300). [paper, App. B.3: "the motion-mask warmup is
            300 steps"]
        delay: steps at pure motion mask before the blend starts (0). [ours: the blend
            starts with stage C]
    """

    attribute = "mask_blend"

    def __init__(self, steps: int = 300, delay: int = 0) -> None:
        if steps < 0 or delay < 0:
            raise ValueError(f"MaskBlend needs steps, delay >= 0, got {steps}, {delay}")
        self.steps, self.delay = steps, delay

    def settings(self) -> dict[str, Any]:
        return {"steps": self.steps, "delay": self.delay}

    def value_at(self, step: int) -> float:
        return linear_ramp(step, 0.0, 1.0, self.steps, self.delay)


class EncoderFreeze(StepSchedule):
    """The physical encoder is frozen for ``steps`` steps, then trains at ``lr × lr_scale``.

    Freezing sets the learning rate of the optimizer's ``encoder`` parameter group to 0
    (AdamW then leaves those weights exactly unchanged, weight decay included) rather than
    toggling ``requires_grad``, which sharded optimizers such as DeepSpeed ZeRO fix at
    start-up. The module's ``encoder_lr_factor`` records the current factor.

    Args:
        steps: frozen steps (1000). [paper, App. B.2: "freeze the physical encoder for the
            first 1K full-coupling steps"]
        lr_scale: the encoder's learning-rate factor once unfrozen (0.1). [ours: App. B.2
            scales it by a factor that was lost; 0.1 lets the encoder adapt slowly]
        group: name of the optimizer parameter group to drive.
    """

    attribute = "encoder_lr_factor"

    def __init__(self, steps: int = 1000, lr_scale: float = 0.1, group: str = "encoder") -> None:
        if steps < 0 or lr_scale < 0:
            raise ValueError(f"EncoderFreeze needs steps, lr_scale >= 0, got {steps}, {lr_scale}")
        self.steps, self.lr_scale, self.group = steps, lr_scale, group

    def settings(self) -> dict[str, Any]:
        return {"steps": self.steps, "lr_scale": self.lr_scale, "group": self.group}

    def value_at(self, step: int) -> float:
        return 0.0 if step < self.steps else self.lr_scale

    def apply(self, trainer: Trainer, pl_module: LightningModule) -> float:
        factor = super().apply(trainer, pl_module)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                if group.get("name") == self.group:
                    group["lr"] = group["base_lr"] * factor
        return factor


class SigmaRangePhases(StepSchedule):
    """Stage A's progressively wider σ ranges, each for ``steps_per_phase`` steps.

    Args:
        sigma_max: upper ends of the phases' ranges ((0.25, 0.5, 1.0)). [ours: the ends
            were lost; App. B.2 has three progressively wider ranges]
        steps_per_phase: steps of each phase (3000); the last phase lasts to the end.
            [paper, App. B.2: "Each phase runs for 3K steps"]
        sigma_min: the ranges' common lower end (0.0). [ours: lost with the ranges]
    """

    attribute = "sigma_range"

    def __init__(
        self,
        sigma_max: Sequence[float] = (0.25, 0.5, 1.0),
        steps_per_phase: int = 3000,
        sigma_min: float = 0.0,
    ) -> None:
        if not sigma_max or any(not sigma_min < s <= 1.0 for s in sigma_max):
            raise ValueError(
                f"SigmaRangePhases.sigma_max must lie in ({sigma_min}, 1], got {list(sigma_max)}"
            )
        if steps_per_phase <= 0:
            raise ValueError(
                f"SigmaRangePhases.steps_per_phase must be positive, got {steps_per_phase}"
            )
        self.sigma_max, self.sigma_min = tuple(sigma_max), sigma_min
        self.steps_per_phase = steps_per_phase

    def settings(self) -> dict[str, Any]:
        return {
            "sigma_max": list(self.sigma_max),
            "steps_per_phase": self.steps_per_phase,
            "sigma_min": self.sigma_min,
        }

    def value_at(self, step: int) -> tuple[float, float]:
        phase = piecewise_phase(step, [self.steps_per_phase] * len(self.sigma_max))
        return (self.sigma_min, self.sigma_max[phase])


class RecoveryPhases(StepSchedule):
    """Stage B's AFE recovery phases: core → φ → T → J → w, ``steps_per_phase`` each.

    Args:
        steps_per_phase: steps of each phase (1000); phase 4 (w) lasts to the end.
            [ours: the paper states no length for stage B]
        num_phases: number of phases (5: core plus the four weakly observed slots).
            [paper, App. A.1 (Table 5) and App. B.3]
    """

    attribute = "phase"

    def __init__(self, steps_per_phase: int = 1000, num_phases: int = 5) -> None:
        if steps_per_phase <= 0 or num_phases <= 0:
            raise ValueError(
                f"RecoveryPhases needs positive lengths, got {steps_per_phase}, {num_phases}"
            )
        self.steps_per_phase, self.num_phases = steps_per_phase, num_phases

    def settings(self) -> dict[str, Any]:
        return {"steps_per_phase": self.steps_per_phase, "num_phases": self.num_phases}

    def value_at(self, step: int) -> int:
        return piecewise_phase(step, [self.steps_per_phase] * self.num_phases)

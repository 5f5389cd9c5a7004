"""Callbacks (installed as ``pila.callbacks``): training schedules and TensorBoard images."""

from pila.callbacks.logging import ExpertImageLogger
from pila.callbacks.schedules import (
    ConditioningWarmup,
    EncoderFreeze,
    MaskBlend,
    PhysicsWarmup,
    RecoveryPhases,
    SigmaRangePhases,
)

__all__ = [
    "ConditioningWarmup",
    "EncoderFreeze",
    "ExpertImageLogger",
    "MaskBlend",
    "PhysicsWarmup",
    "RecoveryPhases",
    "SigmaRangePhases",
]

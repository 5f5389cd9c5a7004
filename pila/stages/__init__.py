"""Training: ``PILAModule`` and the three stage LightningModules chained by checkpoint."""

from pila.stages.module import PILAModule
from pila.stages.stages import STAGE_B_TERMS, ObservableAnchorLoss, StageA, StageB, StageC

__all__ = ["STAGE_B_TERMS", "ObservableAnchorLoss", "PILAModule", "StageA", "StageB", "StageC"]

"""Physics core of PILA: attribute bank, finite differences, AFE, residuals, masks, loss.

Pure torch, independent of the backbone. See ``pila-method.md`` §1 and §3 and the
docstrings of the submodules.
"""

from pila.physics.afe import (
    RECOVERY_PHASES,
    AFEConfig,
    AFEOutput,
    AnchoredFieldEstimator,
    active_slots,
)
from pila.physics.bank import (
    BANK_CHANNELS,
    BANK_SLOTS,
    SLOT_COMPONENTS,
    SLOT_NAMES,
    pack_bank,
    read_slot,
    slot_mask,
    slot_slice,
    unpack_bank,
)
from pila.physics.fused import ResidualPass, masked_residual_means
from pila.physics.loss import ResidualLoss, ResidualLossOutput, masked_means
from pila.physics.masks import (
    RECIPE_SLOTS,
    blend_masks,
    motion_mask,
    physical_mask,
    recipe_masks,
)
from pila.physics.ops import crop_interior
from pila.physics.residuals import (
    FAMILIES,
    RESIDUAL_TERMS,
    TERM_FAMILIES,
    TERM_FIELDS,
    TERM_KEYS,
    FieldDerivatives,
    ResidualScales,
    category_residuals,
    residuals_for_categories,
)

__all__ = [
    "AFEConfig",
    "AFEOutput",
    "AnchoredFieldEstimator",
    "BANK_CHANNELS",
    "BANK_SLOTS",
    "FAMILIES",
    "FieldDerivatives",
    "RECIPE_SLOTS",
    "RECOVERY_PHASES",
    "RESIDUAL_TERMS",
    "ResidualLoss",
    "ResidualLossOutput",
    "ResidualPass",
    "ResidualScales",
    "SLOT_COMPONENTS",
    "SLOT_NAMES",
    "TERM_FAMILIES",
    "TERM_FIELDS",
    "TERM_KEYS",
    "active_slots",
    "blend_masks",
    "category_residuals",
    "crop_interior",
    "masked_means",
    "masked_residual_means",
    "motion_mask",
    "pack_bank",
    "physical_mask",
    "read_slot",
    "recipe_masks",
    "residuals_for_categories",
    "slot_mask",
    "slot_slice",
    "unpack_bank",
]

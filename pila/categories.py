"""The eight physical categories of PILA, in the one order used everywhere.

Expert ``k`` of the adapter, column ``k`` of a label vector ``y`` and row ``k`` of a
recipe-mask table all refer to ``CATEGORIES[k]``.
"""

from __future__ import annotations

import torch

CATEGORIES: tuple[str, ...] = (
    "rigid_body",
    "elastic",
    "fluid",
    "compressible_flow",
    "phase_change",
    "collision",
    "thermal",
    "optical",
)
NUM_CATEGORIES = len(CATEGORIES)


def category_index(name: str) -> int:
    """Index of ``name`` in :data:`CATEGORIES`; a clear ``ValueError`` for unknown names."""
    try:
        return CATEGORIES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown physical category {name!r}; valid categories are: {', '.join(CATEGORIES)}"
        ) from None


def labels_to_multihot(names: list[str] | tuple[str, ...], dtype=torch.float32) -> torch.Tensor:
    """Multi-hot vector (8,) for a set of category names (unknown names are a ``ValueError``)."""
    y = torch.zeros(NUM_CATEGORIES, dtype=dtype)
    for name in names:
        y[category_index(name)] = 1
    return y


def multihot_to_labels(y: torch.Tensor) -> list[str]:
    """Category names whose entry in the (8,) vector ``y`` is positive."""
    return [CATEGORIES[i] for i in range(NUM_CATEGORIES) if float(y[i]) > 0]

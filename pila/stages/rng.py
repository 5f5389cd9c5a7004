"""Random-number-generator states as plain tensors, for checkpoints that resume exactly.

A training step draws σ, the noise and (with ``label_source="random"``) the labels from
the global generators. :func:`capture_rng_state` packs the torch (CPU and, on a GPU, the
device's), NumPy and Python ``random`` states into a dict of tensors, which a checkpoint
stores without pickling anything (``torch.load(weights_only=True)`` reads it back);
:func:`restore_rng_state` puts them back. Under several processes each rank's states are
stacked (:func:`stack_rank_states`) and each rank takes its own back (:func:`rank_rng_state`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def capture_rng_state(device: torch.device | None = None) -> dict[str, Tensor]:
    """The global generators' states: ``torch`` (uint8), ``cuda`` (on a CUDA ``device``),
    ``numpy_keys`` (624,) and ``numpy_pos``/``numpy_has_gauss``/``numpy_gauss``, ``python`` (625,)
    and ``python_gauss`` (NaN when none is cached)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    if kind != "MT19937":
        raise ValueError(f"unexpected NumPy generator {kind!r}")
    version, internal, py_gauss = random.getstate()
    if version != 3:
        raise ValueError(f"unexpected Python random state version {version}")
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        "numpy_pos": torch.tensor(int(pos), dtype=torch.int64),
        "numpy_has_gauss": torch.tensor(int(has_gauss), dtype=torch.int64),
        "numpy_gauss": torch.tensor(float(gauss), dtype=torch.float64),
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_gauss": torch.tensor(
            math.nan if py_gauss is None else py_gauss, dtype=torch.float64
        ),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Tensor], device: torch.device | None = None) -> None:
    """Set the global generators to a :func:`capture_rng_state` result."""
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].to("cpu", torch.uint8), device)
    keys = state["numpy_keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        (
            "MT19937",
            keys,
            int(state["numpy_pos"]),
            int(state["numpy_has_gauss"]),
            float(state["numpy_gauss"]),
        )
    )
    gauss = float(state["python_gauss"])
    internal = tuple(int(v) for v in state["python"].tolist())
    random.setstate((3, internal, None if math.isnan(gauss) else gauss))


def stack_rank_states(
    state: dict[str, Tensor], world_size: int, all_gather: Callable[[Tensor], Tensor]
) -> dict[str, Any]:
    """Every rank's ``state`` stacked (W, ...), with ``world_size`` (all ranks call this).

    ``all_gather`` stacks one tensor over the ranks (``LightningModule.all_gather``).
    """
    if world_size == 1:
        return {"world_size": 1, **{k: v.unsqueeze(0).clone() for k, v in state.items()}}
    gathered = {k: all_gather(v).cpu() for k, v in state.items()}  # (W, ...)
    return {"world_size": world_size, **gathered}


def rank_rng_state(
    stored: dict[str, Any] | None, world_size: int, rank: int
) -> dict[str, Tensor] | None:
    """This rank's states out of a :func:`stack_rank_states` record.

    None when nothing is stored, or when it was stored by another number of processes (warned).
    """
    if not stored:
        return None
    if int(stored.get("world_size", 0)) != world_size:
        log.warning(
            "the checkpoint holds random states for %s processes, this run has %d: the resumed "
            "run's random draws differ from those of an uninterrupted run",
            stored.get("world_size"),
            world_size,
        )
        return None
    return {k: v[rank] for k, v in stored.items() if k != "world_size"}

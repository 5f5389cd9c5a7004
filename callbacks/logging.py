"""Images for TensorBoard: the expert co-activation matrix and expert spatial maps.

Scalars (per-term residuals, router statistics, losses) are logged by the stage modules
through torchmetrics; this callback adds the two figures of paper Figs. 6–7 as images,
every ``every_n_steps`` optimizer steps, on rank zero, when the logger is TensorBoard.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


def matrix_to_image(matrix: torch.Tensor, *, cell: int = 8) -> np.ndarray:
    """An (E, E) matrix as an (3, E·cell, E·cell) uint8 image: blue (−1) – white (0) – red (+1).

    Values are divided by the largest magnitude, so counts and correlations both fill the
    colour range.
    """
    m = matrix.detach().double().cpu()
    scale = m.abs().max().clamp_min(1e-12)
    v = (m / scale).clamp(-1, 1).numpy()  # (E, E)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=0)  # (3, E, E)
    rgb = np.kron(rgb, np.ones((1, cell, cell)))
    return (rgb * 255).round().astype(np.uint8)


def maps_to_image(maps: torch.Tensor) -> np.ndarray:
    """Expert maps (E, T, H, W) ≥ 0 as a grey (1, E·H, T·W) uint8 image, one row per expert."""
    m = maps.detach().float().cpu()
    m = m / m.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)  # per-expert normalisation
    e, t, h, w = m.shape
    grid = m.permute(0, 2, 1, 3).reshape(e * h, t * w)  # rows: experts × H, cols: frames × W
    return (grid.numpy()[None] * 255).round().astype(np.uint8)


class ExpertImageLogger(Callback):
    """Write the co-activation matrix and the expert spatial maps to TensorBoard.

    The stage module exposes ``latest_figures() -> dict[str, Tensor]`` with
    ``coactivation`` (E, E) and, for stage C, ``expert_maps`` (E, T, H, W).

    Args:
        every_n_steps: how often (optimizer steps).
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        if every_n_steps < 1:
            raise ValueError(f"ExpertImageLogger.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or not hasattr(pl_module, "latest_figures"):
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        figures = pl_module.latest_figures()
        writer = loggers[0].experiment
        if "coactivation" in figures:
            image = matrix_to_image(figures["coactivation"])
            writer.add_image("train/router/coactivation", image, step)
        if "expert_maps" in figures:
            writer.add_image("train/expert_maps", maps_to_image(figures["expert_maps"]), step)

"""The lab world: a small Wan trained from scratch on the lab's scenes (lab.md, section 2).

Shapes: N clips, B batch, F pixel frames, H_px, W_px pixel height and width, C latent
channels (16), T latent frames (``(F − 1)/4 + 1``), H, W latent height and width
(pixels / :attr:`WorldConfig.spatial_compression`), L text tokens, D text width.

The world is a diffusers ``WanPipeline`` folder, trained in two parts, each a
``LightningModule`` fitted by a ``lightning.Trainer``:

1. :class:`~pila.lab.world_parts.VAEPart`: an ``AutoencoderKLWan`` learns to reconstruct
   windows of scene clips (L1 + MSE reconstruction and a small KL to the unit Gaussian).
2. The VAE's latent statistics go into its config (``latents_mean``/``latents_std``), so
   :meth:`pila.backbone.wan.WanBackbone.encode_video` normalises its latents, and every
   training clip is encoded once.
3. :class:`~pila.lab.world_parts.TransformerPart`: a ``WanTransformer3DModel`` learns the
   flow-matching velocity of :mod:`pila.flow` on those normalised latents, conditioned on
   the prompts as ``WanPipeline`` encodes them, with a share of empty prompts so
   classifier-free guidance works.

The text encoder (a seeded, frozen small UMT5), the byte-level tokenizer and the UniPC
flow scheduler are those of the tiny preset (:mod:`pila.backbone.tiny`). Clips are
rendered in memory from :mod:`pila.lab.scenes`; held-out clips use indices disjoint from
the training ones (from :data:`HELDOUT_INDEX_OFFSET`).

Determinism: every batch's clips, windows, prompt drops, σ and noise are functions of
(seed, epoch, step), so a run resumed from an epoch-end checkpoint draws what the
uninterrupted run would have drawn.

This module holds what a world is made of (:class:`WorldConfig`, the clips);
:mod:`pila.lab.world_parts` the two parts and their seeded batches; :mod:`pila.lab.pretrain`
the training (:func:`~pila.lab.pretrain.train_world`, ``pila lab pretrain``);
:mod:`pila.lab.world_card` what a world folder records of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pila.backbone.folders import LAB_WORLD_FOLDER as WORLD_FOLDER
from pila.backbone.tiny import TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG
from pila.io import read_json
from pila.lab.scenes import SCENES, render_indexed

log = logging.getLogger(__name__)

__all__ = [
    "WORLD_FOLDER",
    "WORLD_VAE_CONFIG",
    "WORLD_VAE_CONFIG_8X",
    "ClipSet",
    "WorldConfig",
    "render_clips",
]


WORLD_VAE_CONFIG: dict[str, Any] = {
    **TINY_VAE_CONFIG,
    # our choice: channels 16 → 32 → 64. Base width 8 trained 1.6× faster per step but
    # stayed below 17 dB on held-out clips
    "base_dim": 16,
    "dim_mult": [1, 2, 4],
    "num_res_blocks": 1,
    "temperal_downsample": [True, True],
    "scale_factor_spatial": 4,
}
"""``AutoencoderKLWan`` of the world: Wan's 4× temporal compression and 16 channels, but 4×
spatial, not Wan's 8× (one resolution level fewer; ~1.9 M parameters). At 64 × 64 pixels,
8× leaves 8 × 8 latents, and a VAE of this size trained for half an hour on them lost the
4–6 px balls, the ice block and the ripple rings (the ruler read its reconstructions of
lawful clips at 16.8 against 0.5 for the clips themselves)."""

WORLD_VAE_CONFIG_8X: dict[str, Any] = {
    **WORLD_VAE_CONFIG,
    "dim_mult": [1, 2, 4, 4],
    "temperal_downsample": [False, True, True],
    "scale_factor_spatial": 8,
}
"""Wan's own 8× spatial layout at the world's width (``--spatial-compression 8``; ~2.6 M
parameters)."""

WORLD_TRANSFORMER_CONFIG: dict[str, Any] = {
    **TINY_TRANSFORMER_CONFIG,
    # our choice: width 256 (8 heads × 32), 3 layers, ~3.1 M parameters; sized for CPU training
    "num_attention_heads": 8,
    "attention_head_dim": 32,
    "freq_dim": 64,
    "ffn_dim": 512,
    "num_layers": 3,
}
"""``WanTransformer3DModel`` of the world (text width = the tiny UMT5's). Its patch follows
the VAE (:meth:`WorldConfig.transformer_config`) so that both layouts give 4 × 4 tokens per
latent frame at 64 × 64 pixels.

The width is at least what one token emits (16 latent channels × a 4 × 4 patch = 256 values),
as in Wan (1,536 wide, 64 values per token): the output projection is then full rank. The
first world was 128 wide and 5 deep; its 128 → 256 projection could only place latents in a
128-dimensional subspace per patch, and its videos carried grain the VAE's reconstructions do
not have."""

VAE_CONFIGS = {4: WORLD_VAE_CONFIG, 8: WORLD_VAE_CONFIG_8X}
"""The VAE config per spatial compression (:attr:`WorldConfig.spatial_compression`)."""

PATCH_SIZES = {4: (1, 4, 4), 8: (1, 2, 2)}
"""Transformer patch per spatial compression (pixels per token side: 16 in both; ours)."""

HELDOUT_INDEX_OFFSET = 100_000
"""Clip indices from here on are held out (our choice: far beyond any training count)."""


# ----------------------------------------------------------------------- config
@dataclass(frozen=True)
class WorldConfig:
    """How the world is trained (every default is our choice, sized for two CPU cores).

    Args:
        seed: seeds rendering, initialisation, data order, σ and noise.
        num_frames: frames per clip (4k + 1).
        height: pixel height (multiple of 16: the spatial compression × the transformer's patch).
        width: pixel width (multiple of 16).
        clips_per_scene: training clips rendered per scene (indices 0 … n − 1).
        heldout_per_scene: held-out clips per scene (indices from :data:`HELDOUT_INDEX_OFFSET`).
        scenes: which scenes (default all eight).
        vae_frame_steps: optimiser steps of the VAE's first phase, on single whole frames
            (the spatial path; 0 skips it).
        vae_frame_batch: frames per first-phase step.
        vae_frame_lr: peak learning rate of the first phase.
        vae_steps: optimiser steps of the VAE's second phase, on clip windows.
        vae_batch: clip windows per VAE step.
        vae_window: frames per VAE training window (4k + 1). Whole clips: the causal
            convolutions' temporal reach is longer than a short window, so a VAE trained
            on 9-frame windows reconstructs later frames of a 33-frame clip badly.
        vae_crop: side of the square pixel crop of each VAE window (multiple of 16;
            crops keep a step cheap, the VAE is convolutional).
        vae_lr: peak AdamW learning rate of the VAE.
        kl_weight: weight of the mean KL term against the mean reconstruction error.
        foreground_weight: extra weight of pixels that differ from their frame's median
            colour (:func:`foreground_weights`): the scenes are small objects on plain
            backgrounds, and an unweighted loss first learns the background alone.
        transformer_steps: optimiser steps of the transformer.
        heldout_every: steps between two measurements of the transformer's flow loss on the
            held-out clips (fixed σ and noise, so the curve moves only with the weights; 0:
            never).
        transformer_batch: latents per transformer step.
        transformer_lr: peak AdamW learning rate of the transformer.
        prompt_dropout: share of training prompts replaced by the empty prompt (for
            classifier-free guidance).
        shift: σ shift of the training schedule (:class:`pila.flow.SigmaSampler`; the
            scheduler samples with the same shift).
        warmup_steps: linear warm-up of both parts, then cosine decay to 10 %.
        steps_per_epoch: optimiser steps per block of data keys and between two checkpoints
            (:class:`~pila.lab.world_parts.RunKeys`).
        max_sequence_length: text tokens per prompt (``WanPipeline``'s default, 512).
        transformer_layers: override of the transformer depth (None: the world's).
        vae_from: a world folder (or ``lab``, the shipped world) whose trained VAE is
            taken instead of training one: both VAE phases are skipped, their records are
            copied from that world's ``training.json``, and only the transformer trains.
        spatial_compression: pixels per latent side, 4 (the world's, :data:`WORLD_VAE_CONFIG`)
            or 8 (Wan's, :data:`WORLD_VAE_CONFIG_8X`).
    """

    seed: int = 0
    num_frames: int = 33
    height: int = 64
    width: int = 64
    clips_per_scene: int = 64
    heldout_per_scene: int = 2
    scenes: tuple[str, ...] = tuple(SCENES)
    vae_frame_steps: int = 2000
    vae_frame_batch: int = 8
    vae_frame_lr: float = 2e-3
    vae_steps: int = 1500
    vae_batch: int = 2
    vae_window: int = 33
    vae_crop: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4
    foreground_weight: float = 4.0
    transformer_steps: int = 14000
    heldout_every: int = 250
    transformer_batch: int = 8
    transformer_lr: float = 1e-3
    prompt_dropout: float = 0.1
    shift: float = 3.0
    warmup_steps: int = 20
    steps_per_epoch: int = 50
    max_sequence_length: int = 512
    transformer_layers: int | None = None
    vae_from: str | None = None
    spatial_compression: int = 4

    def __post_init__(self) -> None:
        if (self.num_frames - 1) % 4 or self.num_frames < 5:
            raise ValueError(f"num_frames must be 4k + 1 and ≥ 5, got {self.num_frames}")
        if self.height % 16 or self.width % 16 or self.height < 16 or self.width < 16:
            raise ValueError(
                f"height and width must be multiples of 16, got {self.height} × {self.width}"
            )
        if (self.vae_window - 1) % 4 or not 1 <= self.vae_window <= self.num_frames:
            raise ValueError(f"vae_window must be 4k + 1 and ≤ num_frames, got {self.vae_window}")
        if self.vae_crop % 16 or not 16 <= self.vae_crop <= min(self.height, self.width):
            raise ValueError(
                f"vae_crop must be a multiple of 16 within the frame, got {self.vae_crop}"
            )
        at_least_one = ("clips_per_scene", "vae_batch", "vae_frame_batch", "transformer_batch")
        for name in (*at_least_one, "steps_per_epoch", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        counts = (
            "vae_frame_steps",
            "vae_steps",
            "transformer_steps",
            "heldout_per_scene",
            "heldout_every",
        )
        for name in (*counts, "warmup_steps", "foreground_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must lie in [0, 1), got {self.prompt_dropout}")
        if self.clips_per_scene > HELDOUT_INDEX_OFFSET:
            raise ValueError(
                f"clips_per_scene must be ≤ {HELDOUT_INDEX_OFFSET}, got {self.clips_per_scene}"
            )
        unknown = [s for s in self.scenes if s not in SCENES]
        if unknown or not self.scenes:
            raise ValueError(
                f"unknown or no scenes {list(self.scenes)}; valid: {', '.join(SCENES)}"
            )
        if self.transformer_layers is not None and self.transformer_layers < 1:
            raise ValueError(f"transformer_layers must be ≥ 1, got {self.transformer_layers}")
        if self.spatial_compression not in VAE_CONFIGS:
            raise ValueError(
                f"spatial_compression must be one of {sorted(VAE_CONFIGS)}, "
                f"got {self.spatial_compression}"
            )
        if self.vae_from is not None:
            self._check_vae_from()

    def _check_vae_from(self) -> None:
        """:attr:`vae_from` holds a trained VAE of this spatial compression."""
        vae_config = self.vae_folder() / "config.json"
        if not vae_config.is_file():
            raise ValueError(
                f"vae_from {self.vae_from!r} holds no trained VAE (expected a world folder "
                "with vae/config.json, or 'lab')"
            )
        taken = int(read_json(vae_config).get("scale_factor_spatial", 8))
        if taken != self.spatial_compression:
            raise ValueError(
                f"vae_from {self.vae_from!r} compresses {taken}× spatially, not "
                f"{self.spatial_compression}×; pass --spatial-compression {taken}"
            )

    def vae_folder(self) -> Path:
        """The VAE folder of :attr:`vae_from` (``lab`` names the shipped world)."""
        assert self.vae_from is not None
        world = WORLD_FOLDER if self.vae_from == "lab" else Path(self.vae_from)
        return world / "vae"

    def vae_config(self) -> dict[str, Any]:
        """The ``AutoencoderKLWan`` config of this spatial compression."""
        return dict(VAE_CONFIGS[self.spatial_compression])

    def transformer_config(self) -> dict[str, Any]:
        cfg = {**WORLD_TRANSFORMER_CONFIG, "patch_size": PATCH_SIZES[self.spatial_compression]}
        if self.transformer_layers is not None:
            cfg["num_layers"] = self.transformer_layers
        return cfg


# ------------------------------------------------------------------------ clips
@dataclass
class ClipSet:
    """Rendered clips in memory.

    Attributes:
        videos: (N, 3, F, H_px, W_px) uint8.
        prompts: N captions.
        scenes: N scene names.
        indices: N clip indices (the render seed's last entry).
    """

    videos: Tensor
    prompts: list[str]
    scenes: list[str]
    indices: list[int] = field(default_factory=list)

    def pixels(self, rows: Sequence[int] | slice | Tensor) -> Tensor:
        """Clips ``rows`` as float32 in [-1, 1]: (B, 3, F, H_px, W_px)."""
        return self.videos[rows].float().div(127.5).sub(1.0)


def render_clips(config: WorldConfig, heldout: bool = False) -> ClipSet:
    """Render the training (or held-out) clips of every scene, deterministically in the seed."""
    count = config.heldout_per_scene if heldout else config.clips_per_scene
    start = HELDOUT_INDEX_OFFSET if heldout else 0
    videos, prompts, scenes, indices = [], [], [], []
    for scene in config.scenes:
        for index in range(start, start + count):
            clip = render_indexed(
                scene, index, config.seed, config.num_frames, config.height, config.width
            )
            frames = np.clip(np.rint(clip.frames * 255.0), 0, 255).astype(np.uint8)
            videos.append(torch.from_numpy(frames).permute(3, 0, 1, 2))  # (3, F, H_px, W_px)
            prompts.append(clip.prompt)
            scenes.append(scene)
            indices.append(index)
    if videos:
        stacked = torch.stack(videos)  # (N, 3, F, H_px, W_px)
    else:
        size = (0, 3, config.num_frames, config.height, config.width)
        stacked = torch.zeros(size, dtype=torch.uint8)
    return ClipSet(stacked, prompts, scenes, indices)

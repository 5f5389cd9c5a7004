"""The lab world: a small Wan trained from scratch on the lab's scenes (lab.md, section 2).

Shapes: N clips, B batch, F pixel frames, H_px, W_px pixel height and width, C latent
channels (16), T latent frames (``(F − 1)/4 + 1``), H, W latent height and width
(pixels / :attr:`WorldConfig.spatial_compression`), L text tokens, D text width.

The world is a diffusers ``WanPipeline`` folder, trained in two parts, each a
``LightningModule`` fitted by a ``lightning.Trainer``:

1. :class:`VAEPart`: an ``AutoencoderKLWan`` learns to reconstruct windows of scene clips
   (L1 + MSE reconstruction and a small KL to the unit Gaussian).
2. The VAE's latent statistics go into its config (``latents_mean``/``latents_std``), so
   :meth:`pila.backbone.wan.WanBackbone.encode_video` normalises its latents, and every
   training clip is encoded once.
3. :class:`TransformerPart`: a ``WanTransformer3DModel`` learns the flow-matching velocity
   of :mod:`pila.flow` on those normalised latents, conditioned on the prompts as
   ``WanPipeline`` encodes them, with a share of empty prompts so classifier-free guidance
   works.

The text encoder (a seeded, frozen small UMT5), the byte-level tokenizer and the UniPC
flow scheduler are those of the tiny preset (:mod:`pila.backbone.tiny`). Clips are
rendered in memory from :mod:`pila.lab.scenes`; held-out clips use indices disjoint from
the training ones (from :data:`HELDOUT_INDEX_OFFSET`).

Determinism: every batch's clips, windows, prompt drops, σ and noise are functions of
(seed, epoch, step), so a run resumed from an epoch-end checkpoint draws what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.configuration_utils import FrozenDict
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pila.backbone.tiny import TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, build_tiny_pipeline
from pila.flow import SigmaSampler, noisy_latent, sigma_to_timestep, velocity_target
from pila.lab import WORLD_FOLDER
from pila.lab.scenes import SCENES, render_indexed

log = logging.getLogger(__name__)

__all__ = ["WORLD_FOLDER", "WORLD_VAE_CONFIG", "WORLD_VAE_CONFIG_8X", "WorldConfig", "train_world"]

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
"""Wan's own 8× spatial layout at the world's width (``--spatial-compression 8``; ~2.6 M parameters)."""

WORLD_TRANSFORMER_CONFIG: dict[str, Any] = {
    **TINY_TRANSFORMER_CONFIG,
    # our choice: width 128 (4 heads × 32), 5 layers, ~1.3 M parameters; sized for CPU training
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "freq_dim": 64,
    "ffn_dim": 512,
    "num_layers": 5,
}
"""``WanTransformer3DModel`` of the world (text width = the tiny UMT5's). Its patch follows
the VAE (:meth:`WorldConfig.transformer_config`) so that both layouts give 4 × 4 tokens per
latent frame at 64 × 64 pixels."""

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
        transformer_batch: latents per transformer step.
        transformer_lr: peak AdamW learning rate of the transformer.
        prompt_dropout: share of training prompts replaced by the empty prompt (for
            classifier-free guidance).
        shift: σ shift of the training schedule (:class:`pila.flow.SigmaSampler`; the
            scheduler samples with the same shift).
        warmup_steps: linear warm-up of both parts, then cosine decay to 10 %.
        steps_per_epoch: optimiser steps per epoch (a checkpoint is written at each epoch's end).
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
    clips_per_scene: int = 32
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
    transformer_steps: int = 5500
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
            raise ValueError(f"height and width must be multiples of 16, got {self.height} × {self.width}")
        if (self.vae_window - 1) % 4 or not 1 <= self.vae_window <= self.num_frames:
            raise ValueError(f"vae_window must be 4k + 1 and ≤ num_frames, got {self.vae_window}")
        if self.vae_crop % 16 or not 16 <= self.vae_crop <= min(self.height, self.width):
            raise ValueError(f"vae_crop must be a multiple of 16 within the frame, got {self.vae_crop}")
        for name in ("clips_per_scene", "vae_batch", "vae_frame_batch", "transformer_batch", "steps_per_epoch", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("vae_frame_steps", "vae_steps", "transformer_steps", "heldout_per_scene", "warmup_steps", "foreground_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must lie in [0, 1), got {self.prompt_dropout}")
        if self.clips_per_scene > HELDOUT_INDEX_OFFSET:
            raise ValueError(f"clips_per_scene must be ≤ {HELDOUT_INDEX_OFFSET}, got {self.clips_per_scene}")
        unknown = [s for s in self.scenes if s not in SCENES]
        if unknown or not self.scenes:
            raise ValueError(f"unknown or no scenes {list(self.scenes)}; valid: {', '.join(SCENES)}")
        if self.transformer_layers is not None and self.transformer_layers < 1:
            raise ValueError(f"transformer_layers must be ≥ 1, got {self.transformer_layers}")
        if self.spatial_compression not in VAE_CONFIGS:
            raise ValueError(f"spatial_compression must be one of {sorted(VAE_CONFIGS)}, got {self.spatial_compression}")
        if self.vae_from is not None:
            vae_config = self.vae_folder() / "config.json"
            if not vae_config.is_file():
                raise ValueError(f"vae_from {self.vae_from!r} holds no trained VAE (expected a world folder with vae/config.json, or 'lab')")
            taken = int(json.loads(vae_config.read_text(encoding="utf-8")).get("scale_factor_spatial", 8))
            if taken != self.spatial_compression:
                raise ValueError(f"vae_from {self.vae_from!r} compresses {taken}× spatially, not {self.spatial_compression}×; pass --spatial-compression {taken}")

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
            clip = render_indexed(scene, index, config.seed, config.num_frames, config.height, config.width)
            frames = np.clip(np.rint(clip.frames * 255.0), 0, 255).astype(np.uint8)  # (F, H_px, W_px, 3)
            videos.append(torch.from_numpy(frames).permute(3, 0, 1, 2))  # (3, F, H_px, W_px)
            prompts.append(clip.prompt)
            scenes.append(scene)
            indices.append(index)
    stacked = torch.stack(videos) if videos else torch.zeros(0, 3, config.num_frames, config.height, config.width, dtype=torch.uint8)
    return ClipSet(stacked, prompts, scenes, indices)


# -------------------------------------------------------------- seeded batches
def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A torch generator fixed by (seed, step, stream): the same draws on a resumed run."""
    mixed = np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & ((1 << 63) - 1))


class EpochKeys(Sampler):
    """Yields one epoch's dataset keys, a pure function of (seed, epoch).

    Lightning calls :meth:`set_epoch` before each epoch, so a resumed run (from an
    epoch-end checkpoint) continues with the keys the uninterrupted run would have used.

    Args:
        num_clips: clips to draw from (each epoch walks a fresh permutation, cycling).
        length: keys per epoch.
        seed: base seed.
        window: (num_frames, window) to draw a window start for each key, or None.
        crop: (height, width, crop) to draw a square crop's corner for each key, or None.
        drop: probability that a key asks for the empty prompt.
    """

    def __init__(
        self,
        num_clips: int,
        length: int,
        seed: int,
        window: tuple[int, int] | None = None,
        crop: tuple[int, int, int] | None = None,
        drop: float = 0.0,
    ) -> None:
        self.num_clips, self.length, self.seed = num_clips, length, seed
        self.window, self.crop, self.drop = window, crop, drop
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int, int, int, bool]]:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        reps = math.ceil(self.length / self.num_clips)
        order = np.concatenate([rng.permutation(self.num_clips) for _ in range(reps)])[: self.length]
        starts = np.zeros(self.length, dtype=np.int64)
        if self.window is not None:
            num_frames, window = self.window
            starts = rng.integers(0, num_frames - window + 1, size=self.length)
        tops = np.zeros(self.length, dtype=np.int64)
        lefts = np.zeros(self.length, dtype=np.int64)
        if self.crop is not None:
            height, width, crop = self.crop
            tops = rng.integers(0, height - crop + 1, size=self.length)
            lefts = rng.integers(0, width - crop + 1, size=self.length)
        drops = rng.random(self.length) < self.drop
        yield from zip(order.tolist(), starts.tolist(), tops.tolist(), lefts.tolist(), drops.tolist(), strict=True)


class WindowData(Dataset):
    """Key (clip, start, top, left, _) → a window of the clip: (3, window, crop, crop) in [-1, 1]."""

    def __init__(self, clips: ClipSet, window: int, crop: int) -> None:
        self.clips, self.window, self.crop = clips, window, crop

    def __len__(self) -> int:
        return len(self.clips.prompts)

    def __getitem__(self, key: tuple[int, int, int, int, bool]) -> Tensor:
        clip, start, top, left, _ = key
        return self.clips.pixels(clip)[:, start : start + self.window, top : top + self.crop, left : left + self.crop]


class LatentData(Dataset):
    """Key (clip, _, drop) → (normalised latent (C, T, H, W), prompt embedding (L, D))."""

    def __init__(self, latents: Tensor, prompt_ids: Tensor, embeds: Tensor, empty_id: int) -> None:
        self.latents, self.prompt_ids, self.embeds, self.empty_id = latents, prompt_ids, embeds, empty_id

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, key: tuple[int, int, int, int, bool]) -> tuple[Tensor, Tensor]:
        clip, _, _, _, drop = key
        prompt = self.empty_id if drop else int(self.prompt_ids[clip])
        return self.latents[clip], self.embeds[prompt]


def _warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Learning-rate factor: linear warm-up, then cosine to ``floor`` (our choice: 10 %)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------- the parts
class _Part(L.LightningModule):
    """What both parts share: the step-seeded draws, the schedule and wall-time bookkeeping."""

    def __init__(self, seed: int, lr: float, total_steps: int, warmup_steps: int) -> None:
        super().__init__()
        self.seed, self.lr, self.total_steps, self.warmup_steps = seed, lr, total_steps, warmup_steps
        self.train_seconds = 0.0  # summed over resumed runs (kept in the checkpoint)
        self.recent_losses: list[float] = []
        self._tick = 0.0

    def configure_optimizers(self):
        # each part holds exactly the model it trains (the VAE or the transformer)
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup_cosine(s, self.warmup_steps, self.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._tick = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.train_seconds += time.perf_counter() - self._tick
        self.recent_losses = (self.recent_losses + [float(outputs["loss"])])[-50:]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["world_part"] = {"train_seconds": self.train_seconds, "recent_losses": self.recent_losses}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("world_part", {})
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.recent_losses = list(state.get("recent_losses", []))


def decode_unclamped(vae: AutoencoderKLWan, z: Tensor) -> Tensor:
    """``AutoencoderKLWan``'s frame-by-frame decode without its final clamp to [-1, 1].

    The clamp has no gradient where the output leaves [-1, 1], which stalls training
    from a random start; the loss is taken on the raw output instead.

    Args:
        z: (B, C, T, H, W) raw (not normalised) latents.

    Returns:
        (B, 3, F, H_px, W_px).
    """
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, dim=2)


def foreground_weights(x: Tensor, strength: float) -> Tensor:
    """Per-pixel loss weights ``1 + strength·Σ_c |x − median colour of the frame|``.

    Args:
        x: (B, 3, F, H_px, W_px) in [-1, 1].

    Returns:
        (B, 1, F, H_px, W_px).
    """
    background = x.flatten(3).median(dim=3).values[..., None, None]  # (B, 3, F, 1, 1)
    return 1.0 + strength * (x - background).abs().sum(dim=1, keepdim=True)


def frame_by_frame_init(vae: AutoencoderKLWan) -> None:
    """Start ``vae`` as a per-frame codec, so its clip path begins where its frame path is.

    A single frame (the first of every clip, and every sample of the first training phase)
    reaches only the last temporal tap of each causal 3-D convolution and skips the
    temporal resamplers: the other taps and the resamplers' ``time_conv`` get no gradient
    from frames, and at their random initialisation they mix every later frame with noise.
    So (our choice) those earlier taps start at zero and each ``time_conv`` starts as the
    identity on its last tap: the encoder keeps the last frame of each temporal stride, the
    decoder repeats each latent frame. Latent frame k is then the single-frame code of pixel
    frame 4k, and decoding repeats it; the clip phase learns the temporal mixing from there.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample

    time_convs = {id(m.time_conv) for m in vae.modules() if isinstance(m, WanResample) and hasattr(m, "time_conv")}
    with torch.no_grad():
        for module in vae.modules():
            if not isinstance(module, WanCausalConv3d) or module.kernel_size[0] == 1:
                continue
            weight = module.weight  # (out, in, kt, kh, kw)
            if id(module) in time_convs:  # kernel (3, 1, 1); out = in (encoder) or 2 × in (decoder)
                weight.zero_()
                module.bias.zero_()
                eye = torch.eye(weight.shape[1], dtype=weight.dtype)
                for half in range(weight.shape[0] // weight.shape[1]):
                    weight[half * weight.shape[1] : (half + 1) * weight.shape[1], :, -1, 0, 0] = eye
            else:
                weight[:, :, :-1].zero_()


LOGVAR_INIT = -6.0
"""Initial posterior log-variance (our choice): σ ≈ 0.05 at the start, so the sampled latent
carries the encoder's signal from the first step (a unit σ drowns it and the decoder learns
only the mean colour)."""


class VAEPart(_Part):
    """Part 1: ``AutoencoderKLWan`` trained on clip windows (reconstruction + small KL).

    Args:
        vae_config: the ``AutoencoderKLWan`` config.
        seed: seeds initialisation and the posterior samples.
        lr: peak learning rate.
        total_steps: steps of the schedule.
        warmup_steps: warm-up steps.
        kl_weight: weight of the mean KL.
        foreground_weight: strength of :func:`foreground_weights` (0: a plain mean).
    """

    def __init__(
        self, vae_config: dict[str, Any], seed: int, lr: float, total_steps: int, warmup_steps: int, kl_weight: float, foreground_weight: float = 0.0
    ) -> None:
        super().__init__(seed, lr, total_steps, warmup_steps)
        self.save_hyperparameters()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vae = AutoencoderKLWan(**vae_config)
        frame_by_frame_init(self.vae)
        z_dim = int(self.vae.config.z_dim)
        with torch.no_grad():
            self.vae.quant_conv.bias[z_dim:].fill_(LOGVAR_INIT)  # the log-variance half
        self.kl_weight, self.foreground_weight = kl_weight, foreground_weight

    def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        """``batch``: (B, 3, F, H_px, W_px) in [-1, 1]."""
        # 1. encode to the posterior and draw from it
        dist = self.vae.encode(batch).latent_dist
        gen = step_generator(self.seed, self.global_step, 1)
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen).to(dist.mean)  # (B, C, T, H, W)
        # 2. decode and compare
        recon = decode_unclamped(self.vae, z)  # (B, 3, F, H_px, W_px)
        err = recon - batch
        weights = foreground_weights(batch, self.foreground_weight)  # (B, 1, F, H_px, W_px)
        l1 = (err.abs() * weights).mean() / weights.mean()  # weighted means over all pixels
        wmse = (err.pow(2) * weights).mean() / weights.mean()
        mse = err.detach().pow(2).mean()
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
        loss = l1 + wmse + self.kl_weight * kl
        psnr = 10.0 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # range [-1, 1] → peak² = 4
        self.log_dict({"train/loss": loss, "train/l1": l1, "train/mse": mse, "train/kl": kl, "train/psnr": psnr}, prog_bar=True)
        return {"loss": loss}


class TransformerPart(_Part):
    """Part 2: ``WanTransformer3DModel`` trained with :mod:`pila.flow`'s objective on normalised latents.

    Args:
        transformer_config: the ``WanTransformer3DModel`` config.
        seed: seeds initialisation, σ and noise.
        lr: peak learning rate.
        total_steps: steps of the schedule.
        warmup_steps: warm-up steps.
        shift: σ shift of the training schedule.
    """

    def __init__(self, transformer_config: dict[str, Any], seed: int, lr: float, total_steps: int, warmup_steps: int, shift: float) -> None:
        super().__init__(seed, lr, total_steps, warmup_steps)
        self.save_hyperparameters()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.transformer = WanTransformer3DModel(**transformer_config)
        self.sigmas = SigmaSampler(shift=shift)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``batch``: latents (B, C, T, H, W), prompt embeddings (B, L, D)."""
        x0, text = batch
        gen = step_generator(self.seed, self.global_step, 2)
        # 1. noise level and noise
        sigma = self.sigmas.sample(x0.shape[0], generator=gen)  # (B,)
        noise = torch.randn(x0.shape, generator=gen).to(x0)  # (B, C, T, H, W)
        # 2. the straight path and its velocity
        x_t = noisy_latent(x0, noise, sigma)
        target = velocity_target(x0, noise)
        # 3. predict
        pred = self.transformer(hidden_states=x_t, timestep=sigma_to_timestep(sigma), encoder_hidden_states=text, return_dict=False)[0]
        loss = F.mse_loss(pred, target)
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss}


# ----------------------------------------------------------------- training
def _trainer(out: Path, part: str, max_steps: int, progress: bool) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    checkpoint = ModelCheckpoint(dirpath=out / part / "checkpoints", save_last=True, save_top_k=0, every_n_epochs=1)
    # one log version per run (logs/version_0, version_1 after a resume, ...): nothing is overwritten
    version = len(list((out / part / "logs").glob("version_*")))
    loggers = [CSVLogger(out / part, name="logs", version=version), TensorBoardLogger(out / part, name="logs", version=version)]
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=loggers,
        callbacks=[checkpoint],
        deterministic=True,
        gradient_clip_val=1.0,  # our choice
        log_every_n_steps=5 if max_steps >= 100 else 1,  # our choice
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out),
    )


def _fit(trainer: L.Trainer, module: _Part, loader: DataLoader, ckpt_path: str | None) -> float:
    """Fit; returns the wall seconds of this call."""
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return time.perf_counter() - start


@torch.no_grad()
def encode_clips(vae: AutoencoderKLWan, clips: ClipSet, batch: int = 4) -> Tensor:
    """Posterior means of the clips: (N, C, T, H, W) float32 (not normalised)."""
    out = []
    for i in range(0, len(clips.prompts), batch):
        out.append(vae.encode(clips.pixels(slice(i, i + batch))).latent_dist.mode().float())
    return torch.cat(out)


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKLWan, clips: ClipSet, batch: int = 4) -> dict[str, float]:
    """PSNR (dB, pixels in [0, 1]) of the VAE's reconstructions: per scene and overall (mean of per-clip PSNRs)."""
    per_clip = []
    for i in range(0, len(clips.prompts), batch):
        x = clips.pixels(slice(i, i + batch))
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((y - x) / 2.0).pow(2).flatten(1).mean(1)  # (B,) on the [0, 1] scale
        per_clip += (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).tolist()
    result: dict[str, float] = {}
    for scene in dict.fromkeys(clips.scenes):
        values = [p for p, s in zip(per_clip, clips.scenes, strict=True) if s == scene]
        result[scene] = float(np.mean(values))
    result["overall"] = float(np.mean(per_clip)) if per_clip else float("nan")
    return result


def _window_loader(clips: ClipSet, config: WorldConfig, *, window: int, crop: int, batch: int, seed: int) -> DataLoader:
    """Batches of ``window``-frame, ``crop``-pixel windows of the clips, drawn per epoch by :class:`EpochKeys`."""
    return DataLoader(
        WindowData(clips, window, crop),
        batch_size=batch,
        sampler=EpochKeys(
            len(clips.prompts),
            config.steps_per_epoch * batch,
            seed,
            window=(config.num_frames, window),
            crop=(config.height, config.width, crop),
        ),
        num_workers=0,
    )


def _resolve_ckpt(out: Path, part: str, ckpt_path: str | None) -> str | None:
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        last = out / part / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return ckpt_path


@dataclass
class PartReport:
    """What a part's training left: steps, wall time, losses."""

    steps: int
    wall_seconds: float
    train_seconds: float
    final_loss: float
    seconds_per_step: float


def _report(module: _Part, trainer: L.Trainer, wall: float) -> PartReport:
    recent = module.recent_losses[-20:]
    steps = int(trainer.global_step)
    return PartReport(
        steps=steps,
        wall_seconds=wall,
        train_seconds=module.train_seconds,
        final_loss=float(np.mean(recent)) if recent else float("nan"),
        seconds_per_step=module.train_seconds / steps if steps else float("nan"),
    )


def _train_vae(base: Path, config: WorldConfig, train_clips: ClipSet, ckpt_path: str | None, progress: bool) -> tuple[AutoencoderKLWan, PartReport, PartReport]:
    """Both VAE phases; returns the trained VAE (eval mode) and each phase's report."""
    frames_part = VAEPart(config.vae_config(), config.seed, config.vae_frame_lr, config.vae_frame_steps, config.warmup_steps, config.kl_weight, config.foreground_weight)
    side = min(config.height, config.width)
    frames_loader = _window_loader(train_clips, config, window=1, crop=side, batch=config.vae_frame_batch, seed=config.seed + 2)
    frames_report = PartReport(steps=0, wall_seconds=0.0, train_seconds=0.0, final_loss=float("nan"), seconds_per_step=float("nan"))
    if config.vae_frame_steps:
        trainer = _trainer(base, "vae_frames", config.vae_frame_steps, progress)
        wall = _fit(trainer, frames_part, frames_loader, _resolve_ckpt(base, "vae_frames", ckpt_path))
        frames_report = _report(frames_part, trainer, wall)

    vae_part = VAEPart(config.vae_config(), config.seed, config.vae_lr, config.vae_steps, config.warmup_steps, config.kl_weight, config.foreground_weight)
    if config.vae_frame_steps:
        vae_part.vae.load_state_dict(frames_part.vae.state_dict())  # a resumed run restores its checkpoint over this
    vae_loader = _window_loader(train_clips, config, window=config.vae_window, crop=config.vae_crop, batch=config.vae_batch, seed=config.seed)
    trainer = _trainer(base, "vae", config.vae_steps, progress)
    wall = _fit(trainer, vae_part, vae_loader, _resolve_ckpt(base, "vae", ckpt_path))
    return vae_part.vae.eval(), frames_report, _report(vae_part, trainer, wall)


def _taken_vae(config: WorldConfig) -> tuple[AutoencoderKLWan, PartReport, PartReport, WorldConfig]:
    """The trained VAE of :attr:`WorldConfig.vae_from`, with the phase reports and the config its
    world recorded (NaN reports and this config where it recorded none)."""
    folder = config.vae_folder()
    vae = AutoencoderKLWan.from_pretrained(str(folder)).eval()
    # the loaded config names the folder it came from; the world written here must not
    vae._internal_dict = FrozenDict({k: v for k, v in vae.config.items() if k != "_name_or_path"})
    record_file = folder.parent / "training.json"
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    missing = PartReport(steps=0, wall_seconds=float("nan"), train_seconds=float("nan"), final_loss=float("nan"), seconds_per_step=float("nan"))
    reports = [PartReport(**record[key]) if key in record else missing for key in ("vae_frames", "vae")]
    source = config
    recorded = record.get("vae_config", record.get("config"))  # a world that took its VAE recorded the VAE's own
    if recorded:
        fields_ = {k: v for k, v in recorded.items() if k in WorldConfig.__dataclass_fields__ and k != "vae_from"}
        source = WorldConfig(**{**fields_, "scenes": tuple(fields_.get("scenes", config.scenes))})
    log.info("took the trained VAE of %s (not retrained)", folder)
    return vae, reports[0], reports[1], source



def train_world(out: str | os.PathLike, config: WorldConfig, *, ckpt_path: str | None = None, progress: bool = True, command: str = "") -> Path:
    """Train the VAE, then the transformer, and write ``out/world`` (a ``WanPipeline`` folder + card).

    Args:
        out: the output folder (checkpoints and logs per part, latents, the world).
        config: what to train.
        ckpt_path: ``"last"`` resumes each part from its last checkpoint (a finished part
            is not retrained); a path resumes the part it belongs to; None starts afresh.
        progress: show Lightning's progress bars.
        command: the command line, recorded in the card.

    Returns:
        The world folder.
    """
    from safetensors.torch import load_file, save_file

    from pila.backbone.wan import WanBackbone

    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    L.seed_everything(config.seed, workers=True, verbose=False)

    # 1. clips
    train_clips = render_clips(config)
    heldout = render_clips(config, heldout=True)
    log.info("rendered %d training and %d held-out clips", len(train_clips.prompts), len(heldout.prompts))

    # 2. the VAE: single frames first (cheap; the spatial path), then whole clips (the temporal path)
    if config.vae_from is not None:
        vae, frames_report, vae_report, vae_config = _taken_vae(config)
    else:
        vae, frames_report, vae_report = _train_vae(base, config, train_clips, ckpt_path, progress)
        vae_config = config

    # 3. latent statistics into the VAE config, then the normalised training latents
    latents_file = base / "latents.safetensors"
    vae_ckpt = base / "vae" / "checkpoints" / "last.ckpt"
    if ckpt_path is not None and latents_file.is_file() and (not vae_ckpt.is_file() or vae_ckpt.stat().st_mtime <= latents_file.stat().st_mtime):
        stored = load_file(str(latents_file))
        mean, std, latents = stored["mean"], stored["std"], stored["latents"]
    else:
        mu = encode_clips(vae, train_clips)  # (N, C, T, H, W)
        mean = mu.mean(dim=(0, 2, 3, 4))  # (C,)
        std = mu.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)  # (C,)
        latents = (mu - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
        save_file({"mean": mean, "std": std, "latents": latents.contiguous()}, str(latents_file))
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean], latents_std=[round(float(v), 6) for v in std])
    psnr = reconstruction_psnr(vae, heldout) if heldout.prompts else {}

    # 4. the pipeline around it: the tiny preset's text encoder, tokenizer and scheduler
    pipe = build_tiny_pipeline(seed=config.seed, transformer=config.transformer_config(), vae=config.vae_config())
    pipe.register_modules(vae=vae)
    unique = sorted(set(train_clips.prompts))
    text = WanBackbone(pipe).encode_prompt(unique + [""], max_sequence_length=config.max_sequence_length)
    embeds = text.embeds  # (U + 1, L, D); the last row is the empty prompt
    prompt_ids = torch.tensor([unique.index(p) for p in train_clips.prompts])

    # 5. the transformer
    tr_part = TransformerPart(config.transformer_config(), config.seed, config.transformer_lr, config.transformer_steps, config.warmup_steps, config.shift)
    tr_loader = DataLoader(
        LatentData(latents, prompt_ids, embeds, empty_id=len(unique)),
        batch_size=config.transformer_batch,
        sampler=EpochKeys(len(train_clips.prompts), config.steps_per_epoch * config.transformer_batch, config.seed + 1, drop=config.prompt_dropout),
        num_workers=0,
    )
    trainer = _trainer(base, "transformer", config.transformer_steps, progress)
    wall = _fit(trainer, tr_part, tr_loader, _resolve_ckpt(base, "transformer", ckpt_path))
    tr_report = _report(tr_part, trainer, wall)

    # 6. the world folder and its card
    pipe.register_modules(transformer=tr_part.transformer.eval())
    world = base / "world"
    pipe.save_pretrained(str(world), safe_serialization=True)
    write_card(world, config, command=command, vae_frames=frames_report, vae=vae_report, transformer=tr_report, psnr=psnr, vae_config=vae_config)
    return world


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 1e6


WEIGHTS_LICENSE = (
    "## License",
    "",
    "The weights and the files beside them are released under the Apache License 2.0",
    "(`Apache-2.0`), as the pila package is (its `LICENSE`). They were trained from scratch by",
    "`pila lab pretrain` on clips the lab renders itself (`pila.lab.scenes`); the text encoder is",
    "a seeded random UMT5 and the tokenizer is built in code: no third-party weights or data are in them.",
    "",
)
"""The card's license section: the weights are the package's, Apache-2.0 (``pyproject.toml``)."""


def write_card(
    world: Path,
    config: WorldConfig,
    *,
    command: str,
    vae_frames: PartReport,
    vae: PartReport,
    transformer: PartReport,
    psnr: dict[str, float],
    vae_config: WorldConfig | None = None,
) -> None:
    """Write ``world/README.md``: how it was trained and how good it is (``vae_config``: the
    config the VAE was trained with, when it was taken from another world)."""
    vc = vae_config or config
    vae_params = sum(p.numel() for p in AutoencoderKLWan(**config.vae_config()).parameters())
    tr_params = sum(p.numel() for p in WanTransformer3DModel(**config.transformer_config()).parameters())
    latent_t = (config.num_frames - 1) // 4 + 1
    bullet, which = ("  - ", "in that run") if config.vae_from is not None else ("- ", "this run")
    lines = [
        "# The lab world",
        "",
        "A small Wan trained from scratch on the physics lab's eight procedural scenes",
        "(`pila.lab.scenes`), in the diffusers `WanPipeline` layout. Load it with",
        "`WanBackbone.from_pretrained(\"lab\")` or `diffusers.WanPipeline.from_pretrained(<this folder>)`.",
        "",
        *WEIGHTS_LICENSE,
        "## Training",
        "",
        f"- Command: `{command}`" if command else "- Command: (called from Python)",
        f"- Seed: {config.seed}; torch threads: {torch.get_num_threads()}",
        f"- Clips: {config.clips_per_scene} per scene × {len(config.scenes)} scenes, {config.num_frames} frames at "
        f"{config.height} × {config.width} (latents 16 × {latent_t} × {config.height // config.spatial_compression} × {config.width // config.spatial_compression}, {config.spatial_compression}× spatial compression); "
        f"held out: {config.heldout_per_scene} per scene (indices from {HELDOUT_INDEX_OFFSET})",
        *(
            [f"- VAE: taken from `{config.vae_from}` (not retrained here); its own training, as that world recorded it:"]
            if config.vae_from is not None
            else []
        ),
        f"{bullet}VAE (`AutoencoderKLWan`, {vae_params / 1e6:.2f} M parameters), phase 1: {vae_frames.steps} steps × "
        f"{vc.vae_frame_batch} single frames at {vc.height} × {vc.width} px, peak lr {vc.vae_frame_lr:g}; "
        f"wall {vae_frames.wall_seconds / 60:.1f} min {which}, {vae_frames.train_seconds / 60:.1f} min of training steps in all "
        f"({vae_frames.seconds_per_step:.2f} s/step); final loss {vae_frames.final_loss:.4f}",
        f"{bullet}VAE, phase 2: {vae.steps} steps × {vc.vae_batch} windows of "
        f"{vc.vae_window} frames at {vc.vae_crop} × {vc.vae_crop} px, foreground-weighted (strength {vc.foreground_weight:g}) L1 + MSE + {vc.kl_weight:g}·KL, peak lr {vc.vae_lr:g}; wall {vae.wall_seconds / 60:.1f} min {which}, "
        f"{vae.train_seconds / 60:.1f} min of training steps in all ({vae.seconds_per_step:.2f} s/step); final loss {vae.final_loss:.4f}",
        f"- Transformer (`WanTransformer3DModel`, {tr_params / 1e6:.2f} M parameters): {transformer.steps} steps × "
        f"{config.transformer_batch} latents, flow matching (`pila.flow`, shift {config.shift:g}), "
        f"{config.prompt_dropout:.0%} empty prompts; wall {transformer.wall_seconds / 60:.1f} min this run, "
        f"{transformer.train_seconds / 60:.1f} min of training steps in all ({transformer.seconds_per_step:.2f} s/step); "
        f"final loss {transformer.final_loss:.4f}",
        "- Text encoder, tokenizer, scheduler: the tiny preset's (`pila.backbone.tiny`): a frozen seeded "
        "UMT5 (not trained), a byte-level tokenizer, UniPC with flow shift 3.",
        f"- Weights: {_size_mb(world):.1f} MB of safetensors.",
        "",
        "## Quality",
        "",
        "VAE reconstruction of held-out clips (PSNR in dB, pixels in [0, 1], mean over clips):",
        "",
        "| scene | PSNR |",
        "|---|---|",
    ]
    lines += [f"| {scene} | {value:.2f} |" for scene, value in psnr.items()]
    lines += ["", "Ruler-based figures (scene fidelity, violation vs ground truth) are measured with `pila lab evaluate`.", ""]
    (world / "README.md").write_text("\n".join(lines), encoding="utf-8")
    (world / "training.json").write_text(
        json.dumps({"config": asdict(config), "vae_frames": asdict(vae_frames), "vae": asdict(vae), "vae_config": asdict(vc), "transformer": asdict(transformer), "heldout_psnr": psnr}, indent=2),
        encoding="utf-8",
    )

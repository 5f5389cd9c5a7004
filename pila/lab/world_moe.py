"""``lab-moe``: the lab's second world, in Wan 2.2-A14B's two-expert layout.

Wan 2.2-A14B splits denoising between two transformers: ``transformer`` (the high-noise
expert) takes every step whose timestep is at least ``boundary_ratio`` × 1000,
``transformer_2`` (the low-noise expert) the rest, and diffusers' ``WanPipeline`` holds both
and switches between them (formats.md: ``boundary_ratio`` 0.875). ``lab-moe`` has that
layout on the lab world's VAE, text encoder, tokenizer and scheduler. Its experts are other
generators than the lab world's transformer: each is that transformer fine-tuned with a LoRA
on its own σ range, on clips of a world seed nothing else renders (:attr:`MoeConfig.seed`),
so an adapter trained on ``lab`` meets dynamics it was not trained with, as the paper's
adapter trained on Wan 2.1-1.3B meets Wan 2.2-A14B.

What ships (:data:`MOE_FOLDER`): the two LoRAs (``transformer/`` and ``transformer_2/``, each
diffusers' ``pytorch_lora_weights.safetensors``), ``moe.json`` and the card. The diffusers
folder is built from them and the lab world on first use (:func:`world_folder`: the LoRAs
fused into two copies of the lab transformer, seconds) and cached under :func:`cache_root`,
named by the SHA-256 of everything it is built from; the backbone name ``lab-moe`` resolves
to it (:data:`pila.backbone.folders.BUILT_FOLDERS`).

:func:`pila.lab.pretrain.train_moe_world` trains the experts (``pila lab pretrain --world
lab-moe``) with the lab world's own training part
(:class:`~pila.lab.world_parts.TransformerPart`: seeded batches, held-out curve, resumable
checkpoints).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pila.backbone.folders import LAB_WORLD_FOLDER
from pila.io import atomic_folder
from pila.stages.finetune import LORA_WEIGHTS

log = logging.getLogger(__name__)

MOE_FOLDER = Path(__file__).resolve().parent / "world_moe"
"""The shipped experts of ``lab-moe`` (their LoRAs, ``moe.json`` and the card)."""

EXPERTS_ENV = "PILA_LAB_MOE_EXPERTS"
"""Environment variable naming another experts folder for ``lab-moe`` (one ``pila lab
pretrain --world lab-moe`` wrote, ``OUT/world_moe``), in place of :data:`MOE_FOLDER`; child
processes (``pila lab ablate``'s runs) inherit it."""


def experts_folder() -> Path:
    """The experts ``lab-moe`` is built from: ``$PILA_LAB_MOE_EXPERTS``, else
    :data:`MOE_FOLDER`."""
    given = os.environ.get(EXPERTS_ENV)
    return Path(given).expanduser() if given else MOE_FOLDER

BOUNDARY_RATIO = 0.875
"""Wan 2.2-T2V-A14B's ``boundary_ratio`` (its ``model_index.json``; formats.md): the
high-noise expert takes timesteps ≥ 875 of 1000."""

EXPERTS: dict[str, tuple[float, float]] = {
    "transformer": (BOUNDARY_RATIO, 1.0),
    "transformer_2": (0.0, BOUNDARY_RATIO),
}
"""Each expert's σ range (the shifted σ the transformer sees, timestep = 1000·σ): the
pipeline's ``transformer`` for high noise, ``transformer_2`` for low noise."""

MOE_RECORD = "moe.json"
"""The experts' record in :data:`MOE_FOLDER`: boundary, LoRA rank, the base world's hash."""


@dataclass(frozen=True)
class MoeConfig:
    """How the two experts are trained (every default is our choice, sized for the 45-minute
    budget on two CPU cores on top of the lab world).

    Args:
        seed: world seed of the experts' clips, and seed of their LoRAs, data order, σ and
            noise. [ours: 4; the lab world trained on seed 0, the adapters on 1, the
            evaluation sets are captions of 2 and 3]
        clips_per_scene: training clips per scene. [ours]
        heldout_per_scene: held-out clips per scene (the held-out curve). [ours]
        lora_rank: each expert's LoRA rank on every linear layer of the blocks. [ours: 32,
            about 0.53 M trainable parameters, 17 % of the transformer]
        steps: optimiser steps per expert. [ours: 2 × 2400 steps at ≈ 0.35 s]
        lr: peak learning rate (warm-up, then cosine to 10 %). [ours]
        warmup_steps: warm-up steps. [ours]
        batch: latents per step. [ours: the lab world's]
        steps_per_epoch: steps between checkpoints. [ours]
        heldout_every: steps between held-out measurements. [ours]
    """

    seed: int = 4
    clips_per_scene: int = 32
    heldout_per_scene: int = 2
    lora_rank: int = 32
    steps: int = 2400
    lr: float = 1e-3
    warmup_steps: int = 100
    batch: int = 8
    steps_per_epoch: int = 50
    heldout_every: int = 200

    def __post_init__(self) -> None:
        for name in ("clips_per_scene", "lora_rank", "steps", "batch", "steps_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"MoeConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"MoeConfig.lr must be positive, got {self.lr}")

    def world(self):
        """The :class:`~pila.lab.world.WorldConfig` the clips are rendered with: the lab
        world's frames and scenes, this config's seed and counts."""
        from pila.lab.world import WorldConfig

        return replace(
            WorldConfig(),
            seed=self.seed,
            clips_per_scene=self.clips_per_scene,
            heldout_per_scene=self.heldout_per_scene,
            vae_from="lab",
        )


# ----------------------------------------------------------------- the built folder
def cache_root() -> Path:
    """Where built backbones are cached: ``$PILA_CACHE``, else ``$XDG_CACHE_HOME/pila``,
    else ``~/.cache/pila``."""
    if os.environ.get("PILA_CACHE"):
        return Path(os.environ["PILA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pila"


def _check_experts(source: Path) -> None:
    missing = [n for n in EXPERTS if not (source / n / LORA_WEIGHTS).is_file()]
    if missing:
        raise FileNotFoundError(
            f"lab-moe: {source} holds no trained {' or '.join(missing)} expert; train them with "
            f"`pila lab pretrain --world lab-moe --out DIR` and copy DIR/world_moe to {MOE_FOLDER}"
        )


def _digest(files: list[tuple[Path, Path]]) -> str:
    """SHA-256 of files, each under the name it has relative to its root: (root, path)."""
    digest = hashlib.sha256()
    for root, path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _lab_files() -> list[tuple[Path, Path]]:
    """The lab world's files that make its weights and configs (its card aside)."""
    paths = sorted(p for p in LAB_WORLD_FOLDER.rglob("*") if p.is_file() and p.suffix != ".md")
    return [(LAB_WORLD_FOLDER, p) for p in paths]


def lab_world_sha256() -> str:
    """SHA-256 of the lab world the experts are built on (:func:`_lab_files`)."""
    return _digest(_lab_files())


def built_from(source: Path) -> str:
    """SHA-256 of what the folder is built from: the lab world's files (its card aside) and
    the experts' LoRAs and record."""
    names = [f"{n}/{LORA_WEIGHTS}" for n in EXPERTS] + [MOE_RECORD]
    experts = [(source, source / n) for n in names if (source / n).is_file()]
    return _digest(_lab_files() + experts)


def world_folder(
    experts: str | os.PathLike | None = None, cache: str | os.PathLike | None = None
) -> Path:
    """The ``lab-moe`` diffusers folder, built on first use and cached.

    Args:
        experts: the experts' folder (default :func:`experts_folder`: the shipped ones, or
            those ``$PILA_LAB_MOE_EXPERTS`` names).
        cache: where to build (default :func:`cache_root`).

    Raises:
        FileNotFoundError: the experts are missing (with how to train them).
    """
    source = Path(experts) if experts is not None else experts_folder()
    _check_experts(source)
    target = Path(cache or cache_root()) / f"lab-moe-{built_from(source)[:16]}"
    if not (target / "model_index.json").is_file():
        log.info("building the lab-moe world in %s (once)", target)
        with atomic_folder(target) as folder:
            build_pipeline(source).save_pretrained(str(folder))
            for name in ("README.md", MOE_RECORD, "training.json"):
                if (source / name).is_file():
                    shutil.copyfile(source / name, folder / name)
    return target


def build_pipeline(experts: str | os.PathLike = MOE_FOLDER):
    """A ``WanPipeline`` of the lab world's parts with the two experts: each a copy of the
    lab transformer with its LoRA fused in, switched at :data:`BOUNDARY_RATIO`."""
    from diffusers import WanPipeline

    from pila.stages.finetune import fuse_lora

    source = Path(experts)
    _check_experts(source)
    lab = WanPipeline.from_pretrained(str(LAB_WORLD_FOLDER))
    transformers = {}
    for name in EXPERTS:
        transformer = copy.deepcopy(lab.transformer)
        fuse_lora(transformer, source / name)
        transformers[name] = transformer
    return WanPipeline(
        tokenizer=lab.tokenizer,
        text_encoder=lab.text_encoder,
        vae=lab.vae,
        scheduler=lab.scheduler,
        transformer=transformers["transformer"],
        transformer_2=transformers["transformer_2"],
        boundary_ratio=BOUNDARY_RATIO,
    )


def card(training: dict[str, Any], record: dict[str, Any]) -> str:
    """The experts' card (``README.md``): how they were trained and how far each moved."""
    config = training["config"]
    lines = [
        "# lab-moe: the lab world in Wan 2.2's two-expert layout",
        "",
        "The lab world's VAE, text encoder, tokenizer and scheduler with two transformers, as",
        "diffusers' `WanPipeline` holds Wan 2.2-A14B: `transformer` denoises timesteps ≥ "
        f"{1000 * record['boundary_ratio']:.0f} (high noise),",
        "`transformer_2` the rest (low noise).",
        "Each is the lab world's transformer fine-tuned with a LoRA of rank "
        f"{record['lora_rank']} on its own σ range, on clips of world seed {config['seed']}",
        "(nothing else in the lab renders that seed). This folder ships the two LoRAs; the",
        "diffusers folder is built from them and the lab world on first use and cached",
        "(`pila.lab.world_moe.world_folder`). Load it with",
        '`WanBackbone.from_pretrained("lab-moe")` or',
        "`diffusers.WanPipeline.from_pretrained(pila.lab.world_moe.world_folder())`.",
        "",
        "## Training",
        "",
        f"- Command: `{training['command'] or '(called from Python)'}`",
        f"- Clips: {config['clips_per_scene']} per scene of world seed {config['seed']}; "
        f"{config['steps']} steps per expert, batch {config['batch']}, lr {config['lr']:g}",
        "",
        "| expert | regime | σ range | trainable parameters | steps | wall (min) | "
        "held-out flow loss, lab transformer → expert | ‖v_expert − v_lab‖ / ‖v_lab‖ |",
        "|---|---|---|---:|---:|---:|---|---:|",
    ]
    for name, e in training["experts"].items():
        report = e["report"]
        final = e["heldout_curve"][-1][1] if e["heldout_curve"] else float("nan")
        lo, hi = e["sigma_range"]
        lines.append(
            f"| `{name}` | {e['regime']} | [{lo:g}, {hi:g}] | {e['trainable_parameters']:,} | "
            f"{report['steps']} | {report['wall_seconds'] / 60:.1f} | "
            f"{e['heldout_lab_transformer']:.4f} → {final:.4f} | "
            f"{e['relative_velocity_change']:.3f} |"
        )
    lines += [
        "",
        "The held-out flow loss is measured on held-out clips of the same seed, in each",
        "expert's own σ range, with fixed σ and noise draws.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "BOUNDARY_RATIO",
    "EXPERTS",
    "MOE_FOLDER",
    "EXPERTS_ENV",
    "MoeConfig",
    "build_pipeline",
    "built_from",
    "cache_root",
    "experts_folder",
    "lab_world_sha256",
    "world_folder",
]

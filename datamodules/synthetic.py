"""Synthetic physics clips: the lab's scenes written as a WISA-80K-format dataset (no download).

The scenes themselves (eight procedural clips with closed-form physics and the world's
law constants) live in :mod:`pila.lab.scenes`; this module renders them to disk and wraps
them in a data module.

:func:`write_synthetic_dataset` writes the clips as real mp4 files (PyAV, H.264, or
MPEG-4 Part 2 when the PyAV build lacks libx264) with a WISA-80K-format annotation file
(``annotations.json``: a JSON list of records with ``pila_labels``), so ``pila prepare``
and :class:`~pila.datamodules.WISA80KDataModule` read them unchanged. Each video's
ground truth sits next to it as ``<id>.motion.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from safetensors.numpy import save_file

from pila.io import atomic_path, write_json_atomic, write_video
from pila.lab.scenes import SCENES, SceneClip, render_indexed

from .wisa import WISA80KDataModule

log = logging.getLogger(__name__)

ANNOTATION_NAME = "annotations.json"
STAMP_NAME = "synthetic.json"
VIDEO_FOLDER = "videos"
MOTION_SUFFIX = ".motion.safetensors"




# ---------------------------------------------------------------------- writing
@dataclass(frozen=True)
class SyntheticConfig:
    """What synthetic dataset to render.

    Args:
        num_clips_per_category: clips of each scene.
        seed: base seed; clip i of scene s uses ``numpy.random.default_rng([seed, s, i])``.
        num_frames: frames per video.
        fps: frame rate of the mp4 files.
        height: pixel height.
        width: pixel width.
        crf: x264 quality (lower is closer to the rendered frames).
        scenes: which scenes (default all eight).
    """

    num_clips_per_category: int = 4
    seed: int = 0
    num_frames: int = 33
    fps: float = 16.0
    height: int = 64
    width: int = 64
    crf: int = 12
    scenes: tuple[str, ...] = tuple(SCENES)

    def __post_init__(self) -> None:
        if self.num_clips_per_category < 1:
            raise ValueError(
                f"num_clips_per_category must be ≥ 1, got {self.num_clips_per_category}"
            )
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be ≥ 2, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.height < 16 or self.width < 16 or self.height % 2 or self.width % 2:
            raise ValueError(
                f"height and width must be even and ≥ 16, got {self.height} × {self.width}"
            )
        unknown = [s for s in self.scenes if s not in SCENES]
        if unknown:
            raise ValueError(f"unknown scenes {unknown}; valid: {', '.join(SCENES)}")


def video_codec() -> str:
    """``libx264`` when this PyAV build can encode H.264, else ``mpeg4``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - PyAV raises different errors across versions
        return "mpeg4"


def clip_name(scene: str, index: int, config: SyntheticConfig) -> str:
    """A WISA-style ``<sha256>.mp4`` name, fixed by the scene, index and settings."""
    size = f"{config.num_frames}x{config.height}x{config.width}@{config.fps:g}"
    key = f"pila-synthetic:{scene}:{index}:{config.seed}:{size}"
    return hashlib.sha256(key.encode()).hexdigest() + ".mp4"


def render_clip(scene: str, index: int, config: SyntheticConfig) -> SceneClip:
    """Render clip ``index`` of ``scene`` (deterministic in the seed)."""
    return render_indexed(scene, index, config.seed, config.num_frames, config.height, config.width)


def wisa_record(
    name: str, scene: str, index: int, clip: SceneClip, config: SyntheticConfig
) -> dict[str, Any]:
    """The WISA-80K-format annotation record of a rendered clip."""
    speed = float(np.sqrt((clip.displacement**2).sum(axis=1)).mean())
    return {
        "video_name": name,
        "label": clip.wisa_label,
        "width": config.width,
        "height": config.height,
        "fps": config.fps,
        "duration": config.num_frames / config.fps,
        "motion_score": speed,
        "text_bbox_num": 0,
        "text_bbox_ratio": 0.0,
        "captions": clip.prompt,
        "physical_annotation": {"phys_law": clip.phys_law, **clip.answers, "q3": "no"},
        "pila_labels": list(clip.labels),
        "synthetic": {
            "scene": scene,
            "index": index,
            "seed": config.seed,
            "motion": Path(name).stem + MOTION_SUFFIX,
            "params": {k: float(v) for k, v in clip.params.items()},
            "law": dict(clip.law),
        },
    }


def _stamp(config: SyntheticConfig) -> dict[str, Any]:
    # version 2: the cooling plate's clips are labelled thermal only (were thermal + optical)
    # version 3: the collision's balls are never green, the baize's colour
    settings = {**config.__dict__, "scenes": list(config.scenes)}
    return {"format": "pila-synthetic", "version": 3, "config": settings}


def write_synthetic_dataset(root: str | os.PathLike, config: SyntheticConfig) -> Path:
    """Render every clip to ``root/videos/*.mp4`` and write ``root/annotations.json``.

    Nothing is redone when ``root`` already holds a finished dataset with the same
    settings (``root/synthetic.json`` is written last and records them).

    Returns:
        The annotation file.

    Raises:
        ValueError: ``root`` holds a synthetic dataset made with other settings.
    """
    base = Path(root)
    stamp_path, annotation = base / STAMP_NAME, base / ANNOTATION_NAME
    stamp = _stamp(config)
    if stamp_path.is_file():
        found = json.loads(stamp_path.read_text(encoding="utf-8"))
        if found == stamp and annotation.is_file():
            return annotation
        raise ValueError(
            f"{str(base)!r} holds synthetic clips made with other settings "
            f"({found.get('config')}); choose another root or delete that folder"
        )
    videos = base / VIDEO_FOLDER
    videos.mkdir(parents=True, exist_ok=True)
    codec = video_codec()
    records = []
    for scene in config.scenes:
        for index in range(config.num_clips_per_category):
            clip = render_clip(scene, index, config)
            name = clip_name(scene, index, config)
            write_video(videos / name, clip.frames, fps=config.fps, codec=codec, crf=config.crf)
            with atomic_path(videos / (Path(name).stem + MOTION_SUFFIX)) as tmp:
                save_file(
                    {"displacement": np.ascontiguousarray(clip.displacement)},
                    str(tmp),
                    metadata={
                        "units": "pixels per frame",
                        "layout": "(F-1, 2, H, W), x first; entry k-1 moves frame k-1 to frame k",
                    },
                )
            records.append(wisa_record(name, scene, index, clip, config))
    write_json_atomic(annotation, records)
    write_json_atomic(stamp_path, stamp)
    log.info("wrote %d synthetic clips (%s) to %s", len(records), codec, videos)
    return annotation


def load_motion(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.motion.safetensors`` file: (F − 1, 2, H_px, W_px) pixels per frame."""
    from safetensors.numpy import load_file

    return load_file(str(path))["displacement"]


# ------------------------------------------------------------------ data module
class SyntheticPhysicsDataModule(WISA80KDataModule):
    """The embedded default: synthetic clips of all eight categories, cached with the tiny backbone.

    :meth:`prepare_data` renders the clips into ``root`` (once; see
    :func:`write_synthetic_dataset`) and builds the cache in ``root/cache`` with the same
    ``pila prepare`` code as WISA-80K; batches are exactly those of
    :class:`~pila.datamodules.WISA80KDataModule`. Tiny by default so the whole demo runs
    on a CPU: 33 frames at 64 × 64 (latents 16 × 9 × 8 × 8), 16 fps. The record filters
    are off (every synthetic clip is valid).

    Args:
        root: folder for the videos, annotation and cache.
        num_clips_per_category: clips rendered per scene (eight scenes).
        seed: seed of the rendering.
        num_frames: frames per clip (4k + 1).
        fps: frames per second.
        height: pixel height (multiple of 8).
        width: pixel width (multiple of 8).
        backbone: the frozen Wan the cache is encoded with (``"tiny"`` by default).
        batch_size: clips per batch.
        num_workers: DataLoader workers.
        val_fraction: share of clips held out for validation (by video-name hash).
        split_seed: seed of the split hash.
        max_sequence_length: text tokens per prompt.
        flow_max_side: long side in pixels of the frames Farneback sees.
        encode_on_the_fly: encode every batch instead of caching.
        verify_cache: check every shard's sha256 in ``setup``.
        prepare_workers: decoding workers while building the cache.
        shard_size: records per cache shard.
        storage_dtype: float dtype of the cache.
        device: where the cache is encoded.
        allow_backbone_mismatch: train on a cache built by another backbone (see
            :class:`~pila.datamodules.WISA80KDataModule`).
    """

    def __init__(
        self,
        root: str = "outputs/synthetic",
        num_clips_per_category: int = 4,
        seed: int = 0,
        num_frames: int = 33,
        fps: float = 16.0,
        height: int = 64,
        width: int = 64,
        backbone: str = "tiny",
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.125,
        split_seed: int = 0,
        max_sequence_length: int = 512,
        flow_max_side: int = 256,
        encode_on_the_fly: bool = False,
        verify_cache: bool = True,
        prepare_workers: int = 0,
        shard_size: int = 16,
        storage_dtype: Literal["bfloat16", "float16", "float32"] = "float32",
        device: Literal["auto", "cpu", "cuda"] = "auto",
        allow_backbone_mismatch: bool = False,
    ) -> None:
        self.synthetic = SyntheticConfig(
            num_clips_per_category=num_clips_per_category, seed=seed, num_frames=num_frames,
            fps=fps, height=height, width=width,
        )
        base = Path(root)
        super().__init__(
            annotations=str(base / ANNOTATION_NAME),
            videos=str(base / VIDEO_FOLDER),
            cache_dir=str(base / "cache"),
            backbone=backbone,
            batch_size=batch_size,
            num_workers=num_workers,
            num_frames=num_frames,
            fps=fps,
            height=height,
            width=width,
            min_duration=None,
            max_duration=None,
            max_text_boxes=None,
            val_fraction=val_fraction,
            split_seed=split_seed,
            max_sequence_length=max_sequence_length,
            flow_max_side=flow_max_side,
            encode_on_the_fly=encode_on_the_fly,
            prepare_if_missing=True,
            verify_cache=verify_cache,
            prepare_workers=prepare_workers,
            shard_size=shard_size,
            storage_dtype=storage_dtype,
            device=device,
            pin_memory=False,
            allow_backbone_mismatch=allow_backbone_mismatch,
        )
        self.save_hyperparameters(logger=False)
        self.root = base

    def prepare_data(self) -> None:
        """Render the clips (if absent), then build the cache (if absent)."""
        write_synthetic_dataset(self.root, self.synthetic)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """As the WISA module; outside a Trainer, :meth:`prepare_data` runs first by itself."""
        if self.trainer is None:
            self.prepare_data()
        super().setup(stage)

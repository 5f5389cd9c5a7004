"""The ruler's calibration: what the scenes' own ground truth measures.

:func:`calibrate` renders ground-truth clips per scene at the lab size, half of them
passed through an mp4 round trip, and records per scene and sub-measure the median and
scale its normaliser uses (:mod:`pila.lab.ruler.normalise`), and per scene the fidelity
prototype (:func:`~pila.lab.ruler.fidelity.fit_prototypes`). :func:`write_calibration`
stores it (``pila lab calibrate``): all scenes and the prototypes, or chosen scenes only,
leaving the other scenes' entries and the prototypes as they were.

Legend: F frames, H, W pixel height and width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pila.io import read_json, write_json_atomic
from pila.lab.ruler.fidelity import (
    FIDELITY_VARIANTS,
    appearance_features,
    appearance_variant,
    fit_prototypes,
)
from pila.lab.ruler.looks import MP4_CRF, mp4_round_trip
from pila.lab.ruler.measures import MIN_SCALE, SCENE_MEASURES
from pila.lab.ruler.normalise import CALIBRATION_PATH, load_calibration
from pila.lab.ruler.vision import LAB_FRAMES, LAB_SIZE, prepare
from pila.lab.scenes import SCENES, render_scene

CALIBRATION_CLIPS = 48
"""Our choice: ground-truth clips per scene behind the calibration (the median and the
95th percentile are stable at this count)."""
CALIBRATION_SEED = 1234
"""Seed of the calibration clips: clip i of scene s uses ``default_rng([seed, s, i])``,
disjoint from the synthetic datasets' default seed 0 and from the tests' seeds."""
CALIBRATION_CRF = MP4_CRF
"""Every other calibration clip goes through an H.264 round trip at ``pila predict``'s
default crf."""


def ground_truth_clips(
    scene: str,
    count: int,
    seed: int,
    num_frames: int = LAB_FRAMES,
    size: int = LAB_SIZE,
    law: dict[str, float] | None = None,
) -> list[np.ndarray]:
    """``count`` rendered clips of ``scene`` as float frames (F, size, size, 3).

    Clip i uses ``default_rng([seed, s, i])``, s the scene's number.
    """
    s = list(SCENES).index(scene)
    return [
        render_scene(
            scene, np.random.default_rng([seed, s, i]), num_frames, size, size, law=law
        ).frames
        for i in range(count)
    ]


def check_scenes(scenes: Sequence[str]) -> tuple[str, ...]:
    """``scenes`` as a tuple; an unknown or repeated name is a ``ValueError`` (naming the
    valid ones)."""
    unknown = [s for s in scenes if s not in SCENES]
    if unknown:
        raise ValueError(f"unknown scene {unknown[0]!r}; valid: {', '.join(SCENES)}")
    if len(set(scenes)) != len(scenes) or not scenes:
        raise ValueError(f"give each scene once (got {', '.join(scenes) or 'none'})")
    return tuple(scenes)


def sub_measure_stats(scene: str, values: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per sub-measure of ``scene``: the median, the scale (95th percentile − median, floored
    at :data:`~pila.lab.ruler.measures.MIN_SCALE` of this scene and sub-measure) and how many
    clips could not be measured."""
    stats = {}
    for name, measured in values.items():
        v = np.asarray(measured, float)
        v = v[np.isfinite(v)]
        median = float(np.median(v)) if len(v) else 0.0
        q95 = float(np.quantile(v, 0.95)) if len(v) else 0.0
        stats[name] = {
            "median": median,
            "scale": max(q95 - median, MIN_SCALE[scene][name]),
            "unmeasured": int(len(measured) - len(v)),
        }
    return stats


def calibrate(
    count: int = CALIBRATION_CLIPS,
    seed: int = CALIBRATION_SEED,
    crf: int | None = CALIBRATION_CRF,
    scenes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure ground truth: per scene and sub-measure the median and scale; the prototypes.

    Renders ``count`` clips per scene at the lab size (33 × 64 × 64), passes every other
    one through an mp4 round trip at ``crf`` (None: none; ground truth is measured both as
    rendered and as a video file holds it), and records each raw sub-measure's statistics
    (:func:`sub_measure_stats`), and for the fidelity classifier each scene's prototype
    over the clips and their appearance variants (:func:`fit_prototypes
    <pila.lab.ruler.fidelity.fit_prototypes>`; only when all scenes are calibrated:
    ``scenes`` None, otherwise ``fidelity`` is empty).
    """
    settings = _settings(count, seed, crf)
    out: dict[str, Any] = {"settings": settings, "scenes": {}, "fidelity": {}}
    with_prototypes = scenes is None
    features: dict[str, list[np.ndarray]] = {}
    # one generator across the scenes, in order: a scene's variants follow the ones before
    variant_rng = np.random.default_rng([seed, 1])
    for scene in tuple(SCENES) if scenes is None else check_scenes(scenes):
        values: dict[str, list[float]] = {}
        features[scene] = []
        for i, clip in enumerate(ground_truth_clips(scene, count, seed)):
            frames = prepare(mp4_round_trip(clip, crf) if crf is not None and i % 2 else clip)
            for name, value in SCENE_MEASURES[scene](frames).raw.items():
                values.setdefault(name, []).append(value)
            if with_prototypes:
                features[scene].append(appearance_features(frames))
                for _ in range(FIDELITY_VARIANTS):
                    variant = appearance_variant(clip, variant_rng)
                    features[scene].append(appearance_features(prepare(variant)))
        out["scenes"][scene] = sub_measure_stats(scene, values)
    if with_prototypes:
        out["fidelity"] = fit_prototypes(features)
    return out


def _settings(count: int, seed: int, crf: int | None) -> dict[str, Any]:
    return {"count": count, "seed": seed, "crf": crf, "frames": LAB_FRAMES, "size": LAB_SIZE}


def write_calibration(
    path: str | os.PathLike = CALIBRATION_PATH,
    *,
    scenes: Sequence[str] | None = None,
    count: int = CALIBRATION_CLIPS,
    seed: int = CALIBRATION_SEED,
    crf: int | None = CALIBRATION_CRF,
) -> Path:
    """Run :func:`calibrate` and write the result to ``path`` as JSON (atomically).

    ``scenes`` None rewrites the whole file (every scene and the fidelity prototypes).
    Otherwise only those scenes' entries are replaced in the calibration already at
    ``path``, which must have been made with the same settings; the other scenes, the
    prototypes and the settings are kept as they are (a scene new to the file gets its
    normalisers; its fidelity prototype comes with the next full calibration).

    Raises:
        ValueError: an unknown scene, or settings that differ from the stored file's.
        FileNotFoundError: ``scenes`` given and no calibration at ``path`` to update.
    """
    path = Path(path)
    if scenes is None:
        result = calibrate(count, seed, crf)
    else:
        scenes = check_scenes(scenes)
        if not path.is_file():
            raise FileNotFoundError(
                f"no calibration at {path} to update; calibrate every scene first "
                "(`pila lab calibrate` without --scenes)"
            )
        result = read_json(path)
        wanted = _settings(count, seed, crf)
        if result.get("settings") != wanted:
            raise ValueError(
                f"{path} was calibrated with {result.get('settings')}, not {wanted}; "
                "update scenes with the stored settings or calibrate every scene"
            )
        result["scenes"].update(calibrate(count, seed, crf, scenes)["scenes"])
    write_json_atomic(path, result)
    load_calibration.cache_clear()
    return path

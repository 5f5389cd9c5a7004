"""Scene fidelity: does a video show the prompted scene at all?

A Gaussian nearest-prototype classifier over simple appearance and motion features
(:func:`appearance_features`). The prototypes (:func:`fit_prototypes`) are fitted on
ground-truth clips of the eight scenes and on blurred, colour-shifted, grainy variants of
them (:func:`appearance_variant`) and stored in the calibration file; a "none of them"
class lets a video far from every scene (noise, a blank frame) get low fidelity. The
fidelity is the posterior probability of the prompted scene.

Legend: F frames, H, W pixel height and width.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pila.lab.ruler.normalise import load_calibration

FEATURE_STD_FLOOR = 0.05
"""Our choice: a scene's feature spread is at least 5 % of that feature's spread over all
scenes, so a feature that never varies within a scene does not make the classifier
infinitely confident."""
NONE_DISTANCE = 9.0
"""Our choice: a video whose mean squared standardised distance to its nearest scene
exceeds 9 (three standard deviations per feature) is more likely none of the scenes."""
FEATURE_SIZE = 16
"""Our choice: appearance features are read from frames area-averaged to 16 × 16, so
texture, grain and a little blur do not change them; the scenes differ at this scale
(layout, colours, where things move)."""
FIDELITY_VARIANTS = 2
"""Our choice: each calibration clip also enters the fidelity prototypes as two
appearance variants (:func:`appearance_variant`)."""


def appearance_features(frames: np.ndarray) -> np.ndarray:
    """Simple appearance and motion features of a lab clip (F, 64, 64, 3) → (23,).

    Read at :data:`FEATURE_SIZE`. The still image (temporal median): its mean colour and
    colour spread, the mean colour of its four quadrants, its mean chroma; the motion
    (differences of frames two apart): mean absolute difference, the fraction of cells
    that change by more than 0.05, and the vertical and horizontal position of the change
    (difference-weighted centroid, in frame units).
    """
    small = np.stack(
        [cv2.resize(f, (FEATURE_SIZE, FEATURE_SIZE), interpolation=cv2.INTER_AREA) for f in frames]
    )
    still = np.median(small, axis=0)
    h, w = still.shape[:2]
    quads = [
        still[: h // 2, : w // 2],
        still[: h // 2, w // 2 :],
        still[h // 2 :, : w // 2],
        still[h // 2 :, w // 2 :],
    ]
    diff = np.abs(small[2:] - small[:-2]).mean(-1)  # (F − 2, h, w)
    change = diff.mean(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    tot = change.sum() + 1e-9
    feats = [
        *still.reshape(-1, 3).mean(0),
        *still.reshape(-1, 3).std(0),
        *np.concatenate([q.reshape(-1, 3).mean(0) for q in quads]),
        float((still.max(-1) - still.min(-1)).mean()),
        float(diff.mean()) * 10,
        float((diff > 0.05).mean()) * 10,
        float((change * yy).sum() / tot / h),
        float((change * xx).sum() / tot / w),
    ]
    return np.asarray(feats, dtype=float)


def appearance_variant(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same clip as an imperfect generator might draw it: blurred, colour-shifted,
    flickering, grainy.

    Ranges (our choice, to cover what a small VAE or generator does to a clip's look
    without changing what it shows): Gaussian blur σ ∈ [0.5, 2] px; per channel a gain in
    [0.85, 1.15] and an offset in [−0.06, 0.06]; per frame a brightness shift in
    [−0.03, 0.03]; per pixel Gaussian grain of σ ∈ [0, 0.04]. The scene fidelity's
    prototypes see these variants, so a blurred or off-colour video of a scene still reads
    as that scene; its law is measured by the violation, not by the fidelity.
    """
    sigma = rng.uniform(0.5, 2.0)
    gain, offset = rng.uniform(0.85, 1.15, 3), rng.uniform(-0.06, 0.06, 3)
    grain = rng.uniform(0.0, 0.04)
    out = []
    for frame in np.asarray(frames, np.float32):
        f = cv2.GaussianBlur(frame, (0, 0), sigma) * gain + offset + rng.uniform(-0.03, 0.03)
        out.append(np.clip(f + rng.normal(0.0, grain, f.shape), 0.0, 1.0).astype(np.float32))
    return np.stack(out)


def fit_prototypes(features: dict[str, list[np.ndarray]]) -> dict[str, dict[str, list[float]]]:
    """Per scene the mean and standard deviation of its clips' features (floored at
    :data:`FEATURE_STD_FLOOR` of the feature's spread over all scenes)."""
    all_feats = np.concatenate([np.stack(f) for f in features.values()])
    spread = all_feats.std(axis=0) + 1e-6
    prototypes = {}
    for scene, feats in features.items():
        f = np.stack(feats)
        std = np.maximum(f.std(0), FEATURE_STD_FLOOR * spread)
        prototypes[scene] = {"mean": f.mean(0).tolist(), "std": std.tolist()}
    return prototypes


def scene_probabilities(
    frames: np.ndarray, calibration: dict[str, Any] | None = None
) -> dict[str, float]:
    """Posterior over the eight scenes and ``"none"`` (Gaussian prototypes, tempered by the
    feature count)."""
    protos = (calibration or load_calibration())["fidelity"]
    f = appearance_features(frames)
    names = list(protos)
    scores = []
    for name in names:
        mean, std = np.asarray(protos[name]["mean"]), np.asarray(protos[name]["std"])
        scores.append(-0.5 * float(np.mean(((f - mean) / std) ** 2)))
    scores.append(-0.5 * NONE_DISTANCE)
    logits = (
        np.asarray(scores) * len(f) / 4
    )  # our choice: tempered so four features' worth of evidence is one nat
    logits -= logits.max()
    p = np.exp(logits)
    p /= p.sum()
    return {**{n: float(v) for n, v in zip(names, p[:-1], strict=True)}, "none": float(p[-1])}


def scene_fidelity(
    frames: np.ndarray, scene: str, calibration: dict[str, Any] | None = None
) -> float:
    """The probability that ``frames`` show ``scene`` (in [0, 1])."""
    return scene_probabilities(frames, calibration).get(scene, 0.0)

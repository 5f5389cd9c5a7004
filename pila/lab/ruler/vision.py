"""The ruler's eyes: lab-size frames, backgrounds, components, small fits, polar grids.

Legend: F frames, H, W pixel height and width (the ruler works at the lab size, 64 × 64;
other sizes are resized), t the frame index (time in frames, as in
:data:`~pila.lab.scenes.LAWS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

LAB_FRAMES, LAB_SIZE = 33, 64
"""The lab size: clips are measured at 64 × 64 pixels (time is never resampled)."""
MIN_FRAMES = 12
"""Our choice: fewer frames than this cannot show a bounce, a period or a trend; such a
video is reported as too short."""
FG_THRESHOLD = 0.15
"""Our choice: an RGB distance above 0.15 from the background is an object (the scenes'
background grain is ±0.03, their objects differ by ≥ 0.25)."""


# ----------------------------------------------------------------------------- inputs
def to_lab_frames(frames: np.ndarray, size: int = LAB_SIZE) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 or float → float32 in [0, 1] at ``size`` × ``size`` (area
    resampling).

    NaN or infinite values (a broken decoder, a diverged model) are set to 0.
    """
    data = np.asarray(frames)
    if data.ndim != 4 or data.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (F, H, W, 3), got {tuple(data.shape)}")
    out = (
        data.astype(np.float32) / 255.0
        if data.dtype == np.uint8
        else np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    )
    out = np.clip(out, 0.0, 1.0)
    if out.shape[1:3] != (size, size):
        out = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in out])
    return np.ascontiguousarray(out)


DENOISE_KERNEL = 3
"""Our choice: a 3 × 3 median filter per frame before measuring removes pixel noise (a
generator's grain, codec speckle) and keeps the scenes' edges."""


def prepare(frames: np.ndarray) -> np.ndarray:
    """What every measure sees: lab-size float frames (:func:`to_lab_frames`),
    median-filtered (:data:`DENOISE_KERNEL`)."""
    lab = to_lab_frames(frames)
    return np.stack([cv2.medianBlur(f, DENOISE_KERNEL) for f in lab])


BACKDROP_SHARE = 0.7
"""Our choice: the backdrop's colour line is fitted to the 70 % of pixels nearest the
clip's median colour (a scene's objects cover well under 30 % of a frame)."""


def off_backdrop(frames: np.ndarray) -> np.ndarray:
    """Each pixel's RGB distance (F, H, W) from the backdrop's colour line.

    A lab backdrop is a grey gradient (with faint grain): its colours lie on one line in
    RGB. Fitted to the clip's pixels (through their median colour, along the principal
    direction of the :data:`BACKDROP_SHARE` nearest it, every 7th pixel), the line moves
    with any per-channel change of look (a colour cast, a gain, a flicker, a tone curve's
    near-linear stretch), so a pixel's distance from it is an object's colour and not the
    look's. Distance from grey (max − min of RGB) is not: a cast gives the backdrop the
    chroma of a pale object.
    """
    pixels = frames.reshape(-1, 3)[::7]
    centre = np.median(pixels, axis=0)
    offset = pixels - centre
    dist = np.linalg.norm(offset, axis=1)
    near = offset[dist <= np.percentile(dist, 100 * BACKDROP_SHARE)]
    _, _, vt = np.linalg.svd(near - near.mean(axis=0), full_matrices=False)
    rel = frames - centre
    along = rel @ vt[0]
    return np.linalg.norm(rel - along[..., None] * vt[0], axis=-1)


def row_background(frames: np.ndarray) -> np.ndarray:
    """Per-row background colour (H, 3): the median over frames and columns.

    The scenes' backgrounds are vertical gradients with faint static grain, and their
    moving objects cover well under half of any row, so the row median is the backdrop.
    """
    return np.median(frames, axis=(0, 2))


def foreground(
    frames: np.ndarray, threshold: float = FG_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the row background (F, H, W) and the foreground mask (distance > threshold)."""
    dist = np.linalg.norm(frames - row_background(frames)[None, :, None, :], axis=-1)
    return dist, dist > threshold


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean (H, W) mask (empty if none)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def significant_components(mask: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """The 8-connected components of a boolean (H, W) mask at least ``fraction`` of the
    largest's size.

    Our choice of 0.2: specks of noise go, a second object of similar size stays.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    keep = np.nonzero(sizes >= fraction * sizes.max())[0] + 1
    return np.isin(labels, keep)


def hull_area(mask: np.ndarray) -> float:
    """Pixel area of the convex hull of a boolean (H, W) mask (hull area + half its perimeter + 1).

    A striped ball whose dark stripes match the backdrop loses pixels but not its outline.
    """
    pts = cv2.findNonZero(mask.astype(np.uint8))
    if pts is None:
        return 0.0
    hull = cv2.convexHull(pts)
    return float(cv2.contourArea(hull) + cv2.arcLength(hull, True) / 2 + 1)


def line_fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line y ≈ a + b·t: (a, b, rms residual)."""
    if len(t) < 2:
        return float("nan"), float("nan"), float("nan")
    design = np.stack([np.ones_like(t), t], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    res = y - design @ coef
    return float(coef[0]), float(coef[1]), float(np.sqrt(np.mean(res**2)))


def expectile_line(t: np.ndarray, y: np.ndarray, share: float) -> tuple[float, float]:
    """Line y ≈ a + b·t by asymmetric least squares: points above the line weigh ``share``,
    points below 1 − ``share`` (the ``share`` expectile; 0.5 is :func:`line_fit`'s line).

    With ``share`` near 1 the line follows a series' upper envelope: samples that lag
    (a stalled video's frames, held where the series would have moved on) pull it little,
    while symmetric noise leaves its slope as least squares would.
    """
    weights = np.full(len(t), 0.5)
    design = np.stack([np.ones_like(t), t], axis=1)
    for _ in range(50):  # our choice: the weights settle in a few rounds
        root = np.sqrt(weights)[:, None]
        coef, *_ = np.linalg.lstsq(design * root, y * root[:, 0], rcond=None)
        updated = np.where(y - design @ coef > 0, share, 1 - share)
        if np.array_equal(updated, weights):
            break
        weights = updated
    return float(coef[0]), float(coef[1])


def positive_steps(values: np.ndarray) -> float:
    """Σ max(0, v[t+1] − v[t]) over consecutive values (how much a should-fall series rises)."""
    if len(values) < 2:
        return float("nan")
    return float(np.clip(np.diff(values), 0, None).sum())


def moving_median(values: np.ndarray, width: int = 3) -> np.ndarray:
    """Centred moving median (edges use the values available): one-frame pixel flicker is
    not a trend."""
    half = width // 2
    return np.array(
        [np.median(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]
    )


@dataclass
class Measurement:
    """What the ruler measured on one video of one scene.

    Attributes:
        raw: sub-measure name → raw value (NaN: could not be measured).
        trace: the measured quantity against the law for figures: ``t``, ``measured``,
            ``law`` (lists, NaN where missing) and ``label`` (what is plotted).
    """

    raw: dict[str, float]
    trace: dict[str, Any] = field(default_factory=dict)


def law_trace(label: str, t, measured, law) -> dict[str, Any]:
    """A :attr:`Measurement.trace`: the measured series and the law's, as JSON-ready lists."""
    return {
        "label": label,
        "t": [float(v) for v in np.asarray(t, float)],
        "measured": [float(v) for v in np.asarray(measured, float)],
        "law": [float(v) for v in np.asarray(law, float)],
    }


def polar(
    field_: np.ndarray, cx: float, cy: float, radii: np.ndarray, num_angles: int
) -> np.ndarray:
    """Resample fields (..., H, W) on a polar grid about (cx, cy): (..., R, A); −1 outside
    the frame.

    Angles θ_j = 2πj / A are measured with ``atan2(y − cy, x − cx)`` in image coordinates
    (y down), the convention of the scenes' vortex.
    """
    theta = 2 * np.pi * np.arange(num_angles) / num_angles
    map_x = (cx + radii[:, None] * np.cos(theta)[None]).astype(np.float32)
    map_y = (cy + radii[:, None] * np.sin(theta)[None]).astype(np.float32)
    flat = field_.reshape(-1, *field_.shape[-2:])
    out = np.stack(
        [
            cv2.remap(
                f.astype(np.float32),
                map_x,
                map_y,
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=-1.0,
            )
            for f in flat
        ]
    )
    return out.reshape(*field_.shape[:-2], len(radii), num_angles)

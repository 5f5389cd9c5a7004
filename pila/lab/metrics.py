"""The ruler: physical law measured from the pixels of a lab scene.

Legend: F frames, H, W pixel height and width (the ruler works at the lab size, 64 × 64;
other sizes are resized), t the frame index (time in frames, as in :data:`LAWS`).

For each of the eight scenes of :mod:`pila.lab.scenes` a pure function measures the
scene's law with simple vision (background estimates, colour rules, connected
components, centroids, areas, intensity sums, least-squares fits of the law's closed
form with the world's constants read from :data:`~pila.lab.scenes.LAWS`):

==================  ==========================================================================
scene               sub-measures (raw; each ≥ 0, 0 when the law holds exactly)
==================  ==========================================================================
ball_bounce         ``parabola_residual`` (centroid height vs parabolas with the world's g,
                    px), ``gravity_error`` (|g_fit/g − 1|), ``restitution_error``
                    (|e_fit − e|), ``horizontal_residual`` (x(t) vs a line, px),
                    ``size_change`` (mean |area/median − 1|), ``missing`` (frames without
                    the ball)
ball_collision      ``piecewise_residual`` (centres vs two lines per ball meeting at the
                    impact, px), ``contact_gap`` (|centre distance at the impact −
                    r_a − r_b| / (r_a + r_b)), ``extra_matter`` (foreground beyond the balls),
                    ``momentum_error`` (|Δp| / Σ|p|, mass ∝ area), ``restitution_error``
                    (|e_fit − e|), ``speed_gain`` (relative speed after/before − 1, ≥ 0),
                    ``interpenetration`` (overlap / (r_a + r_b)), ``size_change``,
                    ``missing``
melting_block       ``ice_growth`` (Σ increases of the 3-frame moving median of the ice
                    area / A0), ``conservation`` (range of
                    ice + κ·water area / median, κ the one factor that keeps it most
                    constant: the water layer's depth is unknown), ``puddle_shrink`` (Σ puddle-width
                    decreases, px), ``melt_residual`` (ice area vs the world's melt law,
                    relative), ``melt_step`` (largest one-frame deviation from it)
dye_advection       ``conservation`` (range of the total dye / median),
                    ``rotation_rate_error`` (| |s| − 1 |, s the fitted multiple of the
                    world's vortex ω(r)), ``rotation_step`` (largest departure from s
                    of one 4-frame window)
smoke_puff          ``sinking`` (Σ downward centroid steps, px), ``rise_residual``
                    (centroid height vs the world's rise, px), ``narrowing`` (Σ width
                    decreases, px), ``growth_residual`` (width vs the world's growth law,
                    px), ``mass_gain`` (Σ mass increases / M0), ``mass_step`` (largest
                    one-step departure of the mass ratio from the world's dissipation)
elastic_bar         ``law_residual`` (tip height vs the world's period and damping,
                    relative to the amplitude), ``period_error`` (|P_fit/P − 1|),
                    ``damping_error`` (|δ_fit − δ| · F, amplitude ratio units),
                    ``size_change``, ``missing``
cooling_plate       ``peak_rise`` (Σ increases of the peak's 3-frame moving median / peak0), ``variance_rate_error``
                    (|dV/dt / (2D) − 1|), ``variance_residual`` (V(t) vs a line, in frames
                    of the world's 2D), ``heat_step`` (largest one-step departure of the
                    heat's log-decay from the world's cooling), ``fit_residual`` (log
                    residual of the Gaussian spot)
ripple_reflection   ``radius_residual`` (ring radius vs R0 + c·t with the world's c, px),
                    ``speed_error`` (|c_fit/c − 1|), ``centre_wander`` (per-frame ring
                    centres' mean distance from their median, px), ``missing`` (frames
                    where the ring should show and does not)
==================  ==========================================================================

**Normalisation.** Each raw sub-measure m becomes z = max(0, (m − median) / scale), where
median and scale (the 95th percentile minus the median, floored at the sub-measure's
:data:`MIN_SCALE`) are those of the scene's own ground-truth clips, rendered at the lab size
half of them passed through an mp4 round trip, by :func:`calibrate`; the numbers are data
(``ruler_calibration.json`` beside this file), not tuned literals. A sub-measure that
cannot be measured at all (no object found) scores :data:`UNMEASURABLE_Z`, and no z
exceeds :data:`MAX_Z`. The
**violation** is the mean of the z's: about 0 on ground truth, and 1 means "off by one
ground-truth spread on average".

**Scene fidelity** (:func:`scene_fidelity`): a Gaussian nearest-prototype classifier over
simple appearance and motion features (:func:`appearance_features`), prototypes fitted on
ground-truth clips of the eight scenes and on blurred, colour-shifted, grainy variants of
them (:func:`appearance_variant`; also in the calibration file), plus a
"none of them" class so a video far from every scene (noise, a blank frame) gets low
fidelity. The fidelity is the posterior probability of the prompted scene.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pila.lab.scenes import LAWS, SCENES, render_scene

LAB_FRAMES, LAB_SIZE = 33, 64
"""The lab size: clips are measured at 64 × 64 pixels (time is never resampled)."""
MIN_FRAMES = 12
"""Our choice: fewer frames than this cannot show a bounce, a period or a trend; such a
video is reported as too short."""
UNMEASURABLE_Z = 10.0
"""Our choice: a sub-measure that cannot be measured (the object is not found) scores ten
ground-truth spreads, as badly as a clear violation."""
MAX_Z = 50.0
"""Our choice: one sub-measure contributes at most 50 spreads, so a single wild value does
not swamp the others in the mean."""
CALIBRATION_PATH = Path(__file__).with_name("ruler_calibration.json")

FG_THRESHOLD = 0.15
"""Our choice: an RGB distance above 0.15 from the background is an object (the scenes'
background grain is ±0.03, their objects differ by ≥ 0.25)."""


# ----------------------------------------------------------------------------- inputs
def to_lab_frames(frames: np.ndarray, size: int = LAB_SIZE) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 or float → float32 in [0, 1] at ``size`` × ``size`` (area resampling).

    NaN or infinite values (a broken decoder, a diverged model) are set to 0.
    """
    data = np.asarray(frames)
    if data.ndim != 4 or data.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (F, H, W, 3), got {tuple(data.shape)}")
    out = data.astype(np.float32) / 255.0 if data.dtype == np.uint8 else np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    out = np.clip(out, 0.0, 1.0)
    if out.shape[1:3] != (size, size):
        out = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in out])
    return np.ascontiguousarray(out)


DENOISE_KERNEL = 3
"""Our choice: a 3 × 3 median filter per frame before measuring removes pixel noise (a
generator's grain, codec speckle) and keeps the scenes' edges."""


def prepare(frames: np.ndarray) -> np.ndarray:
    """What every measure sees: lab-size float frames (:func:`to_lab_frames`), median-filtered (:data:`DENOISE_KERNEL`)."""
    lab = to_lab_frames(frames)
    return np.stack([cv2.medianBlur(f, DENOISE_KERNEL) for f in lab])


def row_background(frames: np.ndarray) -> np.ndarray:
    """Per-row background colour (H, 3): the median over frames and columns.

    The scenes' backgrounds are vertical gradients with faint static grain, and their
    moving objects cover well under half of any row, so the row median is the backdrop.
    """
    return np.median(frames, axis=(0, 2))


def foreground(frames: np.ndarray, threshold: float = FG_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the row background (F, H, W) and the foreground mask (distance > threshold)."""
    dist = np.linalg.norm(frames - row_background(frames)[None, :, None, :], axis=-1)
    return dist, dist > threshold


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean (H, W) mask (empty if none)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def significant_components(mask: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """The 8-connected components of a boolean (H, W) mask at least ``fraction`` of the largest's size.

    Our choice of 0.2: specks of noise go, a second object of similar size stays.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
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


def _line_fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line y ≈ a + b·t: (a, b, rms residual)."""
    if len(t) < 2:
        return float("nan"), float("nan"), float("nan")
    design = np.stack([np.ones_like(t), t], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    res = y - design @ coef
    return float(coef[0]), float(coef[1]), float(np.sqrt(np.mean(res**2)))


def _positive_steps(values: np.ndarray) -> float:
    """Σ max(0, v[t+1] − v[t]) over consecutive values (how much a should-fall series rises)."""
    if len(values) < 2:
        return float("nan")
    return float(np.clip(np.diff(values), 0, None).sum())


def _moving_median(values: np.ndarray, width: int = 3) -> np.ndarray:
    """Centred moving median (edges use the values available): one-frame pixel flicker is not a trend."""
    half = width // 2
    return np.array([np.median(values[max(0, i - half) : i + half + 1]) for i in range(len(values))])


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


def _trace(label: str, t, measured, law) -> dict[str, Any]:
    return {
        "label": label,
        "t": [float(v) for v in np.asarray(t, float)],
        "measured": [float(v) for v in np.asarray(measured, float)],
        "law": [float(v) for v in np.asarray(law, float)],
    }


# ------------------------------------------------------------------------ ball_bounce
def measure_ball_bounce(frames: np.ndarray) -> Measurement:
    """Free fall with the world's g between contacts, restitution at bounces, constant size.

    Vision: row-median background, the foreground's largest component per frame gives
    the ball's centroid; contacts are the lowest points (local maxima of the row) within
    3 px of the lowest centroid; each flight between contacts is fitted with a parabola
    of the world's g (two free parameters), the impact velocities of two neighbouring
    parabolas give the restitution.
    """
    num_frames, size = frames.shape[0], frames.shape[1]
    g = LAWS["ball_bounce"]["gravity"] * size
    e_law = LAWS["ball_bounce"]["restitution"]
    _, mask = foreground(frames)
    area = mask.reshape(num_frames, -1).sum(axis=1).astype(float)
    ys, xs = np.full(num_frames, np.nan), np.full(num_frames, np.nan)
    for k in range(num_frames):
        comp = largest_component(mask[k])
        if comp.sum() >= 4:
            yy, xx = np.nonzero(comp)
            ys[k], xs[k] = yy.mean(), xx.mean()
    typical = np.median(area[area > 0]) if (area > 0).any() else 0.0
    valid = np.isfinite(ys) & (area >= 0.3 * typical) & (typical >= 4)
    raw = {
        "parabola_residual": float("nan"),
        "gravity_error": float("nan"),
        "restitution_error": float("nan"),
        "horizontal_residual": float("nan"),
        "size_change": float(np.mean(np.abs(area[valid] / typical - 1))) if valid.any() else float("nan"),
        "missing": float(1 - valid.mean()),
    }
    t = np.arange(num_frames, dtype=float)
    if valid.sum() < 6:
        return Measurement(raw, _trace("ball height (px, down)", t, ys, np.full(num_frames, np.nan)))
    tv, yv = t[valid], ys[valid]
    raw["horizontal_residual"] = _line_fit(tv, xs[valid])[2]
    # contacts: lowest points (local maxima of y) near the lowest height reached (3 px: our choice, ≈ half a radius)
    low = yv.max()
    contacts = [i for i in range(1, len(yv) - 1) if yv[i] >= yv[i - 1] and yv[i] >= yv[i + 1] and yv[i] > low - 3.0]
    bounds = [-1, *contacts, len(yv)]
    segments = [np.arange(a + 1, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    fits: list[tuple[float, float] | None] = []
    law_curve = np.full(num_frames, np.nan)
    residuals, design_rows, targets, seg_ids = [], [], [], []
    for s_id, seg in enumerate(segments):
        if len(seg) < 3:
            fits.append(None)
            continue
        ts, yseg = tv[seg], yv[seg]
        a, b, rms = _line_fit(ts, yseg - 0.5 * g * ts**2)
        fits.append((a, b))
        residuals.append((yseg - (a + b * ts + 0.5 * g * ts**2)) ** 2)
        idx = np.nonzero(valid)[0][seg]
        law_curve[idx] = a + b * ts + 0.5 * g * ts**2
        design_rows.append(ts)
        targets.append(yseg)
        seg_ids.append(np.full(len(seg), s_id))
    if not residuals:
        return Measurement(raw, _trace("ball height (px, down)", t, ys, law_curve))
    raw["parabola_residual"] = float(np.sqrt(np.mean(np.concatenate(residuals))))
    # one shared free g, a line per segment
    ts_all, y_all, ids = np.concatenate(design_rows), np.concatenate(targets), np.concatenate(seg_ids)
    uniq = np.unique(ids)
    design = np.zeros((len(ts_all), 2 * len(uniq) + 1))
    for j, s_id in enumerate(uniq):
        m = ids == s_id
        design[m, 2 * j], design[m, 2 * j + 1] = 1.0, ts_all[m]
    design[:, -1] = 0.5 * ts_all**2
    if len(ts_all) > design.shape[1]:
        coef, *_ = np.linalg.lstsq(design, y_all, rcond=None)
        raw["gravity_error"] = float(abs(coef[-1] / g - 1))
    # restitution at each contact with fitted flights on both sides
    errors = []
    for c_i, c in enumerate(contacts):
        before, after = fits[c_i], fits[c_i + 1]
        if before is None or after is None:
            continue
        (a1, b1), (a2, b2) = before, after
        t_star = (a2 - a1) / (b1 - b2) if b1 != b2 else tv[c]
        t_star = float(np.clip(t_star, tv[c] - 1, tv[c] + 1))
        v_in, v_out = b1 + g * t_star, b2 + g * t_star
        if v_in > 1e-6:
            errors.append(abs(-v_out / v_in - e_law))
        else:
            errors.append(1.0)  # our choice: a "contact" reached moving upwards is a full unit of error
    raw["restitution_error"] = float(np.mean(errors)) if errors else float("nan")
    return Measurement(raw, _trace("ball height (px, down)", t, ys, law_curve))


# --------------------------------------------------------------------- ball_collision
def _two_colour_split(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Label foreground pixels 0/1 by chromaticity (two-means, shading-invariant): (F, H, W) int, −1 background."""
    chroma = frames / (frames.sum(axis=-1, keepdims=True) + 1e-3)
    pix = chroma[mask][:, :2]
    labels = np.full(mask.shape, -1, dtype=int)
    if len(pix) < 8:
        return labels
    xs = np.nonzero(mask)[2]
    left = xs < np.median(xs)
    centres = np.stack([np.median(pix[left], axis=0) if left.any() else pix[0], np.median(pix[~left], axis=0) if (~left).any() else pix[-1]])
    for _ in range(10):  # our choice: two-means converges in a few iterations on two colours
        assign = np.argmin(((pix[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(2):
            if (assign == j).any():
                centres[j] = pix[assign == j].mean(axis=0)
    labels[mask] = assign
    return labels


CLOSE_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
"""Our choice: closing with a 5 px disc joins a striped ball's stripes (gaps of ≤ 2 px)."""


def measure_ball_collision(frames: np.ndarray) -> Measurement:
    """Piecewise-constant velocities, momentum (mass ∝ area), restitution, no interpenetration.

    Vision: row-median background, foreground split into the two balls by chromaticity
    (two-means), per ball its area (convex hull: a ball coloured like the cloth keeps its
    outline; each ball's pixels closed by :data:`CLOSE_KERNEL` first) and centroid column;
    frames where a ball touches the frame's edge are not used for its centroid. Both
    balls' paths are fitted together, each by two lines that meet at one shared impact
    time (grid search, 0.25 frame); at that time the centres should be one sum of radii
    apart (a ball's radius: half the rows it spans). Foreground beyond the two balls is extra matter.
    """
    num_frames, size = frames.shape[0], frames.shape[2]
    e_law = LAWS["ball_collision"]["restitution"]
    _, mask = foreground(frames)
    labels = _two_colour_split(frames, mask)
    t = np.arange(num_frames, dtype=float)
    xs = np.full((2, num_frames), np.nan)
    area = np.zeros((2, num_frames))
    edge = np.zeros((2, num_frames), bool)
    tracked = np.zeros(mask.shape, bool)  # (F, H, W) pixels of the two balls
    extent = np.zeros((2, num_frames))  # rows each ball spans: its diameter, unaffected by the other ball beside it
    for j in range(2):
        for k in range(num_frames):
            closed = cv2.morphologyEx((labels[k] == j).astype(np.uint8), cv2.MORPH_CLOSE, CLOSE_KERNEL).astype(bool)
            comp = largest_component(closed)
            tracked[k] |= comp
            area[j, k] = hull_area(comp) if comp.sum() >= 4 else 0.0
            rows = np.nonzero(comp.any(axis=1))[0]
            extent[j, k] = rows.max() - rows.min() + 1 if len(rows) else 0.0
            if area[j, k] >= 4:
                cols = np.nonzero(comp & (labels[k] == j))[1]
                xs[j, k] = cols.mean()
                edge[j, k] = cols.min() <= 0 or cols.max() >= size - 1
    seen = np.isfinite(xs).any(axis=1)
    if seen.all() and np.nanmean(xs[0]) > np.nanmean(xs[1]):  # ball a is the left one
        xs, area, edge, extent = xs[::-1], area[::-1], edge[::-1], extent[::-1]
    raw = dict.fromkeys(("piecewise_residual", "momentum_error", "restitution_error", "speed_gain", "contact_gap", "interpenetration", "size_change", "extra_matter"), float("nan"))
    raw["missing"] = 1.0
    typical = np.array([np.median(area[j][~edge[j] & (area[j] >= 4)]) if (~edge[j] & (area[j] >= 4)).any() else 0.0 for j in range(2)])
    valid = (area >= 0.3 * typical[:, None]) & ~edge & (typical[:, None] >= 4) & np.isfinite(xs)
    law = np.full((2, num_frames), np.nan)
    trace = {"label": "ball centres (px)", "t": t.tolist(), "measured": [], "law": []}
    if not valid.any(axis=1).all():
        trace.update(measured=np.nan_to_num(xs, nan=np.nan).tolist(), law=law.tolist())
        return Measurement(raw, trace)
    raw["size_change"] = float(np.mean([np.mean(np.abs(area[j, valid[j]] / typical[j] - 1)) for j in range(2)]))
    # missing: absent while the ball's last known motion puts it well inside the frame
    radius = np.array([np.median(extent[j, valid[j]]) / 2 for j in range(2)])
    missing = 0
    for j in range(2):
        idx = np.nonzero(valid[j])[0]
        for k in range(num_frames):
            if valid[j, k] or edge[j, k]:
                continue
            if idx.min() < k < idx.max():
                missing += 1
                continue
            near = idx[:3] if k < idx.min() else idx[-3:]
            v = _line_fit(t[near], xs[j, near])[1] if len(near) >= 2 else 0.0
            pred = xs[j, near[0] if k < idx.min() else near[-1]] + v * (k - (near[0] if k < idx.min() else near[-1]))
            if radius[j] + 2 <= pred <= size - 3 - radius[j]:
                missing += 1
    raw["missing"] = missing / (2 * num_frames)
    # extra matter: foreground beyond the two tracked balls
    tracked = np.stack([cv2.dilate(m.astype(np.uint8), CLOSE_KERNEL).astype(bool) for m in tracked])
    fg = mask.reshape(num_frames, -1).sum(1)
    raw["extra_matter"] = float(np.mean((mask & ~tracked).reshape(num_frames, -1).sum(1) / np.maximum(fg, 1)))
    # each ball: a continuous path of two lines meeting at one shared impact time t_c
    best = None
    for t_c in np.arange(1.5, num_frames - 2.5, 0.25):
        sse, n, coefs = 0.0, 0, []
        for j in range(2):
            m = valid[j]
            before, after = (t <= t_c) & m, (t > t_c) & m
            if before.sum() < 2 or after.sum() < 2:
                break
            design = np.stack([np.ones(m.sum()), np.minimum(t[m] - t_c, 0), np.maximum(t[m] - t_c, 0)], axis=1)
            coef, *_ = np.linalg.lstsq(design, xs[j, m], rcond=None)
            sse += float(((design @ coef - xs[j, m]) ** 2).sum())
            n += int(m.sum())
            coefs.append(coef)
        if len(coefs) == 2 and (best is None or sse < best[0]):
            best = (sse, n, t_c, coefs)
    if best is None:
        trace.update(measured=xs.tolist(), law=law.tolist())
        return Measurement(raw, trace)
    sse, n, t_c, coefs = best
    raw["piecewise_residual"] = float(np.sqrt(sse / n))
    (x_a, u_a, w_a), (x_b, u_b, w_b) = coefs
    m_a, m_b = typical
    p_before, p_after = m_a * u_a + m_b * u_b, m_a * w_a + m_b * w_b
    raw["momentum_error"] = float(abs(p_after - p_before) / max(m_a * abs(u_a) + m_b * abs(u_b), 1e-6))
    closing = u_a - u_b
    e = (w_b - w_a) / closing if abs(closing) > 1e-3 else float("nan")
    raw["restitution_error"] = float(abs(e - e_law)) if np.isfinite(e) else float("nan")
    raw["speed_gain"] = float(max(0.0, e - 1.0)) if np.isfinite(e) else float("nan")
    reach = radius[0] + radius[1]
    raw["contact_gap"] = float(abs((x_b - x_a) - reach) / reach)
    both = valid[0] & valid[1]
    gap = xs[1, both] - xs[0, both]
    raw["interpenetration"] = float(np.clip(reach - gap, 0, None).max() / reach) if both.any() else float("nan")
    for j, (x_c, u, w) in enumerate(coefs):
        law[j] = x_c + u * np.minimum(t - t_c, 0) + w * np.maximum(t - t_c, 0)
    trace.update(measured=xs.tolist(), law=law.tolist())
    return Measurement(raw, trace)


# ---------------------------------------------------------------------- melting_block
def melt_law(t: np.ndarray) -> np.ndarray:
    """The world's ice area relative to its start: (1 − r·t)(1 − a·r·t), the melt clipped at 95 %."""
    law = LAWS["melting_block"]
    shrink = np.clip(law["melt_rate"] * t, 0, 0.95)
    return (1 - shrink) * (1 - law["melt_aspect"] * shrink)


def measure_melting_block(frames: np.ndarray) -> Measurement:
    """Ice area never grows, ice + water area is conserved, the puddle spreads, melt at the world's rate.

    Vision: colour rules on blueness (blue − red): water is strongly blue (> 0.25), ice
    faintly blue (0.02–0.25) and bright (luminance > 0.45) in rows without water or next to it (the
    puddle's pale anti-aliased edges are not ice); the warm plate and the beige wall are
    not blue. Areas are pixel counts; the puddle's width is its extent in columns.
    Conservation is checked only in frames where the puddle does not reach the frame's
    edge (the rest of it is out of view).
    """
    num_frames, width = frames.shape[0], frames.shape[2]
    blueness = frames[..., 2] - frames[..., 0]
    lum = frames.mean(axis=-1)
    water = blueness > 0.25
    candidates = (blueness > 0.02) & (blueness <= 0.25) & (lum > 0.45)
    wet_rows = water.any(axis=2)  # (F, H)
    wet_rows = wet_rows | np.roll(wet_rows, 1, axis=1) | np.roll(wet_rows, -1, axis=1)
    ice = candidates & ~wet_rows[..., None]  # rows holding water and their neighbours: the puddle's pale edges are not ice
    ice_area = ice.reshape(num_frames, -1).sum(1).astype(float)
    # water coverage, soft: blueness between the dry surface (the non-blue pixels' median) and full water
    dry = np.median(blueness[~water & ~candidates]) if (~water & ~candidates).any() else 0.0
    full = np.median(blueness[water]) if water.any() else 0.5
    coverage = np.clip((blueness - dry) / max(full - dry, 1e-3), 0, 1) * ~ice
    coverage[coverage < 0.25] = 0  # our choice: faint tints (the block's own blue, noise) are not water
    water_area = coverage.reshape(num_frames, -1).sum(1)
    cols = water.any(axis=1)  # (F, W)
    has_water = cols.any(axis=1)
    left = np.where(has_water, cols.argmax(axis=1), 0)
    right = np.where(has_water, width - 1 - cols[:, ::-1].argmax(axis=1), 0)
    pud_width = np.where(has_water, right - left + 1, 0).astype(float)
    t = np.arange(num_frames, dtype=float)
    model = melt_law(t)
    raw = dict.fromkeys(("ice_growth", "conservation", "puddle_shrink", "melt_residual", "melt_step"), float("nan"))
    if ice_area.max() < 10:  # our choice: under ten pixels there is no block to measure
        return Measurement(raw, _trace("ice area / start", t, ice_area * np.nan, model))
    a0 = float((ice_area * model).sum() / (model**2).sum())
    raw["ice_growth"] = _positive_steps(_moving_median(ice_area)) / a0
    inside = has_water & (left > 0) & (right < width - 1)
    if inside.sum() >= 3:
        # the ruler does not know the water layer's depth in pixels: one factor κ ∈ [0.5, 2] (our choice)
        # turns water pixels into ice pixels, the one that keeps the sum most constant
        ice_in, water_in = ice_area[inside], water_area[inside]
        var_w = np.var(water_in)
        kappa = float(np.clip(-np.cov(ice_in, water_in, bias=True)[0, 1] / var_w, 0.5, 2.0)) if var_w > 0 else 1.0
        total = ice_in + kappa * water_in
        raw["conservation"] = float((total.max() - total.min()) / max(np.median(total), 1.0))
    raw["puddle_shrink"] = _positive_steps(-pud_width)
    raw["melt_residual"] = float(np.sqrt(np.mean((ice_area / a0 - model) ** 2)))
    raw["melt_step"] = float(np.abs(np.diff(ice_area) / a0 - np.diff(model)).max())
    return Measurement(raw, _trace("ice area / start", t, ice_area / a0, model))


# ---------------------------------------------------------------------- dye_advection
def _basin(frames: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """The basin: mask (H, W) of pixels unlike the corners' backdrop, its centre (x, y) and radius."""
    still = np.median(frames, axis=0)
    h, w = still.shape[:2]
    c = max(2, h // 12)
    corners = np.concatenate([still[:c, :c], still[:c, -c:], still[-c:, :c], still[-c:, -c:]]).reshape(-1, 3)
    backdrop = np.median(corners, axis=0)
    mask = largest_component(np.linalg.norm(still - backdrop, axis=-1) > 0.25)
    if mask.sum() < 20:
        return mask, w / 2, h / 2, 0.0
    yy, xx = np.nonzero(mask)
    radius = math.sqrt(mask.sum() / math.pi)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # our choice: 2 px off the rim
    return inner, float(xx.mean()), float(yy.mean()), radius


def polar(field_: np.ndarray, cx: float, cy: float, radii: np.ndarray, num_angles: int) -> np.ndarray:
    """Resample fields (..., H, W) on a polar grid about (cx, cy): (..., R, A); −1 outside the frame.

    Angles θ_j = 2πj / A are measured with ``atan2(y − cy, x − cx)`` in image coordinates
    (y down), the convention of the scenes' vortex.
    """
    theta = 2 * np.pi * np.arange(num_angles) / num_angles
    map_x = (cx + radii[:, None] * np.cos(theta)[None]).astype(np.float32)
    map_y = (cy + radii[:, None] * np.sin(theta)[None]).astype(np.float32)
    flat = field_.reshape(-1, *field_.shape[-2:])
    out = np.stack([cv2.remap(f.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0) for f in flat])
    return out.reshape(*field_.shape[:-2], len(radii), num_angles)


ROTATION_GRID = np.arange(-12.0, 12.0001, 0.05)
"""Multiples s of the world's vortex profile (our choice: ±12 covers any time jump the clip
can hold; each window is resolved to 0.25, the whole clip's s to 0.05, a 5 % error in ω)."""
ROTATION_LAG = 4
"""Our choice: rotation is compared between frames 4 apart. Over one frame the dye moves
about half a pixel, which video codecs round away (they copy nearly unchanged blocks);
over four frames it moves two pixels and survives the encoding."""


def measure_dye_advection(frames: np.ndarray) -> Measurement:
    """Total dye conserved; the dye rotates at the world's vortex angular speed ω(r).

    Vision: the basin is what differs from the corners' backdrop; the water colour is
    the basin's median colour, the dye colour the 1 % of basin pixels farthest from it;
    the concentration is the projection of each pixel on water → dye. On a polar grid
    about the basin's centre, each ring of frame t rotated by s·ω(r)·L (the world's
    profile over :data:`ROTATION_LAG` L frames; s on :data:`ROTATION_GRID`, shifts
    applied exactly in Fourier space) is compared with frame t + L; s fitted over all
    windows together should be ±1 (the vortex turns either way), and no window should
    depart from it.
    """
    num_frames = frames.shape[0]
    law = LAWS["dye_advection"]
    basin, cx, cy, radius = _basin(frames)
    raw = dict.fromkeys(("conservation", "rotation_rate_error", "rotation_step"), float("nan"))
    t = np.arange(num_frames, dtype=float)
    empty = _trace("rotation / world ω", t, t * np.nan, np.ones(num_frames))
    if radius < 8 or basin.sum() < 20:  # our choice: a basin under 8 px has too few rings to measure
        return Measurement(raw, empty)
    pix = frames[:, basin]  # (F, N, 3)
    water = np.median(pix.reshape(-1, 3), axis=0)
    dist = np.linalg.norm(pix - water, axis=-1)
    dye = pix[dist >= np.quantile(dist, 0.99)].mean(axis=0)
    axis = dye - water
    if np.linalg.norm(axis) < 0.1:  # our choice: a dye colour within 0.1 of the water is no dye
        return Measurement(raw, empty)
    conc = np.zeros(frames.shape[:3], np.float32)
    conc[:, basin] = np.clip(((pix - water) @ axis) / (axis @ axis), 0, 1.5)
    total = conc.reshape(num_frames, -1).sum(1)
    raw["conservation"] = float((total.max() - total.min()) / max(np.median(total), 1e-6))
    radii = np.arange(2.0, radius - 2.0)
    rings = np.clip(polar(conc, cx, cy, radii, 96), 0, None)  # (F, R, A)
    spec = np.fft.rfft(rings, axis=-1)  # (F, R, K)
    k = np.arange(spec.shape[-1])
    weight = radii[:, None] * np.where((k == 0) | (k == 96 // 2), 1.0, 2.0)[None]  # ring area × rfft symmetry
    omega = law["omega"] / (1 + (radii / (law["core"] * radius)) ** 2)  # (R,)
    lag = ROTATION_LAG
    cross = (spec[:-lag] * np.conj(spec[lag:]) * weight[None]).reshape(num_frames - lag, -1)  # (F − lag, R·K)

    def agreement(grid: np.ndarray) -> np.ndarray:
        """Σ Re(cross · e^{−i·angle}) per window and s: ‖rotated(t) − (t+L)‖² = const − 2 × this, (F − L, S)."""
        angle = (k[None, None] * grid[:, None, None] * (lag * omega)[None, :, None]).reshape(len(grid), -1)  # (S, R·K)
        # einsum's own loop: a multithreaded BLAS product this small is slower on a busy machine
        return np.einsum("tn,sn->ts", cross.real, np.cos(angle), optimize=False) + np.einsum("tn,sn->ts", cross.imag, np.sin(angle), optimize=False)

    coarse = ROTATION_GRID[::5]  # 0.25 apart, then 0.05 around the best
    per_window = agreement(coarse)
    best = coarse[int(np.argmax(per_window.sum(0)))]
    fine = ROTATION_GRID[np.abs(ROTATION_GRID - best) <= 0.3]
    s_fit = fine[int(np.argmax(agreement(fine).sum(0)))]
    s_step = coarse[np.argmax(per_window, axis=1)]
    raw["rotation_rate_error"] = float(abs(abs(s_fit) - 1))
    raw["rotation_step"] = float(np.abs(s_step - s_fit).max())
    sign = 1.0 if s_fit >= 0 else -1.0
    return Measurement(raw, _trace(f"rotation over {lag} frames / world ω", t[:-lag], sign * s_step, np.ones(num_frames - lag)))


# ------------------------------------------------------------------------ smoke_puff
def smoke_growth(t: np.ndarray) -> np.ndarray:
    """The world's puff growth shape 1 − exp(−t / growth_time) (radius = r0 + (r1 − r0)·shape)."""
    return 1 - np.exp(-t / LAWS["smoke_puff"]["growth_time"])


def measure_smoke_puff(frames: np.ndarray) -> Measurement:
    """The puff rises (at the world's rate) and widens (with the world's growth time); its mass decays.

    Vision: the smoke's density is the brightening over the frame's row-median background,
    relative to the room left to white; static structure (the nozzle: density that does
    not change over time) is removed. Mass is the summed density; height and width are the
    centroid row and the standard deviation of the column, weighted by the density of the
    puff's body (above a tenth of the frame's densest).
    """
    num_frames, size = frames.shape[0], frames.shape[1]
    law = LAWS["smoke_puff"]
    lum = frames.mean(axis=-1)
    # each frame's own row medians: a global brightness flicker (a generator's, a codec's)
    # shifts the backdrop with the smoke and is not read as smoke appearing or vanishing
    bg = np.median(lum, axis=2)  # (F, H)
    room = np.clip(0.95 - np.median(bg, axis=0), 0.1, None)  # (H,) the room left to white, of the clip's backdrop
    dens = np.clip(lum - bg[:, :, None] - 0.02, 0, None) / room[None, :, None]
    static = (dens.std(axis=0) < 0.01) & (np.median(dens, axis=0) > 0.03)  # our choice: an unchanging brightening is not smoke
    dens[:, static] = 0
    mass = dens.reshape(num_frames, -1).sum(1)
    t = np.arange(num_frames, dtype=float)
    raw = dict.fromkeys(("sinking", "rise_residual", "narrowing", "growth_residual", "mass_gain", "mass_step"), float("nan"))
    ok = mass > 5.0  # our choice: under five pixels' worth of smoke there is no puff
    if ok.sum() < MIN_FRAMES // 2:
        return Measurement(raw, _trace("puff height (px, up)", t, t * np.nan, t * np.nan))
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    # the puff's shape from its body: density above a tenth of the frame's densest (our choice), so
    # faint haze or noise far from it does not widen it
    body = np.where(dens > 0.1 * dens.reshape(num_frames, -1).max(1)[:, None, None], dens, 0.0)
    m = np.maximum(body.reshape(num_frames, -1).sum(1), 1e-6)
    cy = (body * yy).reshape(num_frames, -1).sum(1) / m
    cx = (body * xx).reshape(num_frames, -1).sum(1) / m
    sx = np.sqrt(np.clip((body * (xx[None] - cx[:, None, None]) ** 2).reshape(num_frames, -1).sum(1) / m, 0, None))
    tv = t[ok]
    raw["sinking"] = _positive_steps(cy[ok])
    rise = law["rise"] * size
    height = -cy[ok]
    offset = float(np.mean(height - rise * tv))
    raw["rise_residual"] = float(np.sqrt(np.mean((height - offset - rise * tv) ** 2)))
    raw["narrowing"] = _positive_steps(-sx[ok])
    shape = smoke_growth(tv)
    design = np.stack([np.ones_like(tv), shape], axis=1)
    coef, *_ = np.linalg.lstsq(design, sx[ok], rcond=None)
    raw["growth_residual"] = float(np.sqrt(np.mean((sx[ok] - design @ coef) ** 2)))
    raw["mass_gain"] = _positive_steps(mass[ok]) / float(mass[ok][0])
    ratio = mass[1:] / np.clip(mass[:-1], 1e-6, None)
    both = ok[1:] & ok[:-1]
    step = np.abs(np.log(np.clip(ratio, 1e-3, None)) + law["dissipation"])
    step = np.where(both, step, np.abs(np.log(1e-3)))  # a vanished puff is the largest step
    raw["mass_step"] = float(step.max())
    law_height = np.full(num_frames, np.nan)
    law_height[ok] = offset + rise * tv
    return Measurement(raw, _trace("puff height (px, up)", t, np.where(ok, -cy, np.nan), law_height))


# ----------------------------------------------------------------------- elastic_bar
def measure_elastic_bar(frames: np.ndarray) -> Measurement:
    """The tip oscillates at the world's period with the world's (non-negative) damping.

    Vision: the bar is the saturated colour (chroma = max − min of RGB, 0.12 above the
    clip's median chroma; the wall and backdrop are grey) in regions at least a fifth the size of the largest
    (:func:`significant_components`); its free end is the rightmost column it fills in at least half
    the frames; the tip's height is the mean row of bar pixels in the 4 columns before it.
    The tip height is fitted with the world's law c + e^{−δt}(a·sin ωt + b·cos ωt) (δ and
    ω from :data:`LAWS`, three free parameters), and freely over a grid of periods
    (6–48 frames) and damping rates (−0.08 to 0.08 per frame).
    """
    num_frames = frames.shape[0]
    law = LAWS["elastic_bar"]
    chroma = frames.max(axis=-1) - frames.min(axis=-1)
    # chroma above the backdrop's own (the clip's median; the bar covers a small part of the
    # frame): a colour cast over the whole frame (a generator's, a white balance) tints the
    # grey backdrop and wall, not only the bar
    excess = chroma - float(np.median(chroma))
    bar = np.stack([significant_components(m) for m in excess > 0.12])
    area = bar.reshape(num_frames, -1).sum(1).astype(float)
    t = np.arange(num_frames, dtype=float)
    raw = dict.fromkeys(("law_residual", "period_error", "damping_error", "size_change"), float("nan"))
    raw["missing"] = 1.0
    filled = bar.any(axis=1).mean(axis=0) >= 0.5  # (W,) columns the bar fills in half the frames
    if not filled.any() or np.median(area) < 10:
        return Measurement(raw, _trace("tip height (px, down)", t, t * np.nan, t * np.nan))
    typical = float(np.median(area))
    end = int(np.nonzero(filled)[0].max())
    band = bar[:, :, max(0, end - 4) : end]
    yy = np.arange(frames.shape[1], dtype=float)[None, :, None]
    count = band.sum(axis=(1, 2))
    tip = np.where(count > 0, (band * yy).sum(axis=(1, 2)) / np.maximum(count, 1), np.nan)
    present = (count > 0) & (area >= 0.5 * typical)
    raw["missing"] = float(1 - present.mean())
    raw["size_change"] = float(np.mean(np.abs(area[present] / typical - 1))) if present.any() else float("nan")
    if present.sum() < MIN_FRAMES // 2:
        return Measurement(raw, _trace("tip height (px, down)", t, tip, t * np.nan))
    tv, yv = t[present], tip[present]

    def fit(period: np.ndarray, damping: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least squares of c + e^{−δt}(a sin + b cos) for each (period, damping): rss, amplitude, prediction."""
        w = 2 * np.pi / period[:, None]
        env = np.exp(-damping[:, None] * tv[None])
        design = np.stack([np.ones((len(period), len(tv))), env * np.sin(w * tv), env * np.cos(w * tv)], axis=-1)  # (P, N, 3)
        gram = design.transpose(0, 2, 1) @ design + 1e-9 * np.eye(3)
        coef = np.linalg.solve(gram, design.transpose(0, 2, 1) @ yv[None, :, None])[..., 0]  # (P, 3)
        pred = (design @ coef[..., None])[..., 0]
        rss = ((pred - yv[None]) ** 2).sum(1)
        return rss, np.hypot(coef[:, 1], coef[:, 2]), pred

    rss, amp, pred = fit(np.array([law["period"]]), np.array([law["damping"]]))
    raw["law_residual"] = float(np.sqrt(rss[0] / len(tv)) / max(amp[0], 1.0))
    periods = np.exp(np.linspace(np.log(6), np.log(48), 160))
    dampings = np.arange(-0.08, 0.08001, 0.0025)
    pp, dd = np.meshgrid(periods, dampings, indexing="ij")
    rss_all, _, _ = fit(pp.ravel(), dd.ravel())
    best = int(np.argmin(rss_all))
    raw["period_error"] = float(abs(pp.ravel()[best] / law["period"] - 1))
    raw["damping_error"] = float(abs(dd.ravel()[best] - law["damping"]) * num_frames)
    law_tip = np.full(num_frames, np.nan)
    law_tip[present] = pred[0]
    return Measurement(raw, _trace("tip height (px, down)", t, tip, law_tip))


# --------------------------------------------------------------------- cooling_plate
@lru_cache(maxsize=1)
def _incandescence_table() -> tuple[np.ndarray, np.ndarray]:
    """Temperatures (N,) and the colours (N, 3) the scene gives them (for inverting the glow)."""
    from pila.lab.scenes import _incandescence

    temps = np.linspace(0, 1, 201)
    return temps, _incandescence(temps).astype(np.float32)


COLD_PLATE = 0.3
"""The cold plate's grey (``_incandescence`` at T = 0), the reference :func:`cold_plate_balanced` restores."""


def cold_plate_balanced(frames: np.ndarray) -> np.ndarray:
    """Frames shifted per frame and channel so the cold plate reads its rendered grey again.

    The plate is the brighter class of the still image's luminance (Otsu's threshold; the
    room around it is darker), its cold colour in each frame the per-channel median over the
    fifth of the plate that is least red in the still image (the part farthest from the glow). A colour cast or a brightness
    flicker over the whole frame (a generator's, a codec's) then no longer reads as a
    change of temperature.
    """
    still = np.median(frames, axis=0).mean(axis=-1)
    level, _ = cv2.threshold(np.round(still * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    plate = still * 255 > level
    if plate.sum() < 0.1 * plate.size:  # our choice: no plate-sized bright region, nothing to balance against
        return frames
    # the cold part: the fifth of the plate least red in the still image (farthest from the
    # glow in every frame; a cast shifts every pixel's redness alike, so the choice holds)
    redness = (np.median(frames, axis=0)[..., 0] - np.median(frames, axis=0)[..., 2])[plate]
    coldest = np.zeros_like(plate)
    coldest[plate] = redness <= np.quantile(redness, 0.2)
    cold = np.median(frames[:, coldest], axis=1)  # (F, 3)
    return np.clip(frames - (cold - COLD_PLATE)[:, None, None, :], 0.0, 1.0)


def temperature_map(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Temperature (F, H, W) by inverting the plate's incandescence (nearest colour), and the plate mask (H, W).

    Colours are first balanced on the cold plate (:func:`cold_plate_balanced`).

    The plate is where the still image lies within 0.1 of the glow's colour curve (our
    choice: the dark room around it is ≥ 0.3 away); elsewhere the temperature is 0.
    """
    temps, colours = _incandescence_table()
    frames = cold_plate_balanced(frames)

    def nearest(pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # colours to 8 bits (what a video holds), each distinct colour looked up once
        codes = np.round(pix * 255).astype(np.int32) @ np.array([65536, 256, 1], np.int32)
        uniq, inverse = np.unique(codes, return_inverse=True)
        rgb = np.stack([uniq // 65536, (uniq // 256) % 256, uniq % 256], axis=1).astype(np.float32) / 255
        d2 = (rgb**2).sum(1)[:, None] - 2 * rgb @ colours.T + (colours**2).sum(1)[None]  # (U, T)
        idx = np.argmin(d2, axis=1)
        dist = np.sqrt(np.clip(d2[np.arange(len(rgb)), idx], 0, None))
        return idx[inverse.ravel()], dist[inverse.ravel()]

    _, still_dist = nearest(np.median(frames, axis=0).reshape(-1, 3))
    plate = still_dist.reshape(frames.shape[1:3]) < 0.1
    temp = np.zeros(frames.shape[:3])
    # a glow is redder than it is blue (red − blue = 3T at low T); greyer pixels are cold (T < 0.004)
    glowing = plate[None] & (frames[..., 0] - frames[..., 2] > 0.01)
    if glowing.any():
        idx, _ = nearest(frames[glowing])
        temp[glowing] = temps[idx]
    return temp, plate


def measure_cooling_plate(frames: np.ndarray) -> Measurement:
    """The peak never rises, the spot's variance grows at the world's 2D, the heat decays at the world's rate.

    Vision: temperatures from the glow's colour (:func:`temperature_map`); per frame a
    Gaussian is fitted to the hot spot (log-temperature against squared distance from the
    spot's centroid, pixels above 5 % of the peak, weighted by temperature), giving its
    peak A(t) and per-axis variance V(t); the heat is A·V (∝ the integral of a Gaussian).
    """
    num_frames, size = frames.shape[0], frames.shape[1]
    law = LAWS["cooling_plate"]
    two_d = 2 * law["diffusivity"] * size**2  # px² per frame
    temp, _ = temperature_map(frames)
    t = np.arange(num_frames, dtype=float)
    flat = temp.reshape(num_frames, -1)
    peak = np.sort(flat, axis=1)[:, -4:].mean(axis=1)  # our choice: the mean of the 4 hottest pixels resists noise
    raw = dict.fromkeys(("peak_rise", "variance_rate_error", "variance_residual", "heat_step", "fit_residual"), float("nan"))
    if peak.max() < 0.05:  # our choice: no pixel above 5 % of full glow is no hot spot
        return Measurement(raw, _trace("spot variance (px²)", t, t * np.nan, t * np.nan))
    raw["peak_rise"] = _positive_steps(_moving_median(peak)) / max(float(peak[0]), 0.05)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    var = np.full(num_frames, np.nan)
    amp = np.full(num_frames, np.nan)
    resid = np.full(num_frames, np.nan)
    for k in range(num_frames):
        tk = temp[k]
        if peak[k] < 0.02:
            continue
        hot = tk > 0.5 * peak[k]
        cx, cy = (tk * hot * xx).sum() / (tk * hot).sum(), (tk * hot * yy).sum() / (tk * hot).sum()
        use = tk > max(0.05 * peak[k], 0.01)
        if use.sum() < 6:
            continue
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2)[use]
        logt = np.log(tk[use])
        wts = tk[use]
        design = np.stack([np.ones_like(r2), r2], axis=1) * wts[:, None]
        coef, *_ = np.linalg.lstsq(design, logt * wts, rcond=None)
        if coef[1] >= 0:
            continue
        var[k], amp[k] = -1 / (2 * coef[1]), math.exp(coef[0])
        resid[k] = float(np.sqrt(np.average((logt - coef[0] - coef[1] * r2) ** 2, weights=wts)))
    ok = np.isfinite(var)
    law_var = np.full(num_frames, np.nan)
    if ok.sum() < MIN_FRAMES // 2:
        return Measurement(raw, _trace("spot variance (px²)", t, var, law_var))
    a, slope, rms = _line_fit(t[ok], var[ok])
    raw["variance_rate_error"] = float(abs(slope / two_d - 1))
    raw["variance_residual"] = rms / two_d
    heat = np.log(amp * var)
    step = np.abs(np.diff(heat) + law["cooling"])
    step = np.where(np.isfinite(step), step, 5.0)  # our choice: a step that loses the spot counts as e⁵
    raw["heat_step"] = float(step.max())
    raw["fit_residual"] = float(np.nanmean(resid))
    offset = float(np.mean(var[ok] - two_d * t[ok]))
    law_var[ok] = offset + two_d * t[ok]
    return Measurement(raw, _trace("spot variance (px²)", t, var, law_var))


# ------------------------------------------------------------------ ripple_reflection
def _circle_fit(xx: np.ndarray, yy: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted algebraic (Kåsa) circle fit: centre (x, y) and radius."""
    design = np.stack([xx, yy, np.ones_like(xx)], axis=1) * w[:, None]
    target = -(xx**2 + yy**2) * w
    (d, e, f), *_ = np.linalg.lstsq(design, target, rcond=None)
    cx, cy = -d / 2, -e / 2
    return float(cx), float(cy), float(math.sqrt(max(cx * cx + cy * cy - f, 0.0)))


def measure_ripple_reflection(frames: np.ndarray) -> Measurement:
    """The ring's radius grows linearly at the world's wave speed.

    Vision: the still scene is the per-pixel temporal median (a ring passes each pixel
    for well under half the clip); the ring is the change against it (energy per pixel).
    Each pixel's energy is taken relative to its largest over time, so the bright lamp's
    reflection does not outweigh the dark water. The ring's centre is the median over the
    frames of weighted circle fits to the pixels above half their largest change (one
    ring has one centre: the fits' mean distance from it is ``centre_wander``). Per
    frame, the relative energy on a polar grid about the centre is averaged over the rays
    that see each radius and smoothed along it (σ = 3 px, our choice: about a third of the wavelength,
    so the crests merge into their envelope); the envelope's peak is the radius. Frames before 6 (our choice: a ring
    narrower than its wave packet has a biased radius) are not fitted.
    """
    num_frames, size = frames.shape[0], frames.shape[1]
    speed = LAWS["ripple_reflection"]["wave_speed"] * size
    still = np.median(frames, axis=0)
    energy = ((frames - still[None]) ** 2).sum(-1)  # (F, H, W)
    total = energy.reshape(num_frames, -1).sum(1)
    t = np.arange(num_frames, dtype=float)
    raw = dict.fromkeys(("radius_residual", "speed_error", "centre_wander"), float("nan"))
    raw["missing"] = 1.0
    empty = _trace("ring radius (px)", t, t * np.nan, t * np.nan)
    if total.max() < 1e-3:  # our choice: nothing changes at all
        return Measurement(raw, empty)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    visible = total > 0.05 * total.max()  # our choice: 5 % of the strongest frame's change
    # each pixel's change relative to its own largest: the bright lamp does not outweigh the dark water
    relative = energy / np.maximum(energy.max(axis=0, keepdims=True), 1e-4)
    centres = []
    for k in np.nonzero(visible)[0]:
        e = relative[k]
        strong = e > 0.5
        if strong.sum() >= 8:
            cx, cy, _ = _circle_fit(xx[strong], yy[strong], e[strong])
            if 0 <= cx < size and 0 <= cy < size:
                centres.append((cx, cy))
    if not centres:
        return Measurement(raw, empty)
    cx, cy = np.median(np.array(centres), axis=0)
    raw["centre_wander"] = float(np.mean(np.hypot(*(np.array(centres) - [cx, cy]).T)))
    radii = np.arange(0.0, 1.5 * size)
    rays = polar(relative, cx, cy, radii, 72)  # (F, R, A)
    inside = rays[0] >= 0  # (R, A)
    seen = inside.sum(axis=1)  # rays that see each radius
    profile = np.where(inside[None], rays, 0).sum(axis=2) / np.maximum(seen, 1)[None]  # (F, R): mean energy at each radius
    kernel = np.exp(-0.5 * (np.arange(-9, 10) / 3.0) ** 2)
    smooth = np.stack([np.convolve(p, kernel / kernel.sum(), mode="same") for p in profile])
    usable = seen >= 6  # our choice: a radius seen by fewer than 6 of 72 rays is mostly out of the frame
    limit = radii[usable].max() if usable.any() else 0.0
    radius = np.full(num_frames, np.nan)
    for k in np.nonzero(visible)[0]:
        prof = np.where(usable, smooth[k], 0)
        peak = int(np.argmax(prof))
        if radii[peak] + 8 <= limit:  # our choice: the envelope's peak must be 8 px inside what is seen
            lo, hi = max(0, peak - 2), min(len(radii), peak + 3)
            radius[k] = float((radii[lo:hi] * prof[lo:hi]).sum() / max(prof[lo:hi].sum(), 1e-12))
    fit = np.isfinite(radius) & (t >= 3)
    law_r = np.full(num_frames, np.nan)
    if fit.sum() >= 4:
        offset = float(np.median(radius[fit] - speed * t[fit]))
        raw["radius_residual"] = float(np.sqrt(np.mean((radius[fit] - offset - speed * t[fit]) ** 2)))
        raw["speed_error"] = float(abs(_line_fit(t[fit], radius[fit])[1] / speed - 1))
        law_r = offset + speed * t
        # where the law's ring is inside the frame along some ray, it should show
        should = (law_r > 4) & (law_r + 8 <= limit)
        raw["missing"] = float((should & ~np.isfinite(radius)).sum() / max(should.sum(), 1))
    else:
        raw["missing"] = float(1 - np.isfinite(radius).mean())
    return Measurement(raw, _trace("ring radius (px)", t, radius, law_r))


# ------------------------------------------------------------------------- the table
SCENE_MEASURES: dict[str, Callable[[np.ndarray], Measurement]] = {
    "ball_bounce": measure_ball_bounce,
    "elastic_bar": measure_elastic_bar,
    "dye_advection": measure_dye_advection,
    "smoke_puff": measure_smoke_puff,
    "melting_block": measure_melting_block,
    "ball_collision": measure_ball_collision,
    "cooling_plate": measure_cooling_plate,
    "ripple_reflection": measure_ripple_reflection,
}
"""Scene name → its measuring function ``frames (F, 64, 64, 3) float → Measurement``."""

MIN_SCALE: dict[str, float] = {
    "parabola_residual": 0.05,
    "gravity_error": 0.02,
    "restitution_error": 0.02,
    "horizontal_residual": 0.05,
    "size_change": 0.02,
    "missing": 0.02,
    "piecewise_residual": 0.05,
    "momentum_error": 0.02,
    "speed_gain": 0.02,
    "interpenetration": 0.02,
    "contact_gap": 0.02,
    "extra_matter": 0.01,
    "ice_growth": 0.01,
    "conservation": 0.01,
    "puddle_shrink": 0.5,
    "melt_residual": 0.01,
    "melt_step": 0.01,
    "rotation_rate_error": 0.05,
    "rotation_step": 0.1,
    "sinking": 0.05,
    "rise_residual": 0.05,
    "narrowing": 0.05,
    "growth_residual": 0.05,
    "mass_gain": 0.01,
    "mass_step": 0.005,
    "law_residual": 0.01,
    "period_error": 0.01,
    "damping_error": 0.02,
    "peak_rise": 0.01,
    "variance_rate_error": 0.02,
    "variance_residual": 0.5,
    "heat_step": 0.005,
    "fit_residual": 0.01,
    "radius_residual": 0.05,
    "speed_error": 0.02,
    "centre_wander": 0.1,
}
"""Our choice, per sub-measure: the smallest spread that counts as one unit of violation
(a twentieth of a pixel, 1–2 % of a ratio), so sub-measures that are exactly 0 on ground
truth do not turn float noise into violations."""


# ----------------------------------------------------------------------- calibration
CALIBRATION_CLIPS = 48
"""Our choice: ground-truth clips per scene behind the calibration (the median and the
95th percentile are stable at this count)."""
CALIBRATION_SEED = 1234
"""Seed of the calibration clips: clip i of scene s uses ``default_rng([seed, s, i])``,
disjoint from the synthetic datasets' default seed 0 and from the tests' seeds."""
CALIBRATION_CRF = 18
"""Every other calibration clip goes through an H.264 round trip at ``pila predict``'s default crf."""


def ground_truth_clips(scene: str, count: int, seed: int, num_frames: int = LAB_FRAMES, size: int = LAB_SIZE, law: dict[str, float] | None = None) -> list[np.ndarray]:
    """``count`` rendered clips of ``scene`` as float frames (F, size, size, 3); clip i uses ``default_rng([seed, s, i])``."""
    s = list(SCENES).index(scene)
    return [render_scene(scene, np.random.default_rng([seed, s, i]), num_frames, size, size, law=law).frames for i in range(count)]


def mp4_round_trip(frames: np.ndarray, crf: int = CALIBRATION_CRF) -> np.ndarray:
    """Frames written to an in-memory H.264 mp4 and decoded again (uint8), as a generated video would be."""
    import io

    import av

    from pila.io import encode_mp4, frames_to_uint8

    buf = io.BytesIO()
    encode_mp4(buf, frames_to_uint8(np.asarray(frames)), fps=16.0, codec="libx264", crf=crf)
    buf.seek(0)
    with av.open(buf) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def calibrate(count: int = CALIBRATION_CLIPS, seed: int = CALIBRATION_SEED, crf: int | None = CALIBRATION_CRF, scenes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Measure ground truth: per scene and sub-measure the median and scale; the fidelity prototypes.

    Renders ``count`` clips per scene at the lab size (33 × 64 × 64), passes every other
    one through an mp4 round trip at ``crf`` (None: none; ground truth is measured both as
    rendered and as a video file holds it), and records for each raw sub-measure its
    median and its scale (95th percentile − median, floored at :data:`MIN_SCALE`), and for
    the fidelity classifier each scene's feature mean and standard deviation over the
    clips and their appearance variants (:func:`appearance_variant`; only when all scenes
    are calibrated: ``scenes`` None).
    """
    out: dict[str, Any] = {"settings": {"count": count, "seed": seed, "crf": crf, "frames": LAB_FRAMES, "size": LAB_SIZE}, "scenes": {}, "fidelity": {}}
    features: dict[str, list[np.ndarray]] = {}
    variant_rng = np.random.default_rng([seed, 1])
    for scene in scenes or tuple(SCENES):
        raws: dict[str, list[float]] = {}
        features[scene] = []
        for i, clip in enumerate(ground_truth_clips(scene, count, seed)):
            frames = prepare(mp4_round_trip(clip, crf) if crf is not None and i % 2 else clip)
            for name, value in SCENE_MEASURES[scene](frames).raw.items():
                raws.setdefault(name, []).append(value)
            features[scene].append(appearance_features(frames))
            for _ in range(FIDELITY_VARIANTS):
                features[scene].append(appearance_features(prepare(appearance_variant(clip, variant_rng))))
        stats = {}
        for name, values in raws.items():
            v = np.asarray(values, float)
            v = v[np.isfinite(v)]
            median = float(np.median(v)) if len(v) else 0.0
            q95 = float(np.quantile(v, 0.95)) if len(v) else 0.0
            stats[name] = {"median": median, "scale": max(q95 - median, MIN_SCALE[name]), "unmeasured": int(len(values) - len(v))}
        out["scenes"][scene] = stats
    if scenes is not None:
        return out
    all_feats = np.concatenate([np.stack(f) for f in features.values()])
    spread = all_feats.std(axis=0) + 1e-6
    for scene, feats in features.items():
        f = np.stack(feats)
        out["fidelity"][scene] = {"mean": f.mean(0).tolist(), "std": np.maximum(f.std(0), FEATURE_STD_FLOOR * spread).tolist()}
    return out


def write_calibration(path: str | os.PathLike = CALIBRATION_PATH, **kwargs: Any) -> Path:
    """Run :func:`calibrate` and write the result as JSON (atomically)."""
    from pila.io import write_json_atomic

    write_json_atomic(path, calibrate(**kwargs))
    load_calibration.cache_clear()
    return Path(path)


@lru_cache(maxsize=4)
def load_calibration(path: str | None = None) -> dict[str, Any]:
    """The stored calibration (``ruler_calibration.json`` beside this module unless ``path``)."""
    source = Path(path) if path else CALIBRATION_PATH
    if not source.is_file():
        raise FileNotFoundError(f"the ruler's calibration {source} is missing; run pila.lab.metrics.write_calibration()")
    return json.loads(source.read_text(encoding="utf-8"))


def normalise(scene: str, raw: dict[str, float], calibration: dict[str, Any] | None = None) -> dict[str, float]:
    """Raw sub-measures → z = max(0, (m − median) / scale) against the scene's ground truth (capped at :data:`MAX_Z`)."""
    stats = (calibration or load_calibration())["scenes"][scene]
    out = {}
    for name, value in raw.items():
        if not np.isfinite(value):
            out[name] = UNMEASURABLE_Z
        else:
            s = stats[name]
            out[name] = float(min(MAX_Z, max(0.0, (value - s["median"]) / s["scale"])))
    return out


# -------------------------------------------------------------------------- fidelity
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
    small = np.stack([cv2.resize(f, (FEATURE_SIZE, FEATURE_SIZE), interpolation=cv2.INTER_AREA) for f in frames])
    still = np.median(small, axis=0)
    h, w = still.shape[:2]
    quads = [still[: h // 2, : w // 2], still[: h // 2, w // 2 :], still[h // 2 :, : w // 2], still[h // 2 :, w // 2 :]]
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
    """The same clip as an imperfect generator might draw it: blurred, colour-shifted, flickering, grainy.

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


def scene_probabilities(frames: np.ndarray, calibration: dict[str, Any] | None = None) -> dict[str, float]:
    """Posterior over the eight scenes and ``"none"`` (Gaussian prototypes, tempered by the feature count)."""
    protos = (calibration or load_calibration())["fidelity"]
    f = appearance_features(frames)
    names = list(protos)
    scores = []
    for name in names:
        mean, std = np.asarray(protos[name]["mean"]), np.asarray(protos[name]["std"])
        scores.append(-0.5 * float(np.mean(((f - mean) / std) ** 2)))
    scores.append(-0.5 * NONE_DISTANCE)
    logits = np.asarray(scores) * len(f) / 4  # our choice: tempered so four features' worth of evidence is one nat
    logits -= logits.max()
    p = np.exp(logits)
    p /= p.sum()
    return {**{n: float(v) for n, v in zip(names, p[:-1], strict=True)}, "none": float(p[-1])}


def scene_fidelity(frames: np.ndarray, scene: str, calibration: dict[str, Any] | None = None) -> float:
    """The probability that ``frames`` show ``scene`` (in [0, 1])."""
    return scene_probabilities(frames, calibration).get(scene, 0.0)


# --------------------------------------------------------------------------- the ruler
@dataclass
class RulerResult:
    """The ruler's verdict on one video.

    Attributes:
        scene: the scene measured against.
        violation: mean normalised sub-measure (≥ 0; ≈ 0 on ground truth).
        fidelity: probability that the video shows ``scene``.
        raw: raw sub-measures (NaN: not measurable).
        normalised: sub-measure → z.
        trace: the measured quantity against the law (for figures).
    """

    scene: str
    violation: float
    fidelity: float
    raw: dict[str, float]
    normalised: dict[str, float]
    trace: dict[str, Any]

    def measures(self) -> dict[str, Any]:
        """JSON-ready sub-measures: raw (None when not measurable) and normalised."""
        return {
            name: {"raw": (float(v) if np.isfinite(v) else None), "z": self.normalised[name]}
            for name, v in self.raw.items()
        }


def measure(frames: np.ndarray, scene: str, calibration: dict[str, Any] | None = None) -> RulerResult:
    """Measure one video (F, H, W, 3; uint8 or float in [0, 1]) against ``scene``'s law.

    Raises:
        ValueError: an unknown scene, frames of the wrong shape, or fewer than
            :data:`MIN_FRAMES` frames.
    """
    if scene not in SCENE_MEASURES:
        raise ValueError(f"unknown scene {scene!r}; valid: {', '.join(SCENE_MEASURES)}")
    lab = prepare(frames)
    if lab.shape[0] < MIN_FRAMES:
        raise ValueError(f"a video of {lab.shape[0]} frames is too short to measure (at least {MIN_FRAMES})")
    calibration = calibration or load_calibration()
    m = SCENE_MEASURES[scene](lab)
    z = normalise(scene, m.raw, calibration)
    violation = float(np.mean(list(z.values())))
    return RulerResult(scene, violation, scene_fidelity(lab, scene, calibration), m.raw, z, m.trace)


__all__ = [
    "LAB_FRAMES",
    "LAB_SIZE",
    "MIN_FRAMES",
    "Measurement",
    "RulerResult",
    "SCENE_MEASURES",
    "appearance_features",
    "calibrate",
    "load_calibration",
    "measure",
    "normalise",
    "prepare",
    "scene_fidelity",
    "scene_probabilities",
    "to_lab_frames",
    "write_calibration",
]

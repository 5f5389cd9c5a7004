"""Measures of the mechanics scenes: ``ball_bounce``, ``ball_collision``, ``elastic_bar``.

Legend: F frames, H, W pixel height and width (64 × 64), t the frame index. Each measure
takes prepared frames (:func:`~pila.lab.ruler.vision.prepare`) and returns a
:class:`~pila.lab.ruler.vision.Measurement`; the sub-measures are listed in
:mod:`pila.lab.ruler`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pila.lab.ruler.vision import (
    MIN_FRAMES,
    Measurement,
    foreground,
    hull_area,
    largest_component,
    law_trace,
    line_fit,
    off_backdrop,
    significant_components,
)
from pila.lab.scenes import LAWS


# ------------------------------------------------------------------------ ball_bounce
def measure_ball_bounce(frames: np.ndarray) -> Measurement:
    """Free fall with the world's g between contacts, restitution at bounces, constant size.

    Vision: row-median background, the foreground's largest component per frame gives
    the ball's centroid; contacts are the lowest points (local maxima of the row) within
    a radius (at least 3 px) of the lowest centroid, one per bounce; each flight between
    contacts is fitted with a parabola of the world's g (two free parameters), the impact
    velocities of two neighbouring parabolas give the restitution.
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
        "size_change": float(np.mean(np.abs(area[valid] / typical - 1)))
        if valid.any()
        else float("nan"),
        "missing": float(1 - valid.mean()),
    }
    t = np.arange(num_frames, dtype=float)
    if valid.sum() < 6:
        return Measurement(
            raw, law_trace("ball height (px, down)", t, ys, np.full(num_frames, np.nan))
        )
    tv, yv = t[valid], ys[valid]
    raw["horizontal_residual"] = line_fit(tv, xs[valid])[2]
    # contacts: lowest points (local maxima of y) within a radius of the lowest height
    # reached. The frame nearest a bounce samples the ball up to half a frame's fall above
    # the floor (3 px at the lab's impact speeds) and a codec moves it by another pixel, so
    # a window of half a radius missed bounces; mid-flight, the ball is never that low.
    # Frames held at one height (a codec's, or a freeze) are one run: the run is a contact
    # (at its first frame) only if the ball is higher on both sides of it, so a ball held
    # on its way down and then jumping on is not a bounce.
    low = yv.max()
    reach = max(3.0, math.sqrt(typical / math.pi))
    starts = np.flatnonzero(np.r_[True, np.diff(yv) != 0])  # first frame of each run
    heights = yv[starts]
    contacts = [
        int(starts[r])
        for r in range(1, len(starts) - 1)
        if heights[r] > heights[r - 1] and heights[r] > heights[r + 1] and heights[r] > low - reach
    ]
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
        a, b, rms = line_fit(ts, yseg - 0.5 * g * ts**2)
        fits.append((a, b))
        residuals.append((yseg - (a + b * ts + 0.5 * g * ts**2)) ** 2)
        idx = np.nonzero(valid)[0][seg]
        law_curve[idx] = a + b * ts + 0.5 * g * ts**2
        design_rows.append(ts)
        targets.append(yseg)
        seg_ids.append(np.full(len(seg), s_id))
    if not residuals:
        return Measurement(raw, law_trace("ball height (px, down)", t, ys, law_curve))
    raw["parabola_residual"] = float(np.sqrt(np.mean(np.concatenate(residuals))))
    # one shared free g, a line per segment
    ts_all, y_all, ids = (
        np.concatenate(design_rows),
        np.concatenate(targets),
        np.concatenate(seg_ids),
    )
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
            errors.append(
                1.0
            )  # our choice: a "contact" reached moving upwards is a full unit of error
    raw["restitution_error"] = float(np.mean(errors)) if errors else float("nan")
    return Measurement(raw, law_trace("ball height (px, down)", t, ys, law_curve))


# --------------------------------------------------------------------- ball_collision
def _two_colour_split(frames: np.ndarray, mask: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Label foreground pixels 0/1 by chromaticity (two-means, shading-invariant): (F, H, W)
    int, −1 background.

    The two colours are learnt from the cores of the balls, the half of the foreground
    farthest from the backdrop (``dist``, (F, H, W)): a rim blurred or compressed into
    the cloth takes a colour between the ball's and the cloth's (orange on green reads
    yellow), which would otherwise pull the split between rim and core instead of
    between the balls. The cores take the nearer colour; every other foreground pixel
    takes the label of the nearest core pixel of its frame (a red ball's rim blurred into
    green cloth is nearer orange than red in colour, but it lies around the red core).
    """
    chroma = frames / (frames.sum(axis=-1, keepdims=True) + 1e-3)
    all_pix = chroma[mask][:, :2]
    labels = np.full(mask.shape, -1, dtype=int)
    if len(all_pix) < 8:
        return labels
    core = dist[mask] >= np.median(dist[mask])
    pix = all_pix[core]
    xs = np.nonzero(mask)[2][core]
    left = xs < np.median(xs)
    centres = np.stack(
        [
            np.median(pix[left], axis=0) if left.any() else pix[0],
            np.median(pix[~left], axis=0) if (~left).any() else pix[-1],
        ]
    )
    for _ in range(10):  # our choice: two-means converges in a few iterations on two colours
        assign = np.argmin(((pix[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(2):
            if (assign == j).any():
                centres[j] = pix[assign == j].mean(axis=0)
    labels[mask] = np.argmin(((all_pix[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    cores = np.zeros(mask.shape, bool)
    cores[mask] = core
    for k in range(len(frames)):
        if not cores[k].any():
            continue  # no core in this frame: its pixels keep their colour's label
        # each pixel's nearest core pixel (OpenCV numbers the zero pixels in scan order)
        _, nearest = cv2.distanceTransformWithLabels(
            (~cores[k]).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
        )
        core_labels = np.concatenate([[-1], labels[k][cores[k]]])
        rim = mask[k] & ~cores[k]
        labels[k][rim] = core_labels[nearest[rim]]
    return labels


CLOSE_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
"""Our choice: closing with a 5 px disc joins a striped ball's stripes (gaps of ≤ 2 px)."""


TRACK_WIDTH = 5
"""Our choice: frames of the moving median a ball's track is predicted by (a one- or
two-frame jump is outvoted; a real change of velocity moves the median within a frame)."""


def _ball_track(label: np.ndarray) -> list[np.ndarray]:
    """One ball's pixels per frame from its colour label (F, H, W) bool: the label's pixels
    closed by :data:`CLOSE_KERNEL`, then the component that continues the track.

    The largest component of each frame gives a first track; where a look (blur,
    compression, resampling) hands a patch of the other ball's rim to this label and that
    patch is the frame's largest, the frame's choice becomes the component whose centroid
    is nearest the track's moving median (:data:`TRACK_WIDTH` frames), among components at
    least a fifth of the largest's size. A generated ball that truly jumps moves the
    median with it within a few frames, so teleports are still measured.
    """
    comps, centres = [], []
    for frame in label:
        closed = cv2.morphologyEx(frame.astype(np.uint8), cv2.MORPH_CLOSE, CLOSE_KERNEL)
        count, ids, stats, cents = cv2.connectedComponentsWithStats(closed, connectivity=8)
        sizes = stats[1:, cv2.CC_STAT_AREA]
        keep = [i + 1 for i in range(count - 1) if sizes[i] >= 0.2 * sizes.max()]
        comps.append((ids, keep, cents))
        first = max(keep, key=lambda i: stats[i, cv2.CC_STAT_AREA]) if keep else None
        centres.append(cents[first] if first is not None else (np.nan, np.nan))
    centres = np.array(centres)  # (F, 2) x, y of each frame's largest component
    half = TRACK_WIDTH // 2
    track = []
    for k, (ids, keep, cents) in enumerate(comps):
        if not keep:
            track.append(np.zeros(label.shape[1:], bool))
            continue
        near = centres[max(0, k - half) : k + half + 1]
        near = near[np.isfinite(near[:, 0])]
        predicted = np.median(near, axis=0)
        best = min(keep, key=lambda i: float(((cents[i] - predicted) ** 2).sum()))
        track.append(ids == best)
    return track


def measure_ball_collision(frames: np.ndarray) -> Measurement:
    """Piecewise-constant velocities, momentum (mass ∝ area), restitution, no interpenetration.

    Vision: row-median background, foreground split into the two balls by chromaticity
    (two-means), per ball its pixels followed from frame to frame (:func:`_ball_track`),
    its area (convex hull: a striped ball keeps its outline) and centroid column;
    frames where a ball touches the frame's edge are not used for its centroid. Both
    balls' paths are fitted together, each by two lines that meet at one shared impact
    time (grid search, 0.25 frame); at that time the centres should be one sum of radii
    apart (a ball's radius: half the rows it spans). Foreground beyond the two balls is
    extra matter.
    """
    num_frames, size = frames.shape[0], frames.shape[2]
    e_law = LAWS["ball_collision"]["restitution"]
    dist, mask = foreground(frames)
    labels = _two_colour_split(frames, mask, dist)
    t = np.arange(num_frames, dtype=float)
    xs = np.full((2, num_frames), np.nan)
    area = np.zeros((2, num_frames))
    edge = np.zeros((2, num_frames), bool)
    tracked = np.zeros(mask.shape, bool)  # (F, H, W) pixels of the two balls
    extent = np.zeros(
        (2, num_frames)
    )  # rows each ball spans: its diameter, unaffected by the other ball beside it
    for j in range(2):
        for k, comp in enumerate(_ball_track(labels == j)):
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
    raw = dict.fromkeys(
        (
            "piecewise_residual",
            "momentum_error",
            "restitution_error",
            "speed_gain",
            "contact_gap",
            "interpenetration",
            "size_change",
            "extra_matter",
        ),
        float("nan"),
    )
    raw["missing"] = 1.0
    typical = np.array(
        [
            np.median(area[j][~edge[j] & (area[j] >= 4)])
            if (~edge[j] & (area[j] >= 4)).any()
            else 0.0
            for j in range(2)
        ]
    )
    valid = (area >= 0.3 * typical[:, None]) & ~edge & (typical[:, None] >= 4) & np.isfinite(xs)
    law = np.full((2, num_frames), np.nan)
    trace = {"label": "ball centres (px)", "t": t.tolist(), "measured": [], "law": []}
    if not valid.any(axis=1).all():
        trace.update(measured=np.nan_to_num(xs, nan=np.nan).tolist(), law=law.tolist())
        return Measurement(raw, trace)
    raw["size_change"] = float(
        np.mean([np.mean(np.abs(area[j, valid[j]] / typical[j] - 1)) for j in range(2)])
    )
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
            v = line_fit(t[near], xs[j, near])[1] if len(near) >= 2 else 0.0
            pred = xs[j, near[0] if k < idx.min() else near[-1]] + v * (
                k - (near[0] if k < idx.min() else near[-1])
            )
            if radius[j] + 2 <= pred <= size - 3 - radius[j]:
                missing += 1
    raw["missing"] = missing / (2 * num_frames)
    # extra matter: foreground beyond the two tracked balls
    tracked = np.stack([cv2.dilate(m.astype(np.uint8), CLOSE_KERNEL).astype(bool) for m in tracked])
    fg = mask.reshape(num_frames, -1).sum(1)
    raw["extra_matter"] = float(
        np.mean((mask & ~tracked).reshape(num_frames, -1).sum(1) / np.maximum(fg, 1))
    )
    # each ball: a continuous path of two lines meeting at one shared impact time t_c
    best = None
    for t_c in np.arange(1.5, num_frames - 2.5, 0.25):
        sse, n, coefs = 0.0, 0, []
        for j in range(2):
            m = valid[j]
            before, after = (t <= t_c) & m, (t > t_c) & m
            if before.sum() < 2 or after.sum() < 2:
                break
            design = np.stack(
                [np.ones(m.sum()), np.minimum(t[m] - t_c, 0), np.maximum(t[m] - t_c, 0)], axis=1
            )
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
    raw["momentum_error"] = float(
        abs(p_after - p_before) / max(m_a * abs(u_a) + m_b * abs(u_b), 1e-6)
    )
    closing = u_a - u_b
    e = (w_b - w_a) / closing if abs(closing) > 1e-3 else float("nan")
    raw["restitution_error"] = float(abs(e - e_law)) if np.isfinite(e) else float("nan")
    raw["speed_gain"] = float(max(0.0, e - 1.0)) if np.isfinite(e) else float("nan")
    reach = radius[0] + radius[1]
    raw["contact_gap"] = float(abs((x_b - x_a) - reach) / reach)
    both = valid[0] & valid[1]
    gap = xs[1, both] - xs[0, both]
    raw["interpenetration"] = (
        float(np.clip(reach - gap, 0, None).max() / reach) if both.any() else float("nan")
    )
    for j, (x_c, u, w) in enumerate(coefs):
        law[j] = x_c + u * np.minimum(t - t_c, 0) + w * np.maximum(t - t_c, 0)
    trace.update(measured=xs.tolist(), law=law.tolist())
    return Measurement(raw, trace)


# ----------------------------------------------------------------------- elastic_bar
BAR_COLOUR_SHARE = 0.45
"""The bar's pixels: colour off the backdrop (:func:`~pila.lab.ruler.vision.off_backdrop`)
above this share of the clip's 99.5th percentile (the bar's own colour; the bar covers a few
percent of a frame). Our choice."""
BAR_MAX_LEVEL = 0.12
"""The threshold on a clip with the rendered bar's colour (its share would be about 0.17,
which thins the anti-aliased bar and makes the tip noisier). Our choice."""
BAR_MIN_LEVEL = 0.05
"""The lowest colour distance read as bar (above the backdrop's noise under CRF 35). Our
choice."""


def measure_elastic_bar(frames: np.ndarray) -> Measurement:
    """The tip oscillates at the world's period with the world's (non-negative) damping.

    Vision: the bar is the colour off the backdrop's colour line (:func:`off_backdrop
    <pila.lab.ruler.vision.off_backdrop>`; the wall and backdrop are a grey gradient) above
    :data:`BAR_COLOUR_SHARE` of the bar's own, between :data:`BAR_MIN_LEVEL` and
    :data:`BAR_MAX_LEVEL`, in regions at least a fifth the size of the largest
    (:func:`significant_components`); its free end is the rightmost column it fills in at
    least half the frames; the tip's height is the mean row of bar pixels in the 4 columns
    before it.
    The tip height is fitted with the world's law c + e^{−δt}(a·sin ωt + b·cos ωt) (δ and
    ω from :data:`~pila.lab.scenes.LAWS`, three free parameters), and freely over a grid of
    periods (6–48 frames) and damping rates (−0.08 to 0.08 per frame).
    """
    num_frames = frames.shape[0]
    law = LAWS["elastic_bar"]
    # colour off the backdrop's colour line: a colour cast over the whole frame (a
    # generator's, a white balance) tints the grey backdrop and wall, not only the bar
    excess = off_backdrop(frames)
    # the threshold follows the bar's own colour (a tone curve or codec that halves it keeps
    # the bar), with a floor above the backdrop's noise
    share = BAR_COLOUR_SHARE * float(np.percentile(excess, 99.5))
    level = float(np.clip(share, BAR_MIN_LEVEL, BAR_MAX_LEVEL))
    bar = np.stack([significant_components(m) for m in excess > level])
    area = bar.reshape(num_frames, -1).sum(1).astype(float)
    t = np.arange(num_frames, dtype=float)
    raw = dict.fromkeys(
        ("law_residual", "period_error", "damping_error", "size_change"), float("nan")
    )
    raw["missing"] = 1.0
    filled = bar.any(axis=1).mean(axis=0) >= 0.5  # (W,) columns the bar fills in half the frames
    if not filled.any() or np.median(area) < 10:
        return Measurement(raw, law_trace("tip height (px, down)", t, t * np.nan, t * np.nan))
    typical = float(np.median(area))
    end = int(np.nonzero(filled)[0].max())
    band = bar[:, :, max(0, end - 4) : end]
    yy = np.arange(frames.shape[1], dtype=float)[None, :, None]
    count = band.sum(axis=(1, 2))
    tip = np.where(count > 0, (band * yy).sum(axis=(1, 2)) / np.maximum(count, 1), np.nan)
    present = (count > 0) & (area >= 0.5 * typical)
    raw["missing"] = float(1 - present.mean())
    raw["size_change"] = (
        float(np.mean(np.abs(area[present] / typical - 1))) if present.any() else float("nan")
    )
    if present.sum() < MIN_FRAMES // 2:
        return Measurement(raw, law_trace("tip height (px, down)", t, tip, t * np.nan))
    tv, yv = t[present], tip[present]

    def fit(period: np.ndarray, damping: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least squares of c + e^{−δt}(a sin + b cos) for each (period, damping): rss,
        amplitude, prediction."""
        w = 2 * np.pi / period[:, None]
        env = np.exp(-damping[:, None] * tv[None])
        design = np.stack(
            [np.ones((len(period), len(tv))), env * np.sin(w * tv), env * np.cos(w * tv)], axis=-1
        )  # (P, N, 3)
        gram = design.transpose(0, 2, 1) @ design + 1e-9 * np.eye(3)
        coef = np.linalg.solve(gram, design.transpose(0, 2, 1) @ yv[None, :, None])[
            ..., 0
        ]  # (P, 3)
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
    return Measurement(raw, law_trace("tip height (px, down)", t, tip, law_tip))

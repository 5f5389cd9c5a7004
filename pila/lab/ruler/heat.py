"""Measures of the heat scenes: ``melting_block`` and ``cooling_plate``.

Legend: F frames, H, W pixel height and width (64 × 64), t the frame index.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from pila.lab.ruler.vision import (
    MIN_FRAMES,
    Measurement,
    expectile_line,
    law_trace,
    moving_median,
    positive_steps,
)
from pila.lab.scenes import LAWS, incandescence


# ---------------------------------------------------------------------- melting_block
def melt_law(t: np.ndarray, rate: float | None = None) -> np.ndarray:
    """The world's ice area relative to its start: (1 − r·t)(1 − a·r·t), the melt clipped at
    95 % (r the world's melt rate unless ``rate``)."""
    law = LAWS["melting_block"]
    shrink = np.clip((law["melt_rate"] if rate is None else rate) * t, 0, 0.95)
    return (1 - shrink) * (1 - law["melt_aspect"] * shrink)


MELT_RATES = LAWS["melting_block"]["melt_rate"] * np.exp(np.linspace(-1.6, 1.6, 161))
"""The melt rates :func:`fitted_melt_rate` tries: the world's × e^±1.6 (÷5 … ×5) in steps
of 2 % (our choice)."""


def fitted_melt_rate(t: np.ndarray, area: np.ndarray) -> float:
    """The melt rate whose area curve, scaled by its least-squares start area, is closest to
    ``area`` (grid search over :data:`MELT_RATES`): read from the curve's shape, so a look
    that changes every frame's area by one factor does not move it."""
    best, best_err = float("nan"), np.inf
    for rate in MELT_RATES:
        model = melt_law(t, rate)
        scale = float((area * model).sum() / (model**2).sum())
        err = float(((area - scale * model) ** 2).sum())
        if err < best_err:
            best, best_err = float(rate), err
    return best


MELT_TREND = 5
"""Our choice: frames of the moving median the areas and the puddle's width are smoothed
with before conservation and the puddle's spreading are read (codec noise flips a frame or
two; a law break lasts)."""
WALL_BLUENESS = -0.056
"""The rendered wall's blue − red over the frame's top quarter
(:func:`~pila.lab.scenes.melting_block`'s backdrop gradient), the reference the colour rules
read blueness against."""


FLOOR_GAP = 2
"""Our choice: the block's bottom rows, this many above the plate, are not read; water's
strong blue bleeds into them under a blur or a codec, more as the puddle widens. Their ice
is the block's width (the rows just above) times this many rows: the block stands on the
plate as a rectangle."""
MIN_ICE_CONTRAST = 0.03
"""Our choice: the block's typical blueness above the wall's must be at least this (the
rendered block stands about 0.15 above it, 0.08 under a strong colour cast and tone curve);
below it no block is drawn."""


def plate_top(frames: np.ndarray) -> int:
    """The first row of the warm plate: the largest fall of the still image's green from one
    row to the next in the frame's lower half (the wall's green is about 0.7, the plate's
    0.35, the puddle's 0.45: the block, the puddle and the plate all start there)."""
    green = np.median(frames, axis=0)[..., 1].mean(axis=1)  # (H,)
    half = frames.shape[1] // 2
    return half + 1 + int(np.argmax(green[half:-1] - green[half + 1 :]))


def block_area(blueness: np.ndarray, floor: int) -> np.ndarray | None:
    """The block's area per frame (F,) in pixels, from its blueness summed over a box around
    it, or None when no block stands out (:data:`MIN_ICE_CONTRAST`).

    Above the plate each row's blueness is read against the row's median (the wall: the
    block is under half a row wide; the backdrop's gradient is vertical), the excess summed
    over the box that holds the block at its largest (its columns in the clip's median
    frame, its rows in the first frames', 3 px around; negative excess, noise, counts 0), and
    divided by the block's typical excess. A sum, not a count of pixels past a threshold: a
    blur or a codec's blocks move the block's faint tint between pixels but keep its sum,
    where a threshold would cut more or less of it from frame to frame. The rows next to the
    plate are read as :data:`FLOOR_GAP` says.
    """
    num_frames = blueness.shape[0]
    if floor < FLOOR_GAP + 6:
        return None
    above = blueness[:, :floor]
    excess = np.clip(above - np.median(above, axis=2, keepdims=True), 0, None)

    def extent(image: np.ndarray, axis: int) -> slice:
        marked = (image > 0.5 * np.percentile(image, 99)).any(axis=axis)
        where = np.nonzero(marked)[0]
        if not where.size:
            return slice(0, 0)
        return slice(max(0, where.min() - 3), where.max() + 4)

    cols = extent(np.median(excess, axis=0), axis=0)
    rows = extent(np.median(excess[:3], axis=0), axis=1)
    box = np.zeros(excess.shape[1:], bool)
    box[rows.start :, cols] = True  # down to the plate: the block stands on it
    excess = excess * box
    top = np.percentile(excess, 99.5)
    typical = excess[excess > 0.5 * top]
    contrast = float(np.median(typical)) if typical.size else 0.0
    if contrast < MIN_ICE_CONTRAST:
        return None
    body = excess[:, : floor - FLOOR_GAP].reshape(num_frames, -1).sum(1)
    width = excess[:, floor - FLOOR_GAP - 3 : floor - FLOOR_GAP].sum(axis=2).mean(axis=1)
    return (body + FLOOR_GAP * width) / contrast


def measure_melting_block(frames: np.ndarray) -> Measurement:
    """Ice area never grows, ice + water area is conserved, the puddle spreads, melt at the
    world's rate (the area curve's fitted rate against the world's: ``melt_rate_error``,
    |log ratio|).

    Vision: colour rules on blueness (blue − red, shifted per frame so the wall in the top
    quarter reads :data:`WALL_BLUENESS`). The plate's first row (:func:`plate_top`) parts the
    block (above it) from the puddle (below it). The ice's area is its blueness summed
    (:func:`block_area`); water is strongly blue (> 0.25) below the plate's first row, its
    area the soft coverage between the dry surface and full water, the puddle's width its
    extent in columns. Conservation is checked only in frames where the puddle does not
    reach the frame's edge (the rest of it is out of view); it, the puddle's spreading, the
    ice's growth, the melt residual and steps and the fitted rate are read on the areas and
    width smoothed over :data:`MELT_TREND` frames.
    """
    num_frames, width = frames.shape[0], frames.shape[2]
    blueness = frames[..., 2] - frames[..., 0]
    # read against the wall: each frame's blueness shifted so the top quarter (the wall above
    # the block) reads its rendered value, so a colour cast does not move the thresholds
    wall = np.median(blueness[:, : frames.shape[1] // 4].reshape(num_frames, -1), axis=1)
    blueness = blueness - (wall - WALL_BLUENESS)[:, None, None]
    floor = plate_top(frames)
    above = np.arange(frames.shape[1])[None, :, None] < floor  # (1, H, 1)
    water = (blueness > 0.25) & ~above
    # the block's faint blue (and the wall's) is not water: the coverage below counts only
    # pixels past the block's tint
    tinted = (blueness > 0.02) & (blueness <= 0.25) & (frames.mean(axis=-1) > 0.45)
    ice_area = block_area(blueness, floor)
    # water coverage, soft: blueness between the dry surface (the non-blue pixels' median)
    # and full water
    dry = np.median(blueness[~water & ~tinted]) if (~water & ~tinted).any() else 0.0
    full = np.median(blueness[water]) if water.any() else 0.5
    coverage = np.clip((blueness - dry) / max(full - dry, 1e-3), 0, 1) * ~above
    coverage[coverage < 0.25] = 0  # our choice: faint tints (noise, pale edges) are not water
    water_area = coverage.reshape(num_frames, -1).sum(1)
    cols = water.any(axis=1)  # (F, W)
    has_water = cols.any(axis=1)
    left = np.where(has_water, cols.argmax(axis=1), 0)
    right = np.where(has_water, width - 1 - cols[:, ::-1].argmax(axis=1), 0)
    pud_width = np.where(has_water, right - left + 1, 0).astype(float)
    t = np.arange(num_frames, dtype=float)
    model = melt_law(t)
    raw = dict.fromkeys(
        (
            "ice_growth",
            "conservation",
            "puddle_shrink",
            "melt_residual",
            "melt_step",
            "melt_rate_error",
        ),
        float("nan"),
    )
    if ice_area is None or ice_area.max() < 10:  # our choice: under ten pixels, no block
        return Measurement(raw, law_trace("ice area / start", t, t * np.nan, model))
    a0 = float((ice_area * model).sum() / (model**2).sum())
    smooth = moving_median(ice_area, MELT_TREND)
    raw["ice_growth"] = positive_steps(smooth) / a0
    inside = has_water & (left > 0) & (right < width - 1)
    if inside.sum() >= 3:
        # the ruler does not know the water layer's depth in pixels: one factor κ ∈ [0.5, 2]
        # (our choice) turns water pixels into ice pixels, the one that keeps the sum most
        # constant
        ice_in = moving_median(ice_area, MELT_TREND)[inside]
        water_in = moving_median(water_area, MELT_TREND)[inside]
        var_w = np.var(water_in)
        kappa = (
            float(np.clip(-np.cov(ice_in, water_in, bias=True)[0, 1] / var_w, 0.5, 2.0))
            if var_w > 0
            else 1.0
        )
        total = ice_in + kappa * water_in
        raw["conservation"] = float((total.max() - total.min()) / max(np.median(total), 1.0))
    raw["puddle_shrink"] = positive_steps(-moving_median(pud_width, MELT_TREND))
    raw["melt_residual"] = float(np.sqrt(np.mean((smooth / a0 - model) ** 2)))
    raw["melt_step"] = float(np.abs(np.diff(smooth) / a0 - np.diff(model)).max())
    rate = fitted_melt_rate(t, smooth)
    raw["melt_rate_error"] = abs(math.log(rate / LAWS["melting_block"]["melt_rate"]))
    return Measurement(raw, law_trace("ice area / start", t, ice_area / a0, model))


# --------------------------------------------------------------------- cooling_plate
@lru_cache(maxsize=1)
def _incandescence_table() -> tuple[np.ndarray, np.ndarray]:
    """Temperatures (N,) and the colours (N, 3) the scene gives them (for inverting the glow)."""
    temps = np.linspace(0, 1, 201)
    return temps, incandescence(temps).astype(np.float32)


COLD_PLATE = 0.3
"""The cold plate's grey (:func:`~pila.lab.scenes.incandescence` at T = 0), the first
reference :func:`tone_balanced` restores."""


HOT_GLOW = incandescence(np.float32(1.0)).astype(np.float32)
"""The glow at T = 1 (:func:`~pila.lab.scenes.incandescence`), the colour of the spot's
centre in the first frame, the second reference :func:`tone_balanced` restores."""
SMOOTH_SIGMA = 1.0
"""Our choice: the frames are smoothed by a Gaussian of 1 px (and over 3 frames) before
temperatures are read. Grain and codec blocks average out; the spot (σ ≥ 3.8 px) keeps its
heat (a blur conserves a Gaussian's integral), its variance grows by a constant 1 px² and
its growth rate is unchanged."""


def smoothed(frames: np.ndarray) -> np.ndarray:
    """Frames blurred by :data:`SMOOTH_SIGMA` px and averaged with their neighbours in time
    (the first and last with the one they have)."""
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), SMOOTH_SIGMA) for f in frames])
    padded = np.concatenate([blurred[:1], blurred, blurred[-1:]])
    out = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    out[0], out[-1] = (blurred[0] + blurred[1]) / 2, (blurred[-1] + blurred[-2]) / 2
    return out


def bright_plate(still: np.ndarray) -> np.ndarray | None:
    """The plate (H, W) in a still image (H, W, 3): the brighter class of its luminance
    (Otsu's threshold; the room around the plate is darker), or None when that class is
    under a tenth of the image (our choice: no plate-sized bright region)."""
    grey = still.mean(axis=-1)
    level, _ = cv2.threshold(
        np.round(grey * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )
    plate = grey * 255 > level
    return plate if plate.sum() >= 0.1 * plate.size else None


RED_CLIPPED = 0.98
"""Our choice: a hottest glow whose red reads at least this is clipped (the rendered glow's
red is 1 from T ≈ 0.26 on), so its red says nothing about red's gain."""


def tone_balanced(frames: np.ndarray) -> np.ndarray:
    """Frames mapped per channel so that the cold plate reads its rendered grey in every
    frame and the hottest glow of the clip reads the glow at T = 1.

    A colour cast, a contrast or brightness change, a flicker (a generator's, a codec's)
    are affine in each channel, so two references undo them: the cold plate (the fifth of
    the plate least red in the still image, farthest from the glow; the plate is the
    brighter class of the still image's luminance, Otsu's threshold) per frame, and the
    clip's hottest glow (the median colour of its 4 pixels of highest green + blue, the
    channels that rise last with temperature) once. A gamma curve is corrected at both
    ends and nearly so between them.

    Red is the exception: the glow's red is clipped at 1 from T ≈ 0.26 on, so the hottest
    glow's red (when clipped, :data:`RED_CLIPPED`) reads 1 under any red gain above 1, and
    a cast of red gain 1.1 would be undone by × 1.11 instead of ÷ 1.1, the tails read a
    fifth too hot. Its gain is then read off the scene's grey: the room around the plate
    and the cold plate are both neutral (red = green as rendered), so red's span between
    them against green's is red's gain against green's, and green's comes from the
    hottest glow.
    """
    still = np.median(frames, axis=0)
    plate = bright_plate(still)
    if plate is None:
        return frames
    redness = (still[..., 0] - still[..., 2])[plate]
    coldest = np.zeros_like(plate)
    coldest[plate] = redness <= np.quantile(redness, 0.2)
    cold = np.median(frames[:, coldest], axis=1)  # (F, 3)
    on_plate = frames[:, plate]  # (F, P, 3)
    lifted = on_plate - cold[:, None, :]  # above the cold plate
    heat = lifted[..., 1] + lifted[..., 2]
    top = np.argsort(heat, axis=None)[-4:]
    hot = np.median(lifted.reshape(-1, 3)[top], axis=0)  # (3,)
    gain = np.where(hot > 0.05, (HOT_GLOW - COLD_PLATE) / np.maximum(hot, 1e-6), 1.0)
    hot_red = float(np.median(on_plate.reshape(-1, 3)[top, 0]))
    if hot_red >= RED_CLIPPED and (~plate).any():
        span = np.median(cold - np.median(frames[:, ~plate], axis=1), axis=0)  # (3,) room → plate
        if span[0] > 0.02 and span[1] > 0.02:  # our choice: a room darker than the plate
            gain[0] = gain[1] * span[1] / span[0]
    return np.clip(COLD_PLATE + (frames - cold[:, None, None, :]) * gain, 0.0, 1.0)


def temperature_map(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Temperature (F, H, W) by inverting the plate's incandescence (nearest colour), and the
    plate mask (H, W).

    The frames are first smoothed (:func:`smoothed`) and their tones balanced on the cold
    plate and the hottest glow (:func:`tone_balanced`).

    The plate is the still image's bright region (:func:`bright_plate`), or where no
    such region stands out, where the still image lies within 0.1 of the glow's colour
    curve (our choice: the dark room around it is ≥ 0.3 away); elsewhere the temperature
    is 0.
    """
    temps, colours = _incandescence_table()
    frames = tone_balanced(smoothed(frames))

    def nearest(pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # colours to 8 bits (what a video holds), each distinct colour looked up once
        codes = np.round(pix * 255).astype(np.int32) @ np.array([65536, 256, 1], np.int32)
        uniq, inverse = np.unique(codes, return_inverse=True)
        rgb = (
            np.stack([uniq // 65536, (uniq // 256) % 256, uniq % 256], axis=1).astype(np.float32)
            / 255
        )
        d2 = (rgb**2).sum(1)[:, None] - 2 * rgb @ colours.T + (colours**2).sum(1)[None]  # (U, T)
        idx = np.argmin(d2, axis=1)
        dist = np.sqrt(np.clip(d2[np.arange(len(rgb)), idx], 0, None))
        return idx[inverse.ravel()], dist[inverse.ravel()]

    still = np.median(frames, axis=0)
    plate = bright_plate(still)
    if plate is None:
        _, still_dist = nearest(still.reshape(-1, 3))
        plate = still_dist.reshape(frames.shape[1:3]) < 0.1
    temp = np.zeros(frames.shape[:3])
    # a glow is redder than it is blue (red − blue = 3T at low T); greyer pixels are cold
    # (T < 0.004)
    glowing = plate[None] & (frames[..., 0] - frames[..., 2] > 0.01)
    if glowing.any():
        idx, _ = nearest(frames[glowing])
        temp[glowing] = temps[idx]
    return temp, plate


TAIL_FLOOR = 0.04
"""Our choice: the spot's Gaussian is fitted to temperatures above 0.04 (and above 5 % of
the frame's peak). Below it the glow's red differs from the cold plate's by under 0.11
(28 levels of 8 bits), which strong compression flattens into the plate, and more so as
the spot cools: a tail fitted there would read a spread that slows down."""
SPREAD_EXPECTILE = 0.9
"""Our choice: the spread's growth V(0) + 2D·t is read as the 0.9 expectile line of V(t)
(:func:`~pila.lab.ruler.vision.expectile_line`). A strongly compressed video holds the
faint glow for several frames and then catches up (H.264 at CRF 35 skips the blocks that
change little): those frames lag, never lead, and a least-squares line through them reads
a growth up to half too slow (a spread of its own)."""
TONE_FLOOR = 0.02
"""Our choice: a tone exponent read from the peak's decay below 0.02 (a peak that holds or
rises) is taken as 0.02 when compared with the spread's (|log| ≈ 4: a clear violation)."""


def measure_cooling_plate(frames: np.ndarray) -> Measurement:
    """The peak never rises; the spot spreads at the world's 2D and its peak decays at the
    world's cooling, read so that a tone curve cannot pass for a law.

    Vision: temperatures from the glow's colour (:func:`temperature_map`); per frame a
    Gaussian is fitted to the hot spot (log-temperature against squared distance from the
    spot's centroid, pixels above 5 % of the peak, weighted by temperature), giving its
    peak A(t) and per-axis variance V(t).

    Law: V(t) = σ0² + 2D·t and A(t) = σ0²/V(t) · exp(−c·t). A tone curve left after
    :func:`tone_balanced` reads T^γ for T (γ near 1), which divides the variance by γ and
    multiplies log A by γ. So γ is read twice: from the spread, γ_V = 2D / (dV/dt), and from
    the peak, γ_A, the least-squares factor in log A(t)/A(t0) = −γ_A·(log ρ(t)/ρ(t0) +
    c·(t − t0)) with ρ(t) = V(t)/V(0) from the fitted line (a ratio γ leaves alone). The
    line is V(t)'s upper expectile (:data:`SPREAD_EXPECTILE`: a codec's held frames lag).
    A lawful clip under any tone curve gives γ_V = γ_A; playback at another speed, another
    diffusivity or cooling, or a spot that heats up do not: ``rate_agreement`` is |log
    γ_V/γ_A|. ``variance_residual`` is the RMS of V(t) ahead of that line (a held frame
    lags; a spot that spreads faster than its line, or a second spot, leads), in frames of
    the fitted growth, ``heat_step`` the largest one-step departure of log A from that law
    with γ_A, ``fit_residual`` the median frame's Gaussian log residual / γ_A.
    """
    num_frames, size = frames.shape[0], frames.shape[1]
    law = LAWS["cooling_plate"]
    two_d = 2 * law["diffusivity"] * size**2  # px² per frame
    temp, _ = temperature_map(frames)
    t = np.arange(num_frames, dtype=float)
    flat = temp.reshape(num_frames, -1)
    peak = np.sort(flat, axis=1)[:, -4:].mean(
        axis=1
    )  # our choice: the mean of the 4 hottest pixels resists noise
    raw = dict.fromkeys(
        ("peak_rise", "rate_agreement", "variance_residual", "heat_step", "fit_residual"),
        float("nan"),
    )
    if peak.max() < 0.05:  # our choice: no pixel above 5 % of full glow is no hot spot
        return Measurement(raw, law_trace("spot variance (px²)", t, t * np.nan, t * np.nan))
    raw["peak_rise"] = positive_steps(moving_median(peak)) / max(float(peak[0]), 0.05)
    var, amp, resid = _spot_gaussians(temp, peak)
    ok = np.isfinite(var)
    law_var = np.full(num_frames, np.nan)
    if ok.sum() < MIN_FRAMES // 2:
        return Measurement(raw, law_trace("spot variance (px²)", t, var, law_var))
    a, slope = expectile_line(t[ok], var[ok], SPREAD_EXPECTILE)
    if slope <= 0 or a <= 0:  # a spot that does not spread: no spread to read γ from
        return Measurement(raw, law_trace("spot variance (px²)", t, var, law_var))
    gamma_v = two_d / slope
    t0 = t[ok][0]
    x = np.log((a + slope * t[ok]) / (a + slope * t0)) + law["cooling"] * (t[ok] - t0)
    y = np.log(amp[ok] / amp[ok][0])
    gamma_a = float(-(x * y).sum() / max((x * x).sum(), 1e-12))
    raw["rate_agreement"] = float(abs(math.log(gamma_v / max(gamma_a, TONE_FLOOR))))
    # only a spread ahead of its line: a codec's held frames lag it, a law break need not
    ahead = np.clip(var[ok] - (a + slope * t[ok]), 0, None)
    raw["variance_residual"] = float(np.sqrt(np.mean(ahead**2))) / slope
    step = np.abs(np.diff(y) + max(gamma_a, TONE_FLOOR) * np.diff(x))
    raw["heat_step"] = float(step.max()) if len(step) else float("nan")
    # the median frame's: a codec that blocks a few frames' faint tails does not make the
    # spot other than Gaussian; a second spot or a wrong law lasts
    raw["fit_residual"] = float(np.nanmedian(resid[ok])) / max(gamma_a, TONE_FLOOR)
    # the law's spread in the clip's own tone: V(0)·(1 + 2D·t/σ0²), σ0² = γ_A·V(0)
    law_var[ok] = a + two_d / max(gamma_a, TONE_FLOOR) * t[ok]
    return Measurement(raw, law_trace("spot variance (px²)", t, var, law_var))


def _spot_gaussians(temp: np.ndarray, peak: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per frame the hot spot's fitted Gaussian: variance, amplitude and log residual (NaN
    where the frame has no spot to fit).

    The fit is to the spot's radial profile: the mean temperature in rings of 1 px about
    its centroid (pixels above 5 % of the peak), log-temperature against the ring's mean
    squared radius, weighted by pixels × temperature. The heat kernel is round, so the
    rings keep its law while the blocks of a codec or the grain of a generator, which are
    not, average out within a ring.
    """
    num_frames, size = temp.shape[0], temp.shape[1]
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    var = np.full(num_frames, np.nan)
    amp = np.full(num_frames, np.nan)
    resid = np.full(num_frames, np.nan)
    for k in range(num_frames):
        tk = temp[k]
        if peak[k] < 2 * TAIL_FLOOR:  # our choice: too little of the spot above the floor
            continue
        hot = tk > 0.5 * peak[k]
        cx, cy = (tk * hot * xx).sum() / (tk * hot).sum(), (tk * hot * yy).sum() / (tk * hot).sum()
        use = tk > max(0.05 * peak[k], TAIL_FLOOR)
        if use.sum() < 6:
            continue
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2)[use]
        ring = np.floor(np.sqrt(r2)).astype(int)
        count = np.bincount(ring)
        filled = count > 0
        if filled.sum() < 3:
            continue
        ring_t = np.bincount(ring, tk[use])[filled] / count[filled]
        ring_r2 = np.bincount(ring, r2)[filled] / count[filled]
        logt, wts = np.log(ring_t), count[filled] * ring_t
        design = np.stack([np.ones_like(ring_r2), ring_r2], axis=1) * wts[:, None]
        coef, *_ = np.linalg.lstsq(design, logt * wts, rcond=None)
        if coef[1] >= 0:
            continue
        var[k], amp[k] = -1 / (2 * coef[1]), math.exp(coef[0])
        fitted = coef[0] + coef[1] * ring_r2
        resid[k] = float(np.sqrt(np.average((logt - fitted) ** 2, weights=wts)))
    return var, amp, resid

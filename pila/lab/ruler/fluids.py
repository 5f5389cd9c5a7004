"""Measures of the fluid scenes: ``dye_advection``, ``smoke_puff``, ``ripple_reflection``.

Legend: F frames, H, W pixel height and width (64 × 64), t the frame index, R radii and
A angles of a polar grid, K angular frequencies, S rotation multiples.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pila.lab.ruler.vision import (
    MIN_FRAMES,
    Measurement,
    largest_component,
    law_trace,
    line_fit,
    moving_median,
    polar,
    positive_steps,
)
from pila.lab.scenes import LAWS


# ---------------------------------------------------------------------- dye_advection
def _basin(frames: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """The basin: mask (H, W) of pixels unlike the corners' backdrop, its centre (x, y) and
    radius."""
    still = np.median(frames, axis=0)
    h, w = still.shape[:2]
    c = max(2, h // 12)
    corners = np.concatenate(
        [still[:c, :c], still[:c, -c:], still[-c:, :c], still[-c:, -c:]]
    ).reshape(-1, 3)
    backdrop = np.median(corners, axis=0)
    mask = largest_component(np.linalg.norm(still - backdrop, axis=-1) > 0.25)
    if mask.sum() < 20:
        return mask, w / 2, h / 2, 0.0
    yy, xx = np.nonzero(mask)
    radius = math.sqrt(mask.sum() / math.pi)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(
        bool
    )  # our choice: 2 px off the rim
    return inner, float(xx.mean()), float(yy.mean()), radius


ROTATION_GRID = np.arange(-12.0, 12.0001, 0.05)
"""Multiples s of the world's vortex profile (our choice: ±12 covers any time jump the clip
can hold; each window is resolved to 0.25, the whole clip's s to 0.05, a 5 % error in ω)."""
ROTATION_LAG = 4
"""Our choice: rotation is compared between frames 4 apart. Over one frame the dye moves
about half a pixel, which video codecs round away (they copy nearly unchanged blocks);
over four frames it moves two pixels and survives the encoding."""


DYE_TREND = 5
"""Our choice: frames of the moving median the total dye is smoothed with before its
conservation is read (codec noise wobbles a frame or two; dye that vanishes stays gone)."""


def measure_dye_advection(frames: np.ndarray) -> Measurement:
    """Total dye conserved; the dye rotates at the world's vortex angular speed ω(r).

    Vision: the basin is what differs from the corners' backdrop; the water colour is
    the basin's median colour, the dye colour the 1 % of basin pixels farthest from it;
    the concentration is the projection on water → dye of each pixel less its frame's
    basin median (a flicker cancels); the total, smoothed over :data:`DYE_TREND` frames,
    should stay constant. On a polar grid
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
    empty = law_trace("rotation / world ω", t, t * np.nan, np.ones(num_frames))
    if (
        radius < 8 or basin.sum() < 20
    ):  # our choice: a basin under 8 px has too few rings to measure
        return Measurement(raw, empty)
    pix = frames[:, basin]  # (F, N, 3)
    water = np.median(pix.reshape(-1, 3), axis=0)
    dist = np.linalg.norm(pix - water, axis=-1)
    dye = pix[dist >= np.quantile(dist, 0.99)].mean(axis=0)
    axis = dye - water
    if np.linalg.norm(axis) < 0.1:  # our choice: a dye colour within 0.1 of the water is no dye
        return Measurement(raw, empty)
    # each frame's own water (its basin's median): a flicker over the frame is not dye
    frame_water = np.median(pix, axis=1)[:, None]  # (F, 1, 3)
    conc = np.zeros(frames.shape[:3], np.float32)
    conc[:, basin] = np.clip(((pix - frame_water) @ axis) / (axis @ axis), 0, 1.5)
    total = moving_median(conc.reshape(num_frames, -1).sum(1), DYE_TREND)
    raw["conservation"] = float((total.max() - total.min()) / max(np.median(total), 1e-6))
    radii = np.arange(2.0, radius - 2.0)
    rings = np.clip(polar(conc, cx, cy, radii, 96), 0, None)  # (F, R, A)
    spec = np.fft.rfft(rings, axis=-1)  # (F, R, K)
    k = np.arange(spec.shape[-1])
    weight = (
        radii[:, None] * np.where((k == 0) | (k == 96 // 2), 1.0, 2.0)[None]
    )  # ring area × rfft symmetry
    omega = law["omega"] / (1 + (radii / (law["core"] * radius)) ** 2)  # (R,)
    lag = ROTATION_LAG
    cross = (spec[:-lag] * np.conj(spec[lag:]) * weight[None]).reshape(
        num_frames - lag, -1
    )  # (F − lag, R·K)

    def agreement(grid: np.ndarray) -> np.ndarray:
        """Σ Re(cross · e^{−i·angle}) per window and s, (F − L, S):
        ‖rotated(t) − (t+L)‖² = const − 2 × this."""
        angle = (k[None, None] * grid[:, None, None] * (lag * omega)[None, :, None]).reshape(
            len(grid), -1
        )  # (S, R·K)
        # einsum's own loop: a multithreaded BLAS product this small is slower on a busy machine
        return np.einsum("tn,sn->ts", cross.real, np.cos(angle), optimize=False) + np.einsum(
            "tn,sn->ts", cross.imag, np.sin(angle), optimize=False
        )

    coarse = ROTATION_GRID[::5]  # 0.25 apart, then 0.05 around the best
    per_window = agreement(coarse)
    best = coarse[int(np.argmax(per_window.sum(0)))]
    fine = ROTATION_GRID[np.abs(ROTATION_GRID - best) <= 0.3]
    s_fit = fine[int(np.argmax(agreement(fine).sum(0)))]
    s_step = coarse[np.argmax(per_window, axis=1)]
    raw["rotation_rate_error"] = float(abs(abs(s_fit) - 1))
    raw["rotation_step"] = float(np.abs(s_step - s_fit).max())
    sign = 1.0 if s_fit >= 0 else -1.0
    return Measurement(
        raw,
        law_trace(
            f"rotation over {lag} frames / world ω",
            t[:-lag],
            sign * s_step,
            np.ones(num_frames - lag),
        ),
    )


# ------------------------------------------------------------------------ smoke_puff
def smoke_growth(t: np.ndarray) -> np.ndarray:
    """The world's puff growth shape 1 − exp(−t / growth_time) (radius = r0 + (r1 − r0)·shape)."""
    return 1 - np.exp(-t / LAWS["smoke_puff"]["growth_time"])


SMOKE_SMOOTH = 1.5
"""Our choice: the Gaussian (px) the smoke's luminance is smoothed with before its density is
read (the puff is ≥ 6 px across; grain of σ 0.03 falls below the density threshold)."""


SMOKE_TREND = 9
"""Our choice: the frames of the moving median the puff's height, width and mass are smoothed
with before their trends (rising at the world's rate, never narrowing, never gaining) are
read: grain and codec noise wobble them by a frame or two, and a strongly compressed video
holds the puff for several frames and then catches up (5 frames let the held frames through:
the strongest mix's cell failed on two seeds of nine); a law break lasts longer."""


def measure_smoke_puff(frames: np.ndarray) -> Measurement:
    """The puff rises (at the world's rate) and widens (with the world's growth time); its
    mass decays.

    Vision: the smoke's density is the brightening of the smoothed luminance
    (:data:`SMOKE_SMOOTH`) over the frame's row-median background,
    relative to the room left to white; static structure (the nozzle: density that does
    not change over time) is removed. Mass is the summed density; height and width are the
    centroid row and the standard deviation of the column, weighted by the density of the
    puff's body (above a tenth of the frame's densest). The height, width and mass are
    smoothed over :data:`SMOKE_TREND` frames before their trends and steps are read (all
    but the growth fit).
    """
    num_frames, size = frames.shape[0], frames.shape[1]
    law = LAWS["smoke_puff"]
    # smoothed (σ = SMOKE_SMOOTH px): grain and codec blocks average out, the summed density
    # (mass) and the puff's centroid keep their values
    lum = np.stack([cv2.GaussianBlur(f, (0, 0), SMOKE_SMOOTH) for f in frames.mean(axis=-1)])
    # each frame's own row medians: a global brightness flicker (a generator's, a codec's)
    # shifts the backdrop with the smoke and is not read as smoke appearing or vanishing
    bg = np.median(lum, axis=2)  # (F, H)
    room = np.clip(
        0.95 - np.median(bg, axis=0), 0.1, None
    )  # (H,) the room left to white, of the clip's backdrop
    dens = np.clip(lum - bg[:, :, None] - 0.02, 0, None) / room[None, :, None]
    static = (dens.std(axis=0) < 0.01) & (
        np.median(dens, axis=0) > 0.03
    )  # our choice: an unchanging brightening is not smoke
    dens[:, static] = 0
    mass = dens.reshape(num_frames, -1).sum(1)
    t = np.arange(num_frames, dtype=float)
    raw = dict.fromkeys(
        ("sinking", "rise_residual", "narrowing", "growth_residual", "mass_gain", "mass_step"),
        float("nan"),
    )
    ok = mass > 5.0  # our choice: under five pixels' worth of smoke there is no puff
    if ok.sum() < MIN_FRAMES // 2:
        return Measurement(raw, law_trace("puff height (px, up)", t, t * np.nan, t * np.nan))
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    # the puff's shape from its body: density above a tenth of the frame's densest (our choice), so
    # faint haze or noise far from it does not widen it
    body = np.where(dens > 0.1 * dens.reshape(num_frames, -1).max(1)[:, None, None], dens, 0.0)
    m = np.maximum(body.reshape(num_frames, -1).sum(1), 1e-6)
    cy = (body * yy).reshape(num_frames, -1).sum(1) / m
    cx = (body * xx).reshape(num_frames, -1).sum(1) / m
    sx = np.sqrt(
        np.clip(
            (body * (xx[None] - cx[:, None, None]) ** 2).reshape(num_frames, -1).sum(1) / m, 0, None
        )
    )
    tv = t[ok]
    raw["sinking"] = positive_steps(moving_median(cy[ok], SMOKE_TREND))
    rise = law["rise"] * size
    height = -moving_median(cy[ok], SMOKE_TREND)
    offset = float(np.mean(height - rise * tv))
    raw["rise_residual"] = float(np.sqrt(np.mean((height - offset - rise * tv) ** 2)))
    raw["narrowing"] = positive_steps(-moving_median(sx[ok], SMOKE_TREND))
    shape = smoke_growth(tv)
    design = np.stack([np.ones_like(tv), shape], axis=1)
    coef, *_ = np.linalg.lstsq(design, sx[ok], rcond=None)
    raw["growth_residual"] = float(np.sqrt(np.mean((sx[ok] - design @ coef) ** 2)))
    trend = moving_median(mass, SMOKE_TREND)
    raw["mass_gain"] = positive_steps(trend[ok]) / float(mass[ok][0])
    ratio = trend[1:] / np.clip(trend[:-1], 1e-6, None)
    both = ok[1:] & ok[:-1]
    step = np.abs(np.log(np.clip(ratio, 1e-3, None)) + law["dissipation"])
    step = np.where(both, step, np.abs(np.log(1e-3)))  # a vanished puff is the largest step
    raw["mass_step"] = float(step.max())
    law_height = np.full(num_frames, np.nan)
    law_height[ok] = offset + rise * tv
    return Measurement(
        raw, law_trace("puff height (px, up)", t, np.where(ok, -cy, np.nan), law_height)
    )


# ------------------------------------------------------------------ ripple_reflection
def _circle_fit(xx: np.ndarray, yy: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted algebraic (Kåsa) circle fit: centre (x, y) and radius."""
    design = np.stack([xx, yy, np.ones_like(xx)], axis=1) * w[:, None]
    target = -(xx**2 + yy**2) * w
    (d, e, f), *_ = np.linalg.lstsq(design, target, rcond=None)
    cx, cy = -d / 2, -e / 2
    return float(cx), float(cy), float(math.sqrt(max(cx * cx + cy * cy - f, 0.0)))


RING_REACH = 6.0
"""Our choice: a frame's ring is looked for within 6 px of the clip's track (about half a
wavelength); a brighter patch farther off (a codec's block edge, grain) is not the ring."""


def _energy_along(
    rows: np.ndarray, radii: np.ndarray, ks: np.ndarray, r0: np.ndarray, v: float
) -> tuple[np.ndarray, np.ndarray]:
    """Energy of ``rows`` (K, R: the profile at frames ``ks``) along the lines r = r0 + v·t,
    one per start radius in ``r0`` (N,), linearly interpolated: (N, K) energies and (N, K)
    bool, whether the line is within ``radii`` there (energy 0 where not)."""
    step = float(radii[1] - radii[0])
    r = (r0[:, None] + v * ks[None, :] - radii[0]) / step  # (N, K) in radius steps
    lo = np.clip(np.floor(r).astype(int), 0, len(radii) - 2)
    frac = np.clip(r - lo, 0.0, 1.0)
    k = np.arange(len(ks))[None, :]
    inside = (r >= 0) & (r <= len(radii) - 1)
    energy = np.where(inside, rows[k, lo] * (1 - frac) + rows[k, lo + 1] * frac, 0.0)
    return energy, inside


def _ring_track(
    profile: np.ndarray, radii: np.ndarray, frames: np.ndarray, speed: float
) -> tuple[float, float] | None:
    """The line r = r0 + v·t along which the ring's energy (``profile``, (F, R)) is
    largest, summed over ``frames`` (F,) bool: (r0, v), or None with under 4 frames.

    The search spans speeds from a fifth to four times the world's (our choice: every law
    break and every generated ring the lab has seen is within), in steps of 2 % of it, and
    every starting radius; a ring that moves at another speed is followed at its own.
    """
    ks = np.nonzero(frames)[0]
    if len(ks) < 4:
        return None
    rows = profile[ks]  # (K, R)
    best, best_score = None, -1.0
    for v in speed * np.arange(0.2, 4.0001, 0.02):
        r0 = np.arange(radii[0] - v * ks[-1], radii[-1], 1.0)
        score = _energy_along(rows, radii, ks, r0, v)[0].sum(axis=1)
        top = int(np.argmax(score))
        if score[top] > best_score:
            best, best_score = (float(r0[top]), float(v)), float(score[top])
    return best


def _line_energy(profile: np.ndarray, radii: np.ndarray, frames: np.ndarray, line) -> float:
    """Mean energy of ``profile`` (F, R) along r = r0 + v·t over ``frames``, where the line
    is within ``radii``."""
    ks = np.nonzero(frames)[0]
    energy, inside = _energy_along(profile[ks], radii, ks, np.array([line[0]]), line[1])
    return float(energy[inside].mean()) if inside.any() else 0.0


def measure_ripple_reflection(frames: np.ndarray) -> Measurement:
    """The ring's radius grows linearly at the world's wave speed.

    Vision: the still scene is the per-pixel temporal median (a ring passes each pixel
    for well under half the clip); the ring is the change against it, less each frame's
    median change (a flicker over the whole frame), as energy per pixel less the pixel's median
    energy over time (its noise).
    Each pixel's energy is taken relative to its largest over time, so the bright lamp's
    reflection does not outweigh the dark water. The ring's centre is the median over the
    frames of weighted circle fits to the pixels above half their largest change (one
    ring has one centre: the fits' mean distance from it is ``centre_wander``). Per
    frame, the relative energy on a polar grid about the centre is averaged over the rays
    that see each radius and smoothed along it (σ = 3 px, our choice: about a third of the
    wavelength, so the crests merge into their envelope); the envelope's peak is the
    radius. Frames before 6 (our choice: a ring narrower than its wave packet has a biased
    radius) are not fitted. The envelope's peak is looked for within :data:`RING_REACH` of
    the clip's ring track (:func:`_ring_track`, the line of radius against time carrying the
    most energy), so a codec's block lit up farther off is not read as the ring; a second
    track found with the first one's band masked out, as strong as the first
    (``second_ring``: its mean energy / the first's), is a ring nothing caused.

    Law: radius R0 + c·t with the world's c, R0 the median offset of the read radii.
    Frames where that ring has left what is seen (less than 8 px inside) are not read
    (what shows there is a codec's block or the lamp, not the ring), and
    ``radius_residual`` is the RMS of the departures' 3-frame moving median (a frame read a
    few px off is not a trend; a ring at another speed drifts away from the law for good).
    """
    num_frames, size = frames.shape[0], frames.shape[1]
    speed = LAWS["ripple_reflection"]["wave_speed"] * size
    still = np.median(frames, axis=0)
    change = frames - still[None]
    # less each frame's median change per channel: a brightness flicker or a colour drift over
    # the whole frame is not a ring (the ring covers well under half of any frame)
    change = change - np.median(change.reshape(num_frames, -1, 3), axis=1)[:, None, None]
    energy = (change**2).sum(-1)  # (F, H, W)
    # less each pixel's median energy over time: the ring passes a pixel for well under half
    # the clip, so that median is the pixel's noise (grain, codec blocks), not the ring
    energy = np.clip(energy - np.median(energy, axis=0)[None], 0, None)
    total = energy.reshape(num_frames, -1).sum(1)
    t = np.arange(num_frames, dtype=float)
    raw = dict.fromkeys(("radius_residual", "speed_error", "centre_wander"), float("nan"))
    raw["missing"] = 1.0
    raw["second_ring"] = float("nan")
    empty = law_trace("ring radius (px)", t, t * np.nan, t * np.nan)
    if total.max() < 1e-3:  # our choice: nothing changes at all
        return Measurement(raw, empty)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    visible = total > 0.05 * total.max()  # our choice: 5 % of the strongest frame's change
    # each pixel's change relative to its own largest: the bright lamp does not outweigh the
    # dark water
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
    profile = (
        np.where(inside[None], rays, 0).sum(axis=2) / np.maximum(seen, 1)[None]
    )  # (F, R): mean energy at each radius
    kernel = np.exp(-0.5 * (np.arange(-9, 10) / 3.0) ** 2)
    smooth = np.stack([np.convolve(p, kernel / kernel.sum(), mode="same") for p in profile])
    usable = (
        seen >= 6
    )  # our choice: a radius seen by fewer than 6 of 72 rays is mostly out of the frame
    limit = radii[usable].max() if usable.any() else 0.0
    smooth = np.where(usable[None], smooth, 0.0)
    tracked = visible & (t >= 3)
    track = _ring_track(smooth, radii, tracked, speed)
    radius = np.full(num_frames, np.nan)
    for k in np.nonzero(visible)[0]:
        prof = smooth[k]
        if track is not None:  # the envelope's peak within the track's reach of its line
            near = np.abs(radii - (track[0] + track[1] * t[k])) <= RING_REACH
            prof = np.where(near, prof, 0.0)
        peak = int(np.argmax(prof))
        if (
            prof[peak] > 0 and radii[peak] + 8 <= limit
        ):  # our choice: the envelope's peak must be 8 px inside what is seen
            lo, hi = max(0, peak - 2), min(len(radii), peak + 3)
            radius[k] = float((radii[lo:hi] * prof[lo:hi]).sum() / max(prof[lo:hi].sum(), 1e-12))
    fit = np.isfinite(radius) & (t >= 3)
    law_r = np.full(num_frames, np.nan)
    if fit.sum() >= 4:
        offset = float(np.median(radius[fit] - speed * t[fit]))
        # where the law's ring has left what is seen, what a frame shows is not the ring (a
        # codec's block, the lamp's reflection): only frames where it is in view are read
        in_view = fit & (offset + speed * t + 8 <= limit)
        if in_view.sum() >= 4:
            fit = in_view
            offset = float(np.median(radius[fit] - speed * t[fit]))
        # a frame's ring read a few px off (a codec's block on the crest) is not a trend:
        # the departures from the law are taken on their 3-frame moving median
        departure = moving_median(radius[fit] - offset - speed * t[fit])
        raw["radius_residual"] = float(np.sqrt(np.mean(departure**2)))
        raw["speed_error"] = float(abs(line_fit(t[fit], radius[fit])[1] / speed - 1))
        law_r = offset + speed * t
        # where the law's ring is inside the frame along some ray, it should show
        should = (law_r > 4) & (law_r + 8 <= limit)
        raw["missing"] = float((should & ~np.isfinite(radius)).sum() / max(should.sum(), 1))
    else:
        raw["missing"] = float(1 - np.isfinite(radius).mean())
    if track is not None:  # a second coherent ring the first did not cause
        rest = smooth.copy()
        band = np.abs(radii[None] - (track[0] + track[1] * t[:, None])) <= 2 * RING_REACH
        rest[band] = 0.0
        other = _ring_track(rest, radii, tracked, speed)
        first = _line_energy(smooth, radii, tracked, track)
        raw["second_ring"] = (
            _line_energy(rest, radii, tracked, other) / max(first, 1e-12) if other else 0.0
        )
    return Measurement(raw, law_trace("ring radius (px)", t, radius, law_r))

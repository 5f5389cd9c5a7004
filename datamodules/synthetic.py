"""Synthetic physics clips: the embedded default dataset (no download).

Legend: F pixel frames, H_px, W_px pixel height and width; x is the column (right),
y the row (down); vector channel 0 is x.

One procedural scene per category, each with known motion:

==================  ============================================  ==============================
scene               what happens                                  labels
==================  ============================================  ==============================
ball_bounce         a ball falls under gravity and bounces        rigid_body, collision
elastic_bar         a clamped bar oscillates (cantilever mode)    elastic
dye_advection       dye carried by a swirling vortex flow         fluid
smoke_puff          a smoke puff expands and rises                compressible_flow
melting_block       an ice block melts into a spreading puddle    fluid, phase_change, thermal
ball_collision      two balls collide head-on and rebound         rigid_body, collision
cooling_plate       a hot spot on a plate spreads and cools       thermal, optical
ripple_reflection   ripples distort a lamp's reflection           fluid, optical
==================  ============================================  ==============================

Every scene is a pure function of a ``numpy`` generator (so of the seed) and returns
the frames, the ground-truth motion, the prompt and WISA-style annotations.

Ground-truth motion (``displacement``, (F − 1, 2, H_px, W_px) float32) follows the
flow-target convention of :mod:`pila.datamodules.flow_targets`: entry k − 1 is the
displacement in pixels of the material at each pixel of frame k − 1 between frames
k − 1 and k (zero where nothing moves). It is exact for the moving bodies (the
trajectories are closed-form; collisions are solved event by event). For the ripple it
is the outward motion of the wave pattern (its phase speed), and the cooling plate does
not move at all.

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
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from safetensors.numpy import save_file

from pila.io import atomic_path, write_json_atomic, write_video

from .wisa import WISA80KDataModule

log = logging.getLogger(__name__)

ANNOTATION_NAME = "annotations.json"
STAMP_NAME = "synthetic.json"
VIDEO_FOLDER = "videos"
MOTION_SUFFIX = ".motion.safetensors"


@dataclass
class SceneClip:
    """One rendered scene.

    Attributes:
        frames: (F, H_px, W_px, 3) float32 in [0, 1].
        displacement: (F − 1, 2, H_px, W_px) float32, pixels per frame (module docstring).
        prompt: the caption.
        labels: PILA categories.
        wisa_label: the WISA phenomenon the clip would carry.
        answers: WISA-style ``q0`` (dynamics), ``q1`` (thermodynamics), ``q2`` (optics).
        phys_law: one sentence on the physics.
        params: the scene's drawn parameters.
    """

    frames: np.ndarray
    displacement: np.ndarray
    prompt: str
    labels: list[str]
    wisa_label: str
    answers: dict[str, str]
    phys_law: str
    params: dict[str, float] = field(default_factory=dict)


NO_DYNAMICS = "No obvious dynamic phenomenon"
NO_THERMO = "No obvious thermodynamic phenomenon"
NO_OPTICS = "No obvious optical phenomenon"


# ---------------------------------------------------------------- drawing helpers
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (H_px, W_px) float32."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy, xx


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (positive inside), one-pixel ramp."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _background(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, top: tuple, bottom: tuple) -> np.ndarray:
    """A static vertical gradient with faint static texture, (H_px, W_px, 3)."""
    h = yy.shape[0]
    t = (yy / max(h - 1, 1))[..., None]
    base = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    phase = rng.uniform(0, 2 * np.pi, size=2)
    grain = 0.03 * np.sin(xx / 3.1 + phase[0]) * np.sin(yy / 2.7 + phase[1])
    return np.clip(base + grain[..., None], 0, 1).astype(np.float32)


def _composite(under: np.ndarray, over: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return under * (1 - a) + over * a


def _textured_ball(yy, xx, cx, cy, radius, color, stripe_angle, stripe_period) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (H_px, W_px) and colour (H_px, W_px, 3) of a striped ball centred at (cx, cy)."""
    dx, dy = xx - cx, yy - cy
    alpha = _soft(radius - np.sqrt(dx * dx + dy * dy))
    along = dx * math.cos(stripe_angle) + dy * math.sin(stripe_angle)
    shade = 0.75 + 0.25 * np.sin(2 * np.pi * along / stripe_period)
    light = 1.0 - 0.25 * np.clip((dx + dy) / (2 * radius), -1, 1)  # light from the top left
    rgb = np.asarray(color, np.float32) * (shade * light)[..., None]
    return alpha, np.clip(rgb, 0, 1)


COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.12),
    "orange": (0.95, 0.55, 0.1),
    "yellow": (0.95, 0.85, 0.2),
    "green": (0.2, 0.7, 0.25),
    "blue": (0.2, 0.35, 0.9),
    "purple": (0.6, 0.25, 0.75),
}


def _a(word: str) -> str:
    """``word`` with its indefinite article."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _pick_color(rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> tuple[str, tuple[float, float, float]]:
    names = [n for n in COLORS if n not in exclude]
    name = names[int(rng.integers(len(names)))]
    return name, COLORS[name]


# --------------------------------------------------------------------- kinematics
def bounce_heights(
    y0: float, vy0: float, gravity: float, floor: float, restitution: float, times: np.ndarray, rest_speed: float = 1e-3
) -> np.ndarray:
    """Height y(t) of a point under gravity (y down) bouncing on ``y = floor``, exactly.

    Between impacts the path is a parabola; each impact time solves its quadratic in
    closed form and flips the vertical velocity, scaled by ``restitution``. Once a
    rebound is slower than ``rest_speed`` the point rests on the floor.

    Args:
        y0: start height (≤ floor).
        vy0: start vertical velocity (positive is downwards).
        gravity: acceleration, pixels per frame².
        floor: the floor's y.
        restitution: speed kept at each impact, in (0, 1].
        times: increasing frame times.
    """
    if np.any(np.diff(times) < 0):
        raise ValueError("times must be increasing")
    out = np.empty(len(times), dtype=np.float64)
    t0, y, v, resting = 0.0, float(y0), float(vy0), False
    for i, t in enumerate(times):
        while not resting:
            s_hit = (-v + math.sqrt(v * v + 2 * gravity * max(floor - y, 0.0))) / gravity
            if t0 + s_hit > t:
                break
            v_hit = v + gravity * s_hit
            t0, y, v = t0 + s_hit, floor, -restitution * v_hit
            resting = abs(v) < rest_speed
        if resting:
            out[i] = floor
        else:
            s = t - t0
            out[i] = min(floor, y + v * s + 0.5 * gravity * s * s)
    return out


def collide_1d(x_a: float, u_a: float, m_a: float, x_b: float, u_b: float, m_b: float, gap: float, restitution: float, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of two bodies on a line that meet when ``x_b − x_a = gap`` (one impact).

    Momentum is conserved; the relative velocity reverses scaled by ``restitution``.

    Returns:
        (x_a(t), x_b(t)) for each time.
    """
    closing = u_a - u_b
    t_hit = (x_b - x_a - gap) / closing if closing > 0 else math.inf
    total = m_a + m_b
    w_a = (m_a * u_a + m_b * u_b - m_b * restitution * (u_a - u_b)) / total
    w_b = (m_a * u_a + m_b * u_b + m_a * restitution * (u_a - u_b)) / total
    before = times <= t_hit
    after_t = np.where(before, 0.0, times - t_hit)
    hit_a, hit_b = x_a + u_a * t_hit, x_b + u_b * t_hit
    xa = np.where(before, x_a + u_a * times, hit_a + w_a * after_t)
    xb = np.where(before, x_b + u_b * times, hit_b + w_b * after_t)
    return xa, xb


# ------------------------------------------------------------------------ scenes
def _rigid_displacement(alphas: list[np.ndarray], centres: np.ndarray) -> np.ndarray:
    """Displacement of rigidly translating bodies: (F − 1, 2, H_px, W_px).

    Args:
        alphas: per body, (F, H_px, W_px) coverage.
        centres: (bodies, F, 2) centre positions (x, y).
    """
    num_frames, h, w = alphas[0].shape
    out = np.zeros((num_frames - 1, 2, h, w), np.float32)
    for body, alpha in enumerate(alphas):
        step = centres[body, 1:] - centres[body, :-1]  # (F − 1, 2)
        inside = alpha[:-1] > 0.5  # (F − 1, H_px, W_px)
        out[:, 0][inside] = np.broadcast_to(step[:, 0, None, None], inside.shape)[inside]
        out[:, 1][inside] = np.broadcast_to(step[:, 1, None, None], inside.shape)[inside]
    return out


def ball_bounce(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """A striped ball dropped from rest-ish falls under gravity and bounces on the floor."""
    yy, xx = _grid(height, width)
    size = min(height, width)
    radius = size * rng.uniform(0.08, 0.11)
    floor = height * 0.86 - radius
    y0 = height * rng.uniform(0.12, 0.3) + radius * 0.5
    # gravity chosen so the first impact lands in the first half of the clip
    fall_frames = rng.uniform(0.25, 0.45) * (num_frames - 1)
    gravity = 2 * (floor - y0) / fall_frames**2
    vx = rng.uniform(-1, 1) * 0.2 * width / num_frames
    x0 = width / 2 - vx * (num_frames - 1) / 2 + rng.uniform(-0.1, 0.1) * width
    restitution = rng.uniform(0.6, 0.85)
    times = np.arange(num_frames, dtype=np.float64)
    ys = bounce_heights(y0, 0.0, gravity, floor, restitution, times)
    xs = x0 + vx * times
    color_name, color = _pick_color(rng)
    angle, period = rng.uniform(0, np.pi), radius * rng.uniform(0.6, 0.9)
    bg = _background(yy, xx, rng, (0.75, 0.8, 0.85), (0.55, 0.5, 0.45))
    bg[yy >= height * 0.86] *= 0.6  # the floor
    frames, alphas = [], []
    for k in range(num_frames):
        alpha, rgb = _textured_ball(yy, xx, xs[k], ys[k], radius, color, angle, period)
        frames.append(_composite(bg, rgb, alpha))
        alphas.append(alpha)
    centres = np.stack([xs, ys], axis=-1)[None]  # (1, F, 2)
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=_rigid_displacement([np.stack(alphas)], centres),
        prompt=f"{_a(color_name).capitalize()} ball falls under gravity and bounces on a hard floor, each bounce lower than the last.",
        labels=["rigid_body", "collision"],
        wisa_label="rigid body motion",
        answers={"q0": "rigid body motion, collision", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law="Free fall under constant gravity; each impact reverses the vertical velocity, reduced by the coefficient of restitution.",
        params={"gravity_px_per_frame2": gravity, "restitution": restitution, "radius_px": radius},
    )


def elastic_bar(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """A bar clamped at its left end vibrating in its first cantilever mode."""
    yy, xx = _grid(height, width)
    clamp = width * 0.12
    length = width * rng.uniform(0.7, 0.8)
    thickness = height * rng.uniform(0.08, 0.12)
    centre_y = height * rng.uniform(0.45, 0.55)
    amplitude = height * rng.uniform(0.12, 0.2)
    period = rng.uniform(8, 14)  # frames
    phase = rng.uniform(0, 2 * np.pi)
    decay = rng.uniform(0.0, 0.03)  # per frame
    xi = np.clip((xx - clamp) / length, 0, 1)
    shape = xi * xi * (3 - xi) / 2  # static cantilever deflection, 1 at the tip

    def deflection(t: float) -> np.ndarray:
        return amplitude * math.exp(-decay * t) * math.sin(2 * np.pi * t / period + phase) * shape

    color_name, color = _pick_color(rng)
    bg = _background(yy, xx, rng, (0.85, 0.85, 0.8), (0.65, 0.65, 0.6))
    wall = _soft(clamp - xx)
    frames, alphas, deflections = [], [], []
    for k in range(num_frames):
        w = deflection(k)
        across = yy - centre_y - w  # distance from the bar's mid-line
        alpha = _soft(thickness / 2 - np.abs(across)) * _soft(xx - clamp) * _soft(clamp + length - xx)
        stripes = 0.8 + 0.2 * np.cos(2 * np.pi * across / thickness) * np.cos(2 * np.pi * xx / 7.0)
        rgb = np.asarray(color, np.float32) * stripes[..., None]
        frame = _composite(bg, rgb, alpha)
        frame = _composite(frame, np.full_like(frame, 0.2), wall)
        frames.append(frame)
        alphas.append(alpha)
        deflections.append(w)
    displacement = np.zeros((num_frames - 1, 2, height, width), np.float32)
    for k in range(1, num_frames):
        inside = alphas[k - 1] > 0.5
        displacement[k - 1, 1][inside] = (deflections[k] - deflections[k - 1])[inside]
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=displacement,
        prompt=f"A springy {color_name} ruler clamped at one end oscillates up and down after being plucked.",
        labels=["elastic"],
        wisa_label="elastic motion",
        answers={"q0": "elastic motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law="A clamped elastic beam vibrates in its first bending mode; the restoring force grows with the deflection.",
        params={"period_frames": period, "amplitude_px": amplitude, "decay_per_frame": decay},
    )


def dye_advection(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """Blobs of dye in a round basin carried by a steady vortex (angular speed falls with radius)."""
    yy, xx = _grid(height, width)
    cx, cy = width / 2, height / 2
    basin = 0.46 * min(height, width)
    omega0 = rng.choice([-1, 1]) * rng.uniform(0.06, 0.1)  # rad per frame at the centre
    core = basin * rng.uniform(0.35, 0.55)
    dx, dy = xx - cx, yy - cy
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    omega = omega0 / (1 + (r / core) ** 2)  # (H_px, W_px)
    blobs = []
    for _ in range(int(rng.integers(2, 4))):
        rad = basin * rng.uniform(0.2, 0.75)
        ang = rng.uniform(0, 2 * np.pi)
        blobs.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang), basin * rng.uniform(0.12, 0.2)))
    color_name, color = _pick_color(rng, exclude=("blue",))
    water = np.asarray((0.1, 0.3, 0.55), np.float32)
    bg = _background(yy, xx, rng, (0.8, 0.78, 0.72), (0.7, 0.68, 0.62))
    inside = _soft(basin - r)
    frames = []
    for k in range(num_frames):
        # material now at (r, θ) started at (r, θ − ω(r)·t)
        th0 = theta - omega * k
        x0, y0 = cx + r * np.cos(th0), cy + r * np.sin(th0)
        conc = np.zeros_like(r)
        for bx, by, bs in blobs:
            conc = np.maximum(conc, np.exp(-((x0 - bx) ** 2 + (y0 - by) ** 2) / (2 * bs * bs)))
        liquid = water[None, None] * (1 - conc[..., None]) + np.asarray(color, np.float32) * conc[..., None]
        frames.append(_composite(bg, liquid, inside))
    step_x = cx + r * np.cos(theta + omega) - xx
    step_y = cy + r * np.sin(theta + omega) - yy
    moving = inside > 0.5
    one = np.stack([np.where(moving, step_x, 0), np.where(moving, step_y, 0)]).astype(np.float32)
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=np.broadcast_to(one, (num_frames - 1, *one.shape)).copy(),
        prompt=f"Drops of {color_name} dye swirl in a round basin of water, carried into spirals by the flowing current.",
        labels=["fluid"],
        wisa_label="liquid motion",
        answers={"q0": "liquid motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law="A passive dye is advected by a steady vortex whose angular speed falls off with radius, shearing it into spirals.",
        params={"omega0_rad_per_frame": float(omega0), "core_px": core},
    )


def smoke_puff(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """A puff of smoke expanding radially (thinning to conserve mass) while it rises."""
    yy, xx = _grid(height, width)
    size = min(height, width)
    r_start, r_end = size * rng.uniform(0.06, 0.1), size * rng.uniform(0.3, 0.4)
    tau = (num_frames - 1) * rng.uniform(0.25, 0.45)
    rise = rng.uniform(0.1, 0.25) * height / num_frames  # px per frame
    cx0 = width * rng.uniform(0.4, 0.6)
    cy0 = height * rng.uniform(0.55, 0.65)
    seeds = rng.uniform(0, 2 * np.pi, size=3)
    times = np.arange(num_frames, dtype=np.float64)
    radius = r_start + (r_end - r_start) * (1 - np.exp(-times / tau))
    centre_y = cy0 - rise * times
    bg = _background(yy, xx, rng, (0.15, 0.17, 0.22), (0.25, 0.25, 0.28))
    bg = _composite(bg, np.full_like(bg, 0.35), _soft(3.0 - np.abs(xx - cx0)) * (yy > cy0))  # the nozzle
    frames, masks = [], []
    for k in range(num_frames):
        u, v = (xx - cx0) / radius[k], (yy - centre_y[k]) / radius[k]  # material coordinates
        s2 = u * u + v * v
        profile = np.clip(1 - s2, 0, 1) ** 2
        texture = 0.75 + 0.25 * np.sin(5 * u + seeds[0]) * np.sin(4 * v + seeds[1]) + 0.1 * np.sin(7 * (u + v) + seeds[2])
        alpha = np.clip(1.6 * (r_start / radius[k]) ** 0.7 * profile * texture, 0, 0.95)  # thins as it spreads
        frames.append(_composite(bg, np.full_like(bg, 0.85), alpha))
        masks.append(s2 < 1)
    displacement = np.zeros((num_frames - 1, 2, height, width), np.float32)
    for k in range(1, num_frames):
        scale = radius[k] / radius[k - 1] - 1
        m = masks[k - 1]
        displacement[k - 1, 0][m] = ((xx - cx0) * scale)[m]
        displacement[k - 1, 1][m] = ((yy - centre_y[k - 1]) * scale + (centre_y[k] - centre_y[k - 1]))[m]
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=displacement,
        prompt="A puff of grey smoke bursts from a nozzle, expanding outward and thinning as it rises.",
        labels=["compressible_flow"],
        wisa_label="gas motion",
        answers={"q0": "gas motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law="An expanding gas cloud conserves mass, so its density falls as its radius grows while buoyancy lifts it.",
        params={"r_start_px": r_start, "r_end_px": r_end, "tau_frames": tau, "rise_px_per_frame": rise},
    )


def melting_block(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """An ice block shrinking on a warm plate while its meltwater spreads into a puddle."""
    yy, xx = _grid(height, width)
    floor = height * 0.78
    cx = width * rng.uniform(0.42, 0.58)
    h0, w0 = height * rng.uniform(0.35, 0.45), width * rng.uniform(0.28, 0.36)
    melt = rng.uniform(0.45, 0.65)  # fraction of the height lost over the clip
    spread = rng.uniform(0.5, 0.9) * width / num_frames  # puddle edge speed, px per frame
    pud_h = height * 0.05
    times = np.arange(num_frames, dtype=np.float64)
    frac = times / max(num_frames - 1, 1)
    block_h = h0 * (1 - melt * frac)
    block_w = w0 * (1 - 0.35 * melt * frac)
    pud_a = 0.5 * w0 * 0.9 + spread * times  # puddle half-width
    bg = _background(yy, xx, rng, (0.8, 0.78, 0.75), (0.75, 0.7, 0.65))
    bg[yy >= floor] = np.asarray((0.7, 0.35, 0.25), np.float32)  # the warm plate
    frames, blocks, puddles = [], [], []
    for k in range(num_frames):
        pu = (xx - cx) / pud_a[k]
        puddle = _soft(np.minimum(pud_a[k] - np.abs(xx - cx), pud_h - np.abs(yy - floor))) * (yy >= floor - pud_h)
        water = np.asarray((0.25, 0.45, 0.8), np.float32) * (0.85 + 0.15 * np.cos(9 * pu))[..., None]
        frame = _composite(bg, water, puddle)
        u, v = (xx - cx) / block_w[k], (floor - yy) / block_h[k]
        block = _soft(np.minimum(block_w[k] / 2 - np.abs(xx - cx), np.minimum(floor - yy, yy - (floor - block_h[k]))))
        ice = np.asarray((0.85, 0.93, 0.98), np.float32) * (0.85 + 0.15 * np.sin(11 * u + 7 * v))[..., None]
        frames.append(_composite(frame, ice, block))
        blocks.append(block > 0.5)
        puddles.append((puddle > 0.5) & ~(block > 0.5))
    displacement = np.zeros((num_frames - 1, 2, height, width), np.float32)
    for k in range(1, num_frames):
        b, p = blocks[k - 1], puddles[k - 1]
        displacement[k - 1, 0][b] = ((xx - cx) * (block_w[k] / block_w[k - 1] - 1))[b]
        displacement[k - 1, 1][b] = ((yy - floor) * (block_h[k] / block_h[k - 1] - 1))[b]
        displacement[k - 1, 0][p] = ((xx - cx) * (pud_a[k] / pud_a[k - 1] - 1))[p]
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=displacement,
        prompt="A block of ice melts on a warm plate, shrinking while its meltwater flows outward into a spreading puddle.",
        labels=["fluid", "phase_change", "thermal"],
        wisa_label="melting",
        answers={"q0": "liquid motion", "q1": "melting", "q2": NO_OPTICS},
        phys_law="Heat from the plate melts the ice at its melting point; the latent heat sets the melting rate and the water spreads.",
        params={"melt_fraction": melt, "spread_px_per_frame": spread},
    )


def ball_collision(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """Two balls roll towards each other, collide head-on and rebound (momentum conserved)."""
    yy, xx = _grid(height, width)
    size = min(height, width)
    r_a, r_b = size * rng.uniform(0.08, 0.11), size * rng.uniform(0.08, 0.11)
    m_a, m_b = r_a**2, r_b**2  # equal density discs
    y = height * rng.uniform(0.45, 0.6)
    t_hit = (num_frames - 1) * rng.uniform(0.4, 0.55)
    u_a = rng.uniform(0.5, 0.8) * width / num_frames
    u_b = -rng.uniform(0.5, 0.8) * width / num_frames
    x_hit = width * rng.uniform(0.45, 0.55)
    x_a0 = x_hit - r_a - u_a * t_hit
    x_b0 = x_hit + r_b - u_b * t_hit
    restitution = rng.uniform(0.85, 1.0)
    times = np.arange(num_frames, dtype=np.float64)
    xa, xb = collide_1d(x_a0, u_a, m_a, x_b0, u_b, m_b, r_a + r_b, restitution, times)
    (name_a, col_a), angle = _pick_color(rng), rng.uniform(0, np.pi)
    name_b, col_b = _pick_color(rng, exclude=(name_a,))
    bg = _background(yy, xx, rng, (0.15, 0.45, 0.25), (0.1, 0.38, 0.2))  # baize
    frames, alphas_a, alphas_b = [], [], []
    for k in range(num_frames):
        a_a, rgb_a = _textured_ball(yy, xx, xa[k], y, r_a, col_a, angle, r_a * 0.7)
        a_b, rgb_b = _textured_ball(yy, xx, xb[k], y, r_b, col_b, angle + 1.0, r_b * 0.7)
        frames.append(_composite(_composite(bg, rgb_a, a_a), rgb_b, a_b))
        alphas_a.append(a_a)
        alphas_b.append(a_b)
    centres = np.stack([np.stack([xa, np.full_like(xa, y)], -1), np.stack([xb, np.full_like(xb, y)], -1)])
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=_rigid_displacement([np.stack(alphas_a), np.stack(alphas_b)], centres),
        prompt=f"{_a(name_a).capitalize()} billiard ball and {_a(name_b)} one roll toward each other, collide head-on and rebound apart.",
        labels=["rigid_body", "collision"],
        wisa_label="collision",
        answers={"q0": "collision, rigid body motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law="In a head-on collision momentum is conserved and the relative velocity reverses, scaled by the coefficient of restitution.",
        params={"restitution": restitution, "mass_ratio": m_a / m_b, "t_hit_frames": t_hit},
    )


def _incandescence(temperature: np.ndarray) -> np.ndarray:
    """Colour of a plate at normalised temperature in [0, 1]: dull grey → red → orange → yellow."""
    t = np.clip(temperature, 0, 1)[..., None]
    glow = np.concatenate([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1) * 0.6], axis=-1)
    return np.clip(0.3 * (1 - t) + glow, 0, 1)


def cooling_plate(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """A hot spot on a metal plate spreading by conduction (heat kernel) and cooling; nothing moves."""
    yy, xx = _grid(height, width)
    left, right = width * 0.12, width * 0.88
    top, bottom = height * 0.2, height * 0.8
    hx, hy = rng.uniform(left + 0.25 * (right - left), right - 0.25 * (right - left)), rng.uniform(top + 0.3 * (bottom - top), bottom - 0.3 * (bottom - top))
    sigma0 = min(height, width) * rng.uniform(0.06, 0.1)
    diffusivity = rng.uniform(0.6, 1.2) * sigma0**2 / num_frames  # px² per frame
    cooling = rng.uniform(0.5, 1.5) / num_frames  # per frame
    plate = _soft(np.minimum(np.minimum(xx - left, right - xx), np.minimum(yy - top, bottom - yy)))
    bg = _background(yy, xx, rng, (0.12, 0.12, 0.14), (0.08, 0.08, 0.1))
    r2 = (xx - hx) ** 2 + (yy - hy) ** 2
    frames = []
    for k in range(num_frames):
        var = sigma0**2 + 2 * diffusivity * k
        temperature = (sigma0**2 / var) * np.exp(-r2 / (2 * var)) * math.exp(-cooling * k)
        frames.append(_composite(bg, _incandescence(temperature), plate))
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=np.zeros((num_frames - 1, 2, height, width), np.float32),
        prompt="A metal plate glows orange-hot at one spot, the glow spreading and fading as the plate cools.",
        labels=["thermal", "optical"],
        wisa_label="unnatural light source",
        answers={"q0": NO_DYNAMICS, "q1": NO_THERMO, "q2": "unnatural light source"},
        phys_law="Heat diffuses from the hot spot (the heat equation's Gaussian kernel) while the plate loses heat; hot metal glows by incandescence.",
        params={"diffusivity_px2_per_frame": diffusivity, "cooling_per_frame": cooling},
    )


def ripple_reflection(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SceneClip:
    """A ring of ripples spreading on a pond, bending the reflection of a lamp."""
    yy, xx = _grid(height, width)
    size = min(height, width)
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    speed = rng.uniform(0.6, 1.0) * size / num_frames  # px per frame
    wavelength = size * rng.uniform(0.12, 0.18)
    packet = wavelength * rng.uniform(0.9, 1.3)
    amplitude = rng.uniform(0.8, 1.2)
    r0 = size * 0.05
    lx, ly = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)
    lamp_rx, lamp_ry = size * 0.12, size * 0.2
    dx, dy = xx - cx, yy - cy
    r = np.sqrt(dx * dx + dy * dy) + 1e-6
    k_wave = 2 * np.pi / wavelength
    bg = _background(yy, xx, rng, (0.05, 0.12, 0.25), (0.04, 0.1, 0.2))
    frames, masks = [], []
    for k in range(num_frames):
        s = r - (r0 + speed * k)  # the pattern is a function of r − c·t: it moves out at c
        envelope = np.exp(-((s / packet) ** 2))
        # radial slope of h = A·cos(k s)·envelope
        slope = amplitude * (-k_wave * np.sin(k_wave * s) - 2 * s / packet**2 * np.cos(k_wave * s)) * envelope
        gx, gy = slope * dx / r, slope * dy / r
        sx, sy = xx + 2.0 * gx, yy + 2.0 * gy  # where the reflected ray meets the lamp's image
        lamp = np.clip(1.2 - np.sqrt(((sx - lx) / lamp_rx) ** 2 + ((sy - ly) / lamp_ry) ** 2), 0, 1)
        shade = 0.08 * (gx * 0.6 - gy * 0.8) / (amplitude * k_wave)
        frame = bg + shade[..., None] + lamp[..., None] * np.asarray((1.0, 0.9, 0.6), np.float32)
        frames.append(np.clip(frame, 0, 1))
        masks.append(envelope > 0.05)
    displacement = np.zeros((num_frames - 1, 2, height, width), np.float32)
    for k in range(1, num_frames):
        m = masks[k - 1]
        displacement[k - 1, 0][m] = (speed * dx / r)[m]
        displacement[k - 1, 1][m] = (speed * dy / r)[m]
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=displacement,
        prompt="Ripples spread across a still pond after a pebble drops in, distorting the reflection of a lamp on the water.",
        labels=["fluid", "optical"],
        wisa_label="reflection",
        answers={"q0": "liquid motion", "q1": NO_THERMO, "q2": "reflection"},
        phys_law="Surface waves travel outward at their phase speed; the tilted surface redirects the reflected light.",
        params={"speed_px_per_frame": speed, "wavelength_px": wavelength},
    )


SCENES: dict[str, Callable[[np.random.Generator, int, int, int], SceneClip]] = {
    "ball_bounce": ball_bounce,
    "elastic_bar": elastic_bar,
    "dye_advection": dye_advection,
    "smoke_puff": smoke_puff,
    "melting_block": melting_block,
    "ball_collision": ball_collision,
    "cooling_plate": cooling_plate,
    "ripple_reflection": ripple_reflection,
}
"""Scene name → generator ``(rng, num_frames, height, width) → SceneClip``."""


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
            raise ValueError(f"num_clips_per_category must be ≥ 1, got {self.num_clips_per_category}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be ≥ 2, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.height < 16 or self.width < 16 or self.height % 2 or self.width % 2:
            raise ValueError(f"height and width must be even and ≥ 16, got {self.height} × {self.width}")
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
    key = f"pila-synthetic:{scene}:{index}:{config.seed}:{config.num_frames}x{config.height}x{config.width}@{config.fps:g}"
    return hashlib.sha256(key.encode()).hexdigest() + ".mp4"


def render_clip(scene: str, index: int, config: SyntheticConfig) -> SceneClip:
    """Render clip ``index`` of ``scene`` (deterministic in the seed)."""
    rng = np.random.default_rng([config.seed, list(SCENES).index(scene), index])
    return SCENES[scene](rng, config.num_frames, config.height, config.width)


def wisa_record(name: str, scene: str, index: int, clip: SceneClip, config: SyntheticConfig) -> dict[str, Any]:
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
        },
    }


def _stamp(config: SyntheticConfig) -> dict[str, Any]:
    return {"format": "pila-synthetic", "version": 1, "config": {**config.__dict__, "scenes": list(config.scenes)}}


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
            f"{str(base)!r} holds synthetic clips made with other settings ({found.get('config')}); "
            "choose another root or delete that folder"
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
                    metadata={"units": "pixels per frame", "layout": "(F-1, 2, H, W), x first; entry k-1 moves frame k-1 to frame k"},
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
    ) -> None:
        self.synthetic = SyntheticConfig(
            num_clips_per_category=num_clips_per_category, seed=seed, num_frames=num_frames, fps=fps, height=height, width=width
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

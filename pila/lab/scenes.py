"""The physics lab's scenes: eight procedural clips whose physics is known in closed form.

Legend: F pixel frames, H_px, W_px pixel height and width; x is the column (right),
y the row (down); vector channel 0 is x.

One scene per category, each with known motion:

==================  ============================================  ==============================
scene               what happens                                  labels
==================  ============================================  ==============================
ball_bounce         a ball falls under gravity and bounces        rigid_body, collision
elastic_bar         a clamped bar oscillates (cantilever mode)    elastic
dye_advection       dye carried by a swirling vortex flow         fluid
smoke_puff          a smoke puff expands and rises                compressible_flow
melting_block       an ice block melts into a spreading puddle    fluid, phase_change, thermal
ball_collision      two balls collide head-on and rebound         rigid_body, collision
cooling_plate       a hot spot on a plate spreads and cools       thermal
ripple_reflection   ripples distort a lamp's reflection           fluid, optical
==================  ============================================  ==============================

Every scene is a pure function of a ``numpy`` generator (so of the seed) and of the
world's **law constants** (:data:`LAWS`): gravity, restitution, oscillation period and
damping, vortex angular speed, expansion, rise and dissipation, melt rate, diffusivity and
cooling, wave speed. The constants are the same for every clip of a world, so a model
trained on the scenes can learn them and the ruler (:mod:`pila.lab.metrics`) reads the
law it checks from this same table. What varies per clip (colours, sizes, start
positions and velocities, phases) is drawn from the ranges written in each scene. A
scene renders with other constants when given ``law={...}`` (e.g. gravity × 2), which is
how the ruler's tests build law-breaking clips.

Units of :data:`LAWS`: lengths in units of the frame's shorter side (``size``), time in
frames (16 fps in the lab), angles in radians. All values are our choice, picked so each
phenomenon plays out within 33 frames at 64 × 64 pixels.

Ground-truth motion (``displacement``, (F − 1, 2, H_px, W_px) float32) follows the
flow-target convention of :mod:`pila.datamodules.flow_targets`: entry k − 1 is the
displacement in pixels of the material at each pixel of frame k − 1 between frames
k − 1 and k (zero where nothing moves). It is exact for the moving bodies (the
trajectories are closed-form; collisions are solved event by event). For the ripple it
is the outward motion of the wave pattern (its phase speed), and the cooling plate does
not move at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

Law = Mapping[str, float]

LAWS: dict[str, dict[str, float]] = {
    # g in sizes per frame² (0.51 px/frame² at 64 px); restitution = rebound / impact speed
    "ball_bounce": {"gravity": 0.008, "restitution": 0.75},
    # relative speed after / before the impact (momentum is conserved; mass ∝ area)
    "ball_collision": {"restitution": 0.9},
    # period of the first bending mode (frames); amplitude decays as exp(−damping·t)
    "elastic_bar": {"period": 16.0, "damping": 0.015},
    # vortex angular speed at the centre (rad/frame), ω(r) = ω / (1 + (r / core)²), core in basin radii
    "dye_advection": {"omega": 0.08, "core": 0.45},
    # radius r(t) = r0 + (r1 − r0)(1 − exp(−t / growth_time)); rise in sizes per frame; mass ∝ exp(−dissipation·t)
    "smoke_puff": {"growth_time": 11.0, "rise": 0.0055, "dissipation": 0.01},
    # fraction of the initial ice height lost per frame; the width shrinks melt_aspect times as fast
    "melting_block": {"melt_rate": 0.018, "melt_aspect": 0.3},
    # heat-kernel variance grows by 2·diffusivity per frame (sizes²); peak × exp(−cooling·t)
    "cooling_plate": {"diffusivity": 0.0002, "cooling": 0.03},
    # ring radius grows at wave_speed (sizes per frame); wavelength in sizes
    "ripple_reflection": {"wave_speed": 0.025, "wavelength": 0.15},
}
"""The lab world's law constants, scene → name → value (units in the module docstring)."""


def _law(scene: str, override: Law | None) -> dict[str, float]:
    """The scene's constants with ``override`` applied; unknown names are a ``ValueError``."""
    law = dict(LAWS[scene])
    unknown = set(override or {}) - set(law)
    if unknown:
        raise ValueError(f"unknown law constants {sorted(unknown)} for {scene}; valid: {', '.join(law)}")
    law.update({k: float(v) for k, v in (override or {}).items()})
    return law


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
        params: the scene's drawn parameters (vary per clip).
        law: the law constants the clip was rendered with (:data:`LAWS`, possibly overridden).
    """

    frames: np.ndarray
    displacement: np.ndarray
    prompt: str
    labels: list[str]
    wisa_label: str
    answers: dict[str, str]
    phys_law: str
    params: dict[str, float] = field(default_factory=dict)
    law: dict[str, float] = field(default_factory=dict)


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


def ball_bounce(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """A striped ball dropped from rest falls under the world's gravity and bounces on the floor."""
    law = _law("ball_bounce", law)
    yy, xx = _grid(height, width)
    size = min(height, width)
    radius = size * rng.uniform(0.08, 0.11)
    floor = height * 0.86 - radius
    y0 = floor - size * rng.uniform(0.3, 0.55)  # first impact after 8.7–11.7 frames at the default g
    gravity = law["gravity"] * size
    vx = rng.uniform(-1, 1) * 0.2 * width / num_frames
    x0 = width / 2 - vx * (num_frames - 1) / 2 + rng.uniform(-0.1, 0.1) * width
    restitution = law["restitution"]
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
        params={"gravity_px_per_frame2": gravity, "radius_px": radius, "x0_px": float(x0), "y0_px": float(y0), "vx_px_per_frame": float(vx), "floor_px": floor},
        law=law,
    )


def elastic_bar(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """A bar clamped at its left end vibrating in its first cantilever mode (the world's period and damping)."""
    law = _law("elastic_bar", law)
    yy, xx = _grid(height, width)
    clamp = width * 0.12
    length = width * rng.uniform(0.7, 0.8)
    thickness = height * rng.uniform(0.08, 0.12)
    centre_y = height * rng.uniform(0.45, 0.55)
    amplitude = height * rng.uniform(0.12, 0.2)
    period = law["period"]  # frames
    phase = rng.uniform(0, 2 * np.pi)
    decay = law["damping"]  # per frame
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
        params={"amplitude_px": amplitude, "phase_rad": float(phase), "clamp_px": clamp, "length_px": length, "centre_y_px": centre_y},
        law=law,
    )


def dye_advection(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """Blobs of dye in a round basin carried by a steady vortex (angular speed falls with radius)."""
    law = _law("dye_advection", law)
    yy, xx = _grid(height, width)
    cx, cy = width / 2, height / 2
    basin = 0.46 * min(height, width)
    omega0 = rng.choice([-1, 1]) * law["omega"]  # rad per frame at the centre; the direction varies
    core = basin * law["core"]
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
        params={"omega0_rad_per_frame": float(omega0), "core_px": core, "basin_px": basin},
        law=law,
    )


def smoke_puff(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """A puff of smoke expanding radially while it rises; its mass (column density × area) decays."""
    law = _law("smoke_puff", law)
    yy, xx = _grid(height, width)
    size = min(height, width)
    r_start, r_end = size * rng.uniform(0.12, 0.14), size * rng.uniform(0.22, 0.25)
    tau = law["growth_time"]
    rise = law["rise"] * size  # px per frame
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
        profile = np.clip(1 - s2, 0, 1)
        texture = 0.75 + 0.25 * np.sin(5 * u + seeds[0]) * np.sin(4 * v + seeds[1]) + 0.1 * np.sin(7 * (u + v) + seeds[2])
        # column density ∝ mass / radius²: it thins as it spreads, and the mass decays
        alpha = np.clip(1.6 * (r_start / radius[k]) ** 2 * math.exp(-law["dissipation"] * k) * profile * texture, 0, 0.95)
        frames.append(_composite(bg, np.full_like(bg, 0.95), alpha))
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
        params={"r_start_px": r_start, "r_end_px": r_end, "cx0_px": cx0, "cy0_px": cy0, "rise_px_per_frame": rise},
        law=law,
    )


def melting_block(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """An ice block shrinking on a warm plate while its meltwater spreads into a puddle.

    The ice melts at the world's rate; the water is what the ice lost (areas in the image
    plane: ice + water is constant), spread in a layer of fixed depth below the block.
    """
    law = _law("melting_block", law)
    yy, xx = _grid(height, width)
    floor = height * 0.78
    cx = width * rng.uniform(0.42, 0.58)
    h0, w0 = height * rng.uniform(0.3, 0.36), width * rng.uniform(0.22, 0.28)
    pud_h = height * 0.08  # depth of the meltwater layer, below the floor line
    times = np.arange(num_frames, dtype=np.float64)
    shrink = np.clip(law["melt_rate"] * times, 0, 0.95)  # fraction of the height lost
    block_h = h0 * (1 - shrink)
    block_w = w0 * (1 - law["melt_aspect"] * shrink)
    pud_a = 0.5 * w0 * 0.9 + (h0 * w0 - block_h * block_w) / (2 * pud_h)  # puddle half-width: the water is the lost ice
    bg = _background(yy, xx, rng, (0.8, 0.78, 0.75), (0.75, 0.7, 0.65))
    bg[yy >= floor] = np.asarray((0.7, 0.35, 0.25), np.float32)  # the warm plate
    frames, blocks, puddles = [], [], []
    for k in range(num_frames):
        pu = (xx - cx) / pud_a[k]
        puddle = _soft(np.minimum(pud_a[k] - np.abs(xx - cx), np.minimum(yy - floor, floor + pud_h - yy)))
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
        params={"h0_px": h0, "w0_px": w0, "cx_px": cx, "floor_px": floor, "puddle_depth_px": pud_h},
        law=law,
    )


def ball_collision(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """Two balls roll towards each other, collide head-on and rebound (momentum conserved)."""
    law = _law("ball_collision", law)
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
    restitution = law["restitution"]
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
        params={"mass_ratio": m_a / m_b, "t_hit_frames": t_hit, "r_a_px": r_a, "r_b_px": r_b, "y_px": y, "u_a_px_per_frame": u_a, "u_b_px_per_frame": u_b},
        law=law,
    )


def _incandescence(temperature: np.ndarray) -> np.ndarray:
    """Colour of a plate at normalised temperature in [0, 1]: dull grey → red → orange → yellow."""
    t = np.clip(temperature, 0, 1)[..., None]
    glow = np.concatenate([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1) * 0.6], axis=-1)
    return np.clip(0.3 * (1 - t) + glow, 0, 1)


def cooling_plate(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """A hot spot on a metal plate spreading by conduction (heat kernel) and cooling; nothing moves."""
    law = _law("cooling_plate", law)
    yy, xx = _grid(height, width)
    left, right = width * 0.12, width * 0.88
    top, bottom = height * 0.2, height * 0.8
    hx, hy = rng.uniform(left + 0.25 * (right - left), right - 0.25 * (right - left)), rng.uniform(top + 0.3 * (bottom - top), bottom - 0.3 * (bottom - top))
    sigma0 = min(height, width) * rng.uniform(0.06, 0.1)
    diffusivity = law["diffusivity"] * min(height, width) ** 2  # px² per frame
    cooling = law["cooling"]  # per frame
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
        labels=["thermal"],  # glowing heat spread: thermal, not an optical effect (App. C)
        wisa_label="unnatural light source",
        answers={"q0": NO_DYNAMICS, "q1": NO_THERMO, "q2": "unnatural light source"},
        phys_law="Heat diffuses from the hot spot (the heat equation's Gaussian kernel) while the plate loses heat; hot metal glows by incandescence.",
        params={"diffusivity_px2_per_frame": diffusivity, "sigma0_px": sigma0, "hx_px": hx, "hy_px": hy},
        law=law,
    )


def ripple_reflection(rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """A ring of ripples spreading on a pond at the world's wave speed, bending the reflection of a lamp."""
    law = _law("ripple_reflection", law)
    yy, xx = _grid(height, width)
    size = min(height, width)
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    speed = law["wave_speed"] * size  # px per frame
    wavelength = size * law["wavelength"]
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
        params={"speed_px_per_frame": speed, "wavelength_px": wavelength, "cx_px": cx, "cy_px": cy, "r0_px": r0},
        law=law,
    )


SCENES: dict[str, Callable[..., SceneClip]] = {
    "ball_bounce": ball_bounce,
    "elastic_bar": elastic_bar,
    "dye_advection": dye_advection,
    "smoke_puff": smoke_puff,
    "melting_block": melting_block,
    "ball_collision": ball_collision,
    "cooling_plate": cooling_plate,
    "ripple_reflection": ripple_reflection,
}
"""Scene name → generator ``(rng, num_frames, height, width, law=None) → SceneClip``."""

def render_indexed(scene: str, index: int, seed: int, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """Clip ``index`` of ``scene`` in the world of ``seed``: its rng is ``default_rng([seed, s, index])``
    with s the scene's position in :data:`SCENES` (the rule every dataset of the lab renders by)."""
    rng = np.random.default_rng([seed, list(SCENES).index(scene), index])
    return render_scene(scene, rng, num_frames, height, width, law=law)


def render_scene(scene: str, rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None) -> SceneClip:
    """Render one clip of ``scene`` (a name of :data:`SCENES`), optionally with other law constants."""
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; valid: {', '.join(SCENES)}")
    return SCENES[scene](rng, num_frames, height, width, law=law)

"""The fluid scenes: ``dye_advection``, ``smoke_puff``, ``ripple_reflection``.

Legend: F pixel frames, H_px, W_px pixel height and width; x the column, y the row (down).
"""

from __future__ import annotations

import math

import numpy as np

from pila.lab.scenes.drawing import background, composite, grid, pick_color, soft
from pila.lab.scenes.laws import NO_OPTICS, NO_THERMO, Law, SceneClip, scene_law


def dye_advection(
    rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None
) -> SceneClip:
    """Blobs of dye in a round basin carried by a steady vortex (angular speed falls with
    radius)."""
    law = scene_law("dye_advection", law)
    yy, xx = grid(height, width)
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
        blobs.append(
            (cx + rad * math.cos(ang), cy + rad * math.sin(ang), basin * rng.uniform(0.12, 0.2))
        )
    color_name, color = pick_color(rng, exclude=("blue",))
    water = np.asarray((0.1, 0.3, 0.55), np.float32)
    bg = background(yy, xx, rng, (0.8, 0.78, 0.72), (0.7, 0.68, 0.62))
    inside = soft(basin - r)
    frames = []
    for k in range(num_frames):
        # material now at (r, θ) started at (r, θ − ω(r)·t)
        th0 = theta - omega * k
        x0, y0 = cx + r * np.cos(th0), cy + r * np.sin(th0)
        conc = np.zeros_like(r)
        for bx, by, bs in blobs:
            conc = np.maximum(conc, np.exp(-((x0 - bx) ** 2 + (y0 - by) ** 2) / (2 * bs * bs)))
        liquid = (
            water[None, None] * (1 - conc[..., None])
            + np.asarray(color, np.float32) * conc[..., None]
        )
        frames.append(composite(bg, liquid, inside))
    step_x = cx + r * np.cos(theta + omega) - xx
    step_y = cy + r * np.sin(theta + omega) - yy
    moving = inside > 0.5
    one = np.stack([np.where(moving, step_x, 0), np.where(moving, step_y, 0)]).astype(np.float32)
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=np.broadcast_to(one, (num_frames - 1, *one.shape)).copy(),
        prompt=(
            f"Drops of {color_name} dye swirl in a round basin of water, carried into spirals by "
            "the flowing current."
        ),
        labels=["fluid"],
        wisa_label="liquid motion",
        answers={"q0": "liquid motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law=(
            "A passive dye is advected by a steady vortex whose angular speed falls off with "
            "radius, shearing it into spirals."
        ),
        params={"omega0_rad_per_frame": float(omega0), "core_px": core, "basin_px": basin},
        law=law,
    )


def smoke_puff(
    rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None
) -> SceneClip:
    """A puff of smoke expanding radially while it rises; its mass (column density × area)
    decays."""
    law = scene_law("smoke_puff", law)
    yy, xx = grid(height, width)
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
    bg = background(yy, xx, rng, (0.15, 0.17, 0.22), (0.25, 0.25, 0.28))
    bg = composite(
        bg, np.full_like(bg, 0.35), soft(3.0 - np.abs(xx - cx0)) * (yy > cy0)
    )  # the nozzle
    frames, masks = [], []
    for k in range(num_frames):
        u, v = (xx - cx0) / radius[k], (yy - centre_y[k]) / radius[k]  # material coordinates
        s2 = u * u + v * v
        profile = np.clip(1 - s2, 0, 1)
        texture = (
            0.75
            + 0.25 * np.sin(5 * u + seeds[0]) * np.sin(4 * v + seeds[1])
            + 0.1 * np.sin(7 * (u + v) + seeds[2])
        )
        # column density ∝ mass / radius²: it thins as it spreads, and the mass decays
        alpha = np.clip(
            1.6
            * (r_start / radius[k]) ** 2
            * math.exp(-law["dissipation"] * k)
            * profile
            * texture,
            0,
            0.95,
        )
        frames.append(composite(bg, np.full_like(bg, 0.95), alpha))
        masks.append(s2 < 1)
    displacement = np.zeros((num_frames - 1, 2, height, width), np.float32)
    for k in range(1, num_frames):
        scale = radius[k] / radius[k - 1] - 1
        m = masks[k - 1]
        displacement[k - 1, 0][m] = ((xx - cx0) * scale)[m]
        displacement[k - 1, 1][m] = (
            (yy - centre_y[k - 1]) * scale + (centre_y[k] - centre_y[k - 1])
        )[m]
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=displacement,
        prompt=(
            "A puff of grey smoke bursts from a nozzle, expanding outward and thinning as it rises."
        ),
        labels=["compressible_flow"],
        wisa_label="gas motion",
        answers={"q0": "gas motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law=(
            "An expanding gas cloud conserves mass, so its density falls as its radius grows "
            "while buoyancy lifts it."
        ),
        params={
            "r_start_px": r_start,
            "r_end_px": r_end,
            "cx0_px": cx0,
            "cy0_px": cy0,
            "rise_px_per_frame": rise,
        },
        law=law,
    )


def ripple_reflection(
    rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None
) -> SceneClip:
    """A ring of ripples spreading on a pond at the world's wave speed, bending the
    reflection of a lamp."""
    law = scene_law("ripple_reflection", law)
    yy, xx = grid(height, width)
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
    bg = background(yy, xx, rng, (0.05, 0.12, 0.25), (0.04, 0.1, 0.2))
    frames, masks = [], []
    for k in range(num_frames):
        s = r - (r0 + speed * k)  # the pattern is a function of r − c·t: it moves out at c
        envelope = np.exp(-((s / packet) ** 2))
        # radial slope of h = A·cos(k s)·envelope
        slope = (
            amplitude
            * (-k_wave * np.sin(k_wave * s) - 2 * s / packet**2 * np.cos(k_wave * s))
            * envelope
        )
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
        prompt=(
            "Ripples spread across a still pond after a pebble drops in, distorting the "
            "reflection of a lamp on the water."
        ),
        labels=["fluid", "optical"],
        wisa_label="reflection",
        answers={"q0": "liquid motion", "q1": NO_THERMO, "q2": "reflection"},
        phys_law=(
            "Surface waves travel outward at their phase speed; the tilted surface redirects the "
            "reflected light."
        ),
        params={
            "speed_px_per_frame": speed,
            "wavelength_px": wavelength,
            "cx_px": cx,
            "cy_px": cy,
            "r0_px": r0,
        },
        law=law,
    )

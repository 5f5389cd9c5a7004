"""The mechanics scenes: ``ball_bounce``, ``elastic_bar``, ``ball_collision``.

Legend: F pixel frames, H_px, W_px pixel height and width; x the column, y the row (down).
"""

from __future__ import annotations

import math

import numpy as np

from pila.lab.scenes.drawing import (
    background,
    composite,
    grid,
    pick_color,
    soft,
    textured_ball,
    with_article,
)
from pila.lab.scenes.kinematics import bounce_heights, collide_1d, rigid_displacement
from pila.lab.scenes.laws import NO_OPTICS, NO_THERMO, Law, SceneClip, scene_law


def ball_bounce(
    rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None
) -> SceneClip:
    """A striped ball dropped from rest falls under the world's gravity and bounces on the floor."""
    law = scene_law("ball_bounce", law)
    yy, xx = grid(height, width)
    size = min(height, width)
    radius = size * rng.uniform(0.08, 0.11)
    floor = height * 0.86 - radius
    y0 = floor - size * rng.uniform(
        0.3, 0.55
    )  # first impact after 8.7–11.7 frames at the default g
    gravity = law["gravity"] * size
    vx = rng.uniform(-1, 1) * 0.2 * width / num_frames
    x0 = width / 2 - vx * (num_frames - 1) / 2 + rng.uniform(-0.1, 0.1) * width
    restitution = law["restitution"]
    times = np.arange(num_frames, dtype=np.float64)
    ys = bounce_heights(y0, 0.0, gravity, floor, restitution, times)
    xs = x0 + vx * times
    color_name, color = pick_color(rng)
    angle, period = rng.uniform(0, np.pi), radius * rng.uniform(0.6, 0.9)
    bg = background(yy, xx, rng, (0.75, 0.8, 0.85), (0.55, 0.5, 0.45))
    bg[yy >= height * 0.86] *= 0.6  # the floor
    frames, alphas = [], []
    for k in range(num_frames):
        alpha, rgb = textured_ball(yy, xx, xs[k], ys[k], radius, color, angle, period)
        frames.append(composite(bg, rgb, alpha))
        alphas.append(alpha)
    centres = np.stack([xs, ys], axis=-1)[None]  # (1, F, 2)
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=rigid_displacement([np.stack(alphas)], centres),
        prompt=(
            f"{with_article(color_name).capitalize()} ball falls under gravity and bounces on a "
            "hard floor, each bounce lower than the last."
        ),
        labels=["rigid_body", "collision"],
        wisa_label="rigid body motion",
        answers={"q0": "rigid body motion, collision", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law=(
            "Free fall under constant gravity; each impact reverses the vertical velocity, "
            "reduced by the coefficient of restitution."
        ),
        params={
            "gravity_px_per_frame2": gravity,
            "radius_px": radius,
            "x0_px": float(x0),
            "y0_px": float(y0),
            "vx_px_per_frame": float(vx),
            "floor_px": floor,
        },
        law=law,
    )


def elastic_bar(
    rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None
) -> SceneClip:
    """A bar clamped at its left end vibrating in its first cantilever mode (the world's
    period and damping)."""
    law = scene_law("elastic_bar", law)
    yy, xx = grid(height, width)
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

    color_name, color = pick_color(rng)
    bg = background(yy, xx, rng, (0.85, 0.85, 0.8), (0.65, 0.65, 0.6))
    wall = soft(clamp - xx)
    frames, alphas, deflections = [], [], []
    for k in range(num_frames):
        w = deflection(k)
        across = yy - centre_y - w  # distance from the bar's mid-line
        alpha = soft(thickness / 2 - np.abs(across)) * soft(xx - clamp) * soft(clamp + length - xx)
        stripes = 0.8 + 0.2 * np.cos(2 * np.pi * across / thickness) * np.cos(2 * np.pi * xx / 7.0)
        rgb = np.asarray(color, np.float32) * stripes[..., None]
        frame = composite(bg, rgb, alpha)
        frame = composite(frame, np.full_like(frame, 0.2), wall)
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
        prompt=(
            f"A springy {color_name} ruler clamped at one end oscillates up and down after being "
            "plucked."
        ),
        labels=["elastic"],
        wisa_label="elastic motion",
        answers={"q0": "elastic motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law=(
            "A clamped elastic beam vibrates in its first bending mode; the restoring force grows "
            "with the deflection."
        ),
        params={
            "amplitude_px": amplitude,
            "phase_rad": float(phase),
            "clamp_px": clamp,
            "length_px": length,
            "centre_y_px": centre_y,
        },
        law=law,
    )


def ball_collision(
    rng: np.random.Generator,
    num_frames: int,
    height: int,
    width: int,
    law: Law | None = None,
    time_scale: float = 1.0,
) -> SceneClip:
    """Two balls roll towards each other, collide head-on and rebound (momentum conserved).

    ``time_scale`` plays the same clip at another speed (2: twice as fast, 0.5: half): the
    drawn speeds are multiplied by it and the impact time divided, so frame k shows what
    frame ``k · time_scale`` would (the collision's law has no time constant to scale).
    """
    law = scene_law("ball_collision", law)
    yy, xx = grid(height, width)
    size = min(height, width)
    r_a, r_b = size * rng.uniform(0.08, 0.11), size * rng.uniform(0.08, 0.11)
    m_a, m_b = r_a**2, r_b**2  # equal density discs
    y = height * rng.uniform(0.45, 0.6)
    t_hit = (num_frames - 1) * rng.uniform(0.4, 0.55) / time_scale
    u_a = rng.uniform(0.5, 0.8) * width / num_frames * time_scale
    u_b = -rng.uniform(0.5, 0.8) * width / num_frames * time_scale
    x_hit = width * rng.uniform(0.45, 0.55)
    x_a0 = x_hit - r_a - u_a * t_hit
    x_b0 = x_hit + r_b - u_b * t_hit
    restitution = law["restitution"]
    times = np.arange(num_frames, dtype=np.float64)
    xa, xb = collide_1d(x_a0, u_a, m_a, x_b0, u_b, m_b, r_a + r_b, restitution, times)
    # never green, the baize's colour: a green ball on it is lost to any blur or mp4 (its
    # shaded half sits within 0.16 of the cloth), so no ruler could follow it
    (name_a, col_a), angle = pick_color(rng, exclude=("green",)), rng.uniform(0, np.pi)
    name_b, col_b = pick_color(rng, exclude=(name_a, "green"))
    bg = background(yy, xx, rng, (0.15, 0.45, 0.25), (0.1, 0.38, 0.2))  # baize
    frames, alphas_a, alphas_b = [], [], []
    for k in range(num_frames):
        a_a, rgb_a = textured_ball(yy, xx, xa[k], y, r_a, col_a, angle, r_a * 0.7)
        a_b, rgb_b = textured_ball(yy, xx, xb[k], y, r_b, col_b, angle + 1.0, r_b * 0.7)
        frames.append(composite(composite(bg, rgb_a, a_a), rgb_b, a_b))
        alphas_a.append(a_a)
        alphas_b.append(a_b)
    centres = np.stack(
        [np.stack([xa, np.full_like(xa, y)], -1), np.stack([xb, np.full_like(xb, y)], -1)]
    )
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=rigid_displacement([np.stack(alphas_a), np.stack(alphas_b)], centres),
        prompt=(
            f"{with_article(name_a).capitalize()} billiard ball and {with_article(name_b)} one "
            "roll toward each other, collide head-on and rebound apart."
        ),
        labels=["rigid_body", "collision"],
        wisa_label="collision",
        answers={"q0": "collision, rigid body motion", "q1": NO_THERMO, "q2": NO_OPTICS},
        phys_law=(
            "In a head-on collision momentum is conserved and the relative velocity reverses, "
            "scaled by the coefficient of restitution."
        ),
        params={
            "mass_ratio": m_a / m_b,
            "t_hit_frames": t_hit,
            "r_a_px": r_a,
            "r_b_px": r_b,
            "y_px": y,
            "u_a_px_per_frame": u_a,
            "u_b_px_per_frame": u_b,
        },
        law=law,
    )

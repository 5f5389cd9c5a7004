"""Closed-form motion the scenes draw: bouncing, a one-dimensional collision, and the
ground-truth displacement of rigid bodies.

Legend: F pixel frames, H_px, W_px pixel height and width.
"""

from __future__ import annotations

import math

import numpy as np


def bounce_heights(
    y0: float,
    vy0: float,
    gravity: float,
    floor: float,
    restitution: float,
    times: np.ndarray,
    rest_speed: float = 1e-3,
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


def collide_1d(
    x_a: float,
    u_a: float,
    m_a: float,
    x_b: float,
    u_b: float,
    m_b: float,
    gap: float,
    restitution: float,
    times: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
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


def rigid_displacement(alphas: list[np.ndarray], centres: np.ndarray) -> np.ndarray:
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

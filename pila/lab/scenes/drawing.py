"""Drawing helpers the scenes share: pixel grids, anti-aliased coverage, backdrops, striped
balls, the ball colours.

Legend: H_px, W_px pixel height and width.
"""

from __future__ import annotations

import math

import numpy as np


def grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (H_px, W_px) float32."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy, xx


def soft(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (positive inside), one-pixel ramp."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def background(
    yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, top: tuple, bottom: tuple
) -> np.ndarray:
    """A static vertical gradient with faint static texture, (H_px, W_px, 3)."""
    h = yy.shape[0]
    t = (yy / max(h - 1, 1))[..., None]
    base = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    phase = rng.uniform(0, 2 * np.pi, size=2)
    grain = 0.03 * np.sin(xx / 3.1 + phase[0]) * np.sin(yy / 2.7 + phase[1])
    return np.clip(base + grain[..., None], 0, 1).astype(np.float32)


def composite(under: np.ndarray, over: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return under * (1 - a) + over * a


def textured_ball(
    yy, xx, cx, cy, radius, color, stripe_angle, stripe_period
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (H_px, W_px) and colour (H_px, W_px, 3) of a striped ball centred at (cx, cy)."""
    dx, dy = xx - cx, yy - cy
    alpha = soft(radius - np.sqrt(dx * dx + dy * dy))
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


def with_article(word: str) -> str:
    """``word`` with its indefinite article."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def pick_color(
    rng: np.random.Generator, exclude: tuple[str, ...] = ()
) -> tuple[str, tuple[float, float, float]]:
    names = [n for n in COLORS if n not in exclude]
    name = names[int(rng.integers(len(names)))]
    return name, COLORS[name]

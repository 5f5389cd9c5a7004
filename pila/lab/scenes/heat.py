"""The heat scenes: ``melting_block`` and ``cooling_plate`` (and the glow of hot metal).

Legend: F pixel frames, H_px, W_px pixel height and width; x the column, y the row (down).
"""

from __future__ import annotations

import math

import numpy as np

from pila.lab.scenes.drawing import background, composite, grid, soft
from pila.lab.scenes.laws import NO_DYNAMICS, NO_OPTICS, NO_THERMO, Law, SceneClip, scene_law


def melting_block(
    rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None
) -> SceneClip:
    """An ice block shrinking on a warm plate while its meltwater spreads into a puddle.

    The ice melts at the world's rate; the water is what the ice lost (areas in the image
    plane: ice + water is constant), spread in a layer of fixed depth below the block.
    """
    law = scene_law("melting_block", law)
    yy, xx = grid(height, width)
    floor = height * 0.78
    cx = width * rng.uniform(0.42, 0.58)
    h0, w0 = height * rng.uniform(0.3, 0.36), width * rng.uniform(0.22, 0.28)
    pud_h = height * 0.08  # depth of the meltwater layer, below the floor line
    times = np.arange(num_frames, dtype=np.float64)
    shrink = np.clip(law["melt_rate"] * times, 0, 0.95)  # fraction of the height lost
    block_h = h0 * (1 - shrink)
    block_w = w0 * (1 - law["melt_aspect"] * shrink)
    pud_a = 0.5 * w0 * 0.9 + (h0 * w0 - block_h * block_w) / (
        2 * pud_h
    )  # puddle half-width: the water is the lost ice
    bg = background(yy, xx, rng, (0.8, 0.78, 0.75), (0.75, 0.7, 0.65))
    bg[yy >= floor] = np.asarray((0.7, 0.35, 0.25), np.float32)  # the warm plate
    frames, blocks, puddles = [], [], []
    for k in range(num_frames):
        pu = (xx - cx) / pud_a[k]
        puddle = soft(
            np.minimum(pud_a[k] - np.abs(xx - cx), np.minimum(yy - floor, floor + pud_h - yy))
        )
        water = (
            np.asarray((0.25, 0.45, 0.8), np.float32) * (0.85 + 0.15 * np.cos(9 * pu))[..., None]
        )
        frame = composite(bg, water, puddle)
        u, v = (xx - cx) / block_w[k], (floor - yy) / block_h[k]
        block = soft(
            np.minimum(
                block_w[k] / 2 - np.abs(xx - cx), np.minimum(floor - yy, yy - (floor - block_h[k]))
            )
        )
        ice = (
            np.asarray((0.85, 0.93, 0.98), np.float32)
            * (0.85 + 0.15 * np.sin(11 * u + 7 * v))[..., None]
        )
        frames.append(composite(frame, ice, block))
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
        prompt=(
            "A block of ice melts on a warm plate, shrinking while its meltwater flows outward "
            "into a spreading puddle."
        ),
        labels=["fluid", "phase_change", "thermal"],
        wisa_label="melting",
        answers={"q0": "liquid motion", "q1": "melting", "q2": NO_OPTICS},
        phys_law=(
            "Heat from the plate melts the ice at its melting point; the latent heat sets the "
            "melting rate and the water spreads."
        ),
        params={"h0_px": h0, "w0_px": w0, "cx_px": cx, "floor_px": floor, "puddle_depth_px": pud_h},
        law=law,
    )


def incandescence(temperature: np.ndarray) -> np.ndarray:
    """Colour of a plate at normalised temperature in [0, 1]: dull grey → red → orange → yellow."""
    t = np.clip(temperature, 0, 1)[..., None]
    glow = np.concatenate(
        [np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1) * 0.6], axis=-1
    )
    return np.clip(0.3 * (1 - t) + glow, 0, 1)


def cooling_plate(
    rng: np.random.Generator, num_frames: int, height: int, width: int, law: Law | None = None
) -> SceneClip:
    """A hot spot on a metal plate spreading by conduction (heat kernel) and cooling; nothing
    moves."""
    law = scene_law("cooling_plate", law)
    yy, xx = grid(height, width)
    left, right = width * 0.12, width * 0.88
    top, bottom = height * 0.2, height * 0.8
    hx, hy = (
        rng.uniform(left + 0.25 * (right - left), right - 0.25 * (right - left)),
        rng.uniform(top + 0.3 * (bottom - top), bottom - 0.3 * (bottom - top)),
    )
    sigma0 = min(height, width) * rng.uniform(0.06, 0.1)
    diffusivity = law["diffusivity"] * min(height, width) ** 2  # px² per frame
    cooling = law["cooling"]  # per frame
    plate = soft(np.minimum(np.minimum(xx - left, right - xx), np.minimum(yy - top, bottom - yy)))
    bg = background(yy, xx, rng, (0.12, 0.12, 0.14), (0.08, 0.08, 0.1))
    r2 = (xx - hx) ** 2 + (yy - hy) ** 2
    frames = []
    for k in range(num_frames):
        var = sigma0**2 + 2 * diffusivity * k
        temperature = (sigma0**2 / var) * np.exp(-r2 / (2 * var)) * math.exp(-cooling * k)
        frames.append(composite(bg, incandescence(temperature), plate))
    return SceneClip(
        frames=np.stack(frames).astype(np.float32),
        displacement=np.zeros((num_frames - 1, 2, height, width), np.float32),
        prompt=(
            "A metal plate glows orange-hot at one spot, the glow spreading and fading as the "
            "plate cools."
        ),
        labels=["thermal"],  # glowing heat spread: thermal, not an optical effect (App. C)
        wisa_label="unnatural light source",
        answers={"q0": NO_DYNAMICS, "q1": NO_THERMO, "q2": "unnatural light source"},
        phys_law=(
            "Heat diffuses from the hot spot (the heat equation's Gaussian kernel) while the "
            "plate loses heat; hot metal glows by incandescence."
        ),
        params={
            "diffusivity_px2_per_frame": diffusivity,
            "sigma0_px": sigma0,
            "hx_px": hx,
            "hy_px": hy,
        },
        law=law,
    )

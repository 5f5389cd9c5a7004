"""Changes of a clip's look that keep its law: what a generator, its VAE or a codec does to
a lawful clip without making it less lawful.

Legend: F frames, H, W pixel height and width; clips are float (F, H, W, 3) in [0, 1].

Each maker returns a :data:`Look`, a function clip → clip of the same shape;
``benchmarks/lab_ruler_robustness.py`` measures lawful clips under them against law breaks
of the same clips. The calibration passes half its clips through :func:`mp4_round_trip`.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import av
import cv2
import numpy as np

from pila.io import encode_mp4, frames_to_uint8

Look = Callable[[np.ndarray], np.ndarray]

MP4_CRF = 18
"""``pila predict``'s default mp4 quality (the calibration's round trip)."""


def mp4_round_trip(frames: np.ndarray, crf: int = MP4_CRF) -> np.ndarray:
    """Frames written to an in-memory H.264 mp4 and decoded again (uint8), as a generated
    video would be."""
    buf = io.BytesIO()
    encode_mp4(buf, frames_to_uint8(np.asarray(frames)), fps=16.0, codec="libx264", crf=crf)
    buf.seek(0)
    with av.open(buf) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def blur(sigma: float) -> Look:
    """Gaussian blur of ``sigma`` pixels, per frame (none at 0)."""
    if sigma <= 0:
        return lambda c: c
    return lambda c: np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in c])


def gamma(g: float) -> Look:
    """Every channel raised to the power ``g``."""
    return lambda c: np.power(np.clip(c, 0, 1), g)


def mp4(crf: int) -> Look:
    """An H.264 round trip at ``crf``."""
    return lambda c: mp4_round_trip(c, crf=crf).astype(np.float32) / 255.0


def shift(pixels: int) -> Look:
    """The whole clip moved ``pixels`` right and down, the border replicated."""

    def apply(c: np.ndarray) -> np.ndarray:
        padded = np.pad(c, ((0, 0), (pixels, 0), (pixels, 0), (0, 0)), mode="edge")
        return padded[:, : c.shape[1], : c.shape[2]]

    return apply


def resample(factor: float) -> Look:
    """Down-sampled by ``factor`` (area) and up again (bilinear), as a low-resolution
    generator's upscaled output."""

    def apply(c: np.ndarray) -> np.ndarray:
        h, w = c.shape[1:3]
        small = (max(1, round(w * factor)), max(1, round(h * factor)))
        return np.stack(
            [cv2.resize(cv2.resize(f, small, interpolation=cv2.INTER_AREA), (w, h)) for f in c]
        )

    return apply


def contrast(k: float) -> Look:
    """Contrast scaled by ``k`` about mid-grey."""
    return lambda c: np.clip(0.5 + k * (c - 0.5), 0, 1)


def saturation(k: float) -> Look:
    """Colour saturation scaled by ``k`` about each pixel's grey."""
    return lambda c: np.clip(c.mean(-1, keepdims=True) * (1 - k) + k * c, 0, 1)


def sharpen(amount: float, sigma: float = 1.0) -> Look:
    """Unsharp mask: the frame plus ``amount`` × (frame − its blur of ``sigma``)."""
    soft = blur(sigma)
    return lambda c: np.clip(c + amount * (c - soft(c)), 0, 1)


def colour_cast(gain: np.ndarray, offset: np.ndarray) -> Look:
    """Per channel ``c · gain + offset`` (3 values each)."""
    gain, offset = np.asarray(gain, np.float32), np.asarray(offset, np.float32)
    return lambda c: np.clip(c * gain + offset, 0, 1)


def flicker(amplitude: float, rng: np.random.Generator) -> Look:
    """A brightness step per frame, uniform in ±``amplitude``."""

    def apply(c: np.ndarray) -> np.ndarray:
        step = rng.uniform(-amplitude, amplitude, (len(c), 1, 1, 1)).astype(np.float32)
        return np.clip(c + step, 0, 1)

    return apply


def grain(sigma: float, rng: np.random.Generator) -> Look:
    """Gaussian noise of ``sigma`` per pixel and channel, new in every frame."""
    return lambda c: np.clip(c + rng.normal(0, sigma, c.shape).astype(np.float32), 0, 1)


def mix(*parts: Look) -> Look:
    """The looks applied in turn."""

    def apply(c: np.ndarray) -> np.ndarray:
        for part in parts:
            c = part(c)
        return c

    return apply

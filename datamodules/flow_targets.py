"""Stage A's dense pseudo-flow targets: Farneback optical flow carried onto the latent grid.

Legend: F pixel frames, T latent frames (``(F − 1)/r_t + 1``), H_px, W_px pixel height
and width, H, W latent height and width (``H_px/r_s``, ``W_px/r_s``), r_t the VAE's
temporal factor (4 for Wan), r_s its spatial factor (8 for Wan).

Convention (the units of the AFE kinematic anchor v̂, "latent cells per latent frame"):

- Channel 0 is the x component (along W, positive to the right), channel 1 the y
  component (along H, positive downwards).
- ``d_k`` (k = 1 … F − 1) is the displacement from pixel frame k − 1 to pixel frame k,
  in pixels per pixel frame, placed on frame k − 1's pixels. It is computed with
  OpenCV's Farneback method on grey frames shrunk so the long side is at most
  ``FlowConfig.max_side`` pixels, then scaled back to full-resolution pixels.
- Wan's VAE maps latent frame 0 to pixel frame 0 and latent frame t ≥ 1 to pixel frames
  ``r_t(t − 1) + 1 … r_t·t``. The target at latent frame t ≥ 1 averages ``d_k`` over
  those r_t pixel frames; latent frame 0, which has no earlier frame, takes ``d_1``.
- One latent frame spans r_t pixel frames and one latent cell r_s pixels, so a
  displacement of ``d`` pixels per pixel frame is ``d·r_t/r_s`` latent cells per latent
  frame (8 px per frame with Wan's 4 and 8: 4 cells per latent frame).
- Spatially, the field is area-averaged onto the H × W latent grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class FlowConfig:
    """Farneback settings of the flow targets.

    Farneback is our choice of target: the paper trains stage A on "dense flow/deformation
    proxy targets" (App. B.3) without naming the method. It needs no model and runs on a
    CPU core per worker.

    Args:
        max_side: frames are shrunk (never enlarged) so their long side is at most this
            many pixels before the flow is computed (480 × 832 → 148 × 256). [ours: the
            targets live on the 8× coarser latent grid, finer detail is averaged away]
        pyr_scale: image scale between pyramid levels. [ours: OpenCV's documented example]
        levels: pyramid levels. [ours: OpenCV's documented example]
        winsize: averaging window in pixels (of the shrunk frames). [ours: OpenCV's
            documented example]
        iterations: iterations per pyramid level. [ours: OpenCV's documented example]
        poly_n: neighbourhood of the polynomial expansion (5 or 7). [ours: OpenCV's
            documented example]
        poly_sigma: Gaussian σ of the polynomial expansion (1.1 for poly_n 5, 1.5 for 7).
            [ours: OpenCV's documented example]
    """

    max_side: int = 256
    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2

    def __post_init__(self) -> None:
        if self.max_side < 8:
            raise ValueError(f"max_side must be ≥ 8 pixels, got {self.max_side}")
        if not 0.0 < self.pyr_scale < 1.0:
            raise ValueError(f"pyr_scale must be in (0, 1), got {self.pyr_scale}")
        if self.levels < 1 or self.iterations < 1:
            raise ValueError(
                f"levels and iterations must be ≥ 1, got {self.levels}, {self.iterations}"
            )
        if self.winsize < 3:
            raise ValueError(f"winsize must be ≥ 3, got {self.winsize}")
        if self.poly_n not in (5, 7):
            raise ValueError(f"poly_n must be 5 or 7, got {self.poly_n}")
        if not self.poly_sigma > 0:
            raise ValueError(f"poly_sigma must be positive, got {self.poly_sigma}")


def _grey_small(frames: np.ndarray, max_side: int) -> np.ndarray:
    """(F, H_px, W_px, 3) uint8 → (F, h, w) uint8 grey, long side ≤ max_side."""
    _, h, w, _ = frames.shape
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if size != (w, h):
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        out.append(grey)
    return np.stack(out)


def pixel_pair_flows(frames: np.ndarray, config: FlowConfig) -> np.ndarray:
    """Farneback displacement between consecutive frames, in full-resolution pixels.

    Args:
        frames: (F, H_px, W_px, 3) uint8 RGB.
        config: Farneback settings.

    Returns:
        (F − 1, 2, h, w) float32: ``d_k`` for k = 1 … F − 1 on the shrunk grid h × w, x
        first, in pixels (of the full-resolution frame) per pixel frame.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (F, H, W, 3), got {frames.dtype} {frames.shape}")
    grey = _grey_small(frames, config.max_side)  # (F, h, w)
    h, w = grey.shape[1:]
    scale_xy = [frames.shape[2] / w, frames.shape[1] / h]
    to_full = np.array(scale_xy, dtype=np.float32).reshape(2, 1, 1)
    flows = np.empty((len(grey) - 1, 2, h, w), dtype=np.float32)
    for k in range(1, len(grey)):
        d = cv2.calcOpticalFlowFarneback(
            grey[k - 1],
            grey[k],
            None,
            config.pyr_scale,
            config.levels,
            config.winsize,
            config.iterations,
            config.poly_n,
            config.poly_sigma,
            0,
        )  # (h, w, 2)
        flows[k - 1] = d.transpose(2, 0, 1) * to_full
    return flows


def group_pair_flows(pair_flows: np.ndarray, temporal_factor: int) -> np.ndarray:
    """Average the pixel-frame displacements over each latent frame's pixel frames.

    Args:
        pair_flows: (F − 1, 2, h, w), ``d_k`` for k = 1 … F − 1.
        temporal_factor: r_t; F − 1 must be a multiple of it.

    Returns:
        (T, 2, h, w) mean displacement per pixel frame: entry 0 is ``d_1``, entry t ≥ 1
        the mean of ``d_k`` for k = r_t(t − 1) + 1 … r_t·t.
    """
    steps = pair_flows.shape[0]
    if steps < 1 or steps % temporal_factor:
        raise ValueError(
            f"{steps + 1} pixel frames do not map onto latent frames: need "
            f"{temporal_factor}·k + 1 frames"
        )
    groups = pair_flows.reshape(steps // temporal_factor, temporal_factor, *pair_flows.shape[1:])
    grouped = groups.mean(axis=1)  # (T − 1, 2, h, w)
    return np.concatenate([pair_flows[:1], grouped], axis=0)  # (T, 2, h, w)


def to_latent_grid(
    flow: np.ndarray, latent_size: tuple[int, int], temporal_factor: int, spatial_factor: int
) -> np.ndarray:
    """Pixels per pixel frame on any grid → latent cells per latent frame on the latent grid.

    Args:
        flow: (T, 2, h, w) displacement in full-resolution pixels per pixel frame.
        latent_size: (H, W).
        temporal_factor: r_t.
        spatial_factor: r_s.

    Returns:
        (T, 2, H, W) float32, area-averaged, times r_t / r_s.
    """
    H, W = latent_size
    T, _, h, w = flow.shape
    interpolation = cv2.INTER_AREA if (h >= H and w >= W) else cv2.INTER_LINEAR
    out = np.empty((T, 2, H, W), dtype=np.float32)
    for t in range(T):
        for c in range(2):
            out[t, c] = cv2.resize(flow[t, c], (W, H), interpolation=interpolation)
    return out * (temporal_factor / spatial_factor)


def flow_target(
    frames: np.ndarray, config: FlowConfig, temporal_factor: int = 4, spatial_factor: int = 8
) -> Tensor:
    """Stage A's pseudo-flow target of one clip (see the module docstring for the convention).

    Args:
        frames: (F, H_px, W_px, 3) uint8, the same frames the VAE encodes.
        config: Farneback settings.
        temporal_factor: r_t of the VAE.
        spatial_factor: r_s of the VAE.

    Returns:
        (2, T, H, W) float32 in latent cells per latent frame, x first.
    """
    _, h_px, w_px, _ = frames.shape
    if h_px % spatial_factor or w_px % spatial_factor:
        raise ValueError(
            f"frame size {h_px} × {w_px} is not divisible by the VAE's factor {spatial_factor}"
        )
    pairs = pixel_pair_flows(frames, config)  # (F − 1, 2, h, w)
    grouped = group_pair_flows(pairs, temporal_factor)  # (T, 2, h, w)
    latent_size = (h_px // spatial_factor, w_px // spatial_factor)  # (H, W)
    latent = to_latent_grid(grouped, latent_size, temporal_factor, spatial_factor)
    return torch.from_numpy(latent).permute(1, 0, 2, 3).contiguous()  # (2, T, H, W)


def displacement_to_target(
    displacement: np.ndarray, temporal_factor: int = 4, spatial_factor: int = 8
) -> Tensor:
    """A known per-pixel displacement field in the target's units (for ground truth).

    Args:
        displacement: (F − 1, 2, H_px, W_px) pixels per pixel frame, ``d_k`` on frame k − 1.
        temporal_factor: r_t.
        spatial_factor: r_s.

    Returns:
        (2, T, H, W) float32, grouped and resampled exactly as :func:`flow_target`.
    """
    _, _, h_px, w_px = displacement.shape
    grouped = group_pair_flows(displacement.astype(np.float32), temporal_factor)
    latent_size = (h_px // spatial_factor, w_px // spatial_factor)  # (H, W)
    latent = to_latent_grid(grouped, latent_size, temporal_factor, spatial_factor)
    return torch.from_numpy(latent).permute(1, 0, 2, 3).contiguous()  # (2, T, H, W)

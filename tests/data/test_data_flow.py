"""Flow targets: Farneback recovers known motion in latent cells per latent frame, x first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pila.datamodules.clips import ClipConfig, read_clip
from pila.datamodules.flow_targets import (
    FlowConfig,
    displacement_to_target,
    flow_target,
    group_pair_flows,
    pixel_pair_flows,
)
from pila.datamodules.synthetic import SyntheticConfig, render_clip
from pila.io import write_video

# Wan's VAE: 4 pixel frames per latent frame, 8 pixels per latent cell.
R_T, R_S = 4, 8

# Farneback on a smooth textured clip that went through H.264 (crf 10) misses the true
# displacement by at most ~0.05 latent cells per latent frame (0.1 px per pixel frame)
# away from the border on these clips. 0.1 cells (0.2 px per pixel frame, 10 % of the
# slowest speed tested) leaves room for codec and platform differences and still fails
# on any error of the conventions: a swapped axis, a flipped sign, a missing r_t/r_s
# factor (×2 or ×0.5), or an off-by-one in the frame grouping when the speed changes.
TOLERANCE = 0.1


def periodic_texture(x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """A smooth RGB texture with period ``size`` in x and y (so a roll is a pure translation)."""
    w = 2 * np.pi / size
    r = 0.5 + 0.25 * np.sin(4 * w * x) * np.cos(2 * w * y) + 0.2 * np.sin(3 * w * (x + y))
    g = 0.5 + 0.3 * np.cos(w * (2 * x - y))
    b = 0.5 + 0.3 * np.sin(4 * w * y + w * x)
    return np.stack([r, g, b], axis=-1)


def translated_clip(path, positions: np.ndarray, size: int = 64) -> np.ndarray:
    """Write and read back a clip whose frame k is the texture moved by ``positions[k]`` (x, y)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.stack([periodic_texture(xx - px, yy - py, size) for px, py in positions])
    write_video(path, frames, fps=16.0, crf=10)
    return read_clip(
        str(path), ClipConfig(num_frames=len(positions), fps=16.0, height=size, width=size)
    )


def interior(target: torch.Tensor) -> torch.Tensor:
    """Drop the ring of border latent cells, where texture enters and leaves the frame."""
    return target[:, :, 1:-1, 1:-1]


@pytest.mark.parametrize(("vx", "vy"), [(2.0, 1.0), (-1.0, 0.0), (0.5, -2.5), (4.0, 0.0)])
def test_known_translation_is_recovered_in_latent_cells_per_latent_frame(tmp_path, vx, vy):
    frames = translated_clip(tmp_path / "t.mp4", np.array([[vx * k, vy * k] for k in range(33)]))
    target = flow_target(frames, FlowConfig())
    assert target.shape == (2, 9, 8, 8) and target.dtype == torch.float32
    # v px per pixel frame = v·r_t/r_s latent cells per latent frame; channel 0 is x
    expected = torch.tensor([vx * R_T / R_S, vy * R_T / R_S]).view(2, 1, 1, 1)
    error = (interior(target) - expected).abs()
    assert float(error.max()) < TOLERANCE, float(error.max())


def test_each_latent_frame_averages_its_own_pixel_frames(tmp_path):
    # 1 px per frame until pixel frame 8, then 3 px per frame
    speeds = np.array([0.0] + [1.0] * 8 + [3.0] * 24)
    positions = np.stack([np.cumsum(speeds), np.zeros(33)], axis=-1)
    target = flow_target(translated_clip(tmp_path / "v.mp4", positions), FlowConfig())
    x = interior(target)[0].mean(dim=(1, 2))  # (T,)
    # latent 0 ↔ d_1; latent 1 ↔ d_1..d_4; latent 2 ↔ d_5..d_8; latent ≥ 3 ↔ 3 px
    expected = torch.tensor([0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5])
    assert float((x - expected).abs().max()) < TOLERANCE
    assert float(interior(target)[1].abs().max()) < TOLERANCE


def test_grouping_and_units_on_an_exact_field():
    num_frames, size = 17, 16
    d = np.zeros((num_frames - 1, 2, size, size), np.float32)
    for k in range(1, num_frames):  # d_k = k px in x, −1 px in y
        d[k - 1, 0], d[k - 1, 1] = k, -1.0
    target = displacement_to_target(d)
    assert target.shape == (2, 5, 2, 2)
    means = [1.0, 2.5, 6.5, 10.5, 14.5]  # d_1, then means of d_1..4, d_5..8, d_9..12, d_13..16
    torch.testing.assert_close(target[0, :, 0, 0], torch.tensor(means) * 0.5)
    torch.testing.assert_close(target[1], torch.full((5, 2, 2), -0.5))
    # the spec's example: 8 px per pixel frame is 4 latent cells per latent frame
    eight = np.full((16, 2, size, size), 8.0, np.float32)
    assert torch.all(displacement_to_target(eight) == 4.0)


def test_shrunk_frames_still_give_full_resolution_units(tmp_path):
    # Farneback runs at 32 px wide (half size): 4 px at full size is 2 px there
    frames = translated_clip(tmp_path / "s.mp4", np.array([[4.0 * k, 0.0] for k in range(17)]))
    pairs = pixel_pair_flows(frames, FlowConfig(max_side=32))
    assert pairs.shape == (16, 2, 32, 32)
    assert abs(float(np.median(pairs[:, 0])) - 4.0) < 0.2
    target = flow_target(frames, FlowConfig(max_side=32))
    assert abs(float(interior(target)[0].mean()) - 2.0) < TOLERANCE


@pytest.mark.parametrize("scene", ["ball_bounce", "ball_collision", "elastic_bar"])
def test_synthetic_ground_truth_and_farneback_agree_in_direction(tmp_path, scene):
    clip = render_clip(scene, 0, SyntheticConfig())
    write_video(tmp_path / "c.mp4", clip.frames, fps=16.0, crf=12)
    frames = read_clip(
        str(tmp_path / "c.mp4"), ClipConfig(num_frames=33, fps=16.0, height=64, width=64)
    )
    estimate = flow_target(frames, FlowConfig())
    truth = displacement_to_target(clip.displacement)
    moving = truth.norm(dim=0) > 0.05  # (T, H, W)
    assert int(moving.sum()) > 20
    cosine = torch.nn.functional.cosine_similarity(
        estimate.permute(1, 2, 3, 0)[moving], truth.permute(1, 2, 3, 0)[moving], dim=1
    )
    # Farneback spreads motion beyond object edges (its window is ~15 px), so magnitudes
    # differ on cells an object only partly covers; the direction must agree.
    assert float(cosine.mean()) > 0.85


def test_frame_counts_and_sizes_that_do_not_map_to_latents_are_errors():
    with pytest.raises(ValueError, match="4·k \\+ 1"):
        group_pair_flows(np.zeros((6, 2, 4, 4), np.float32), R_T)
    with pytest.raises(ValueError, match="not divisible"):
        flow_target(np.zeros((5, 20, 16, 3), np.uint8), FlowConfig())
    for kwargs in ({"max_side": 4}, {"poly_n": 6}, {"pyr_scale": 1.0}, {"levels": 0}):
        with pytest.raises(ValueError):
            FlowConfig(**kwargs)

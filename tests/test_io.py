"""Atomic writes and the PyAV video writer."""

from __future__ import annotations

import numpy as np
import pytest

from pila.io import atomic_path, read_video, write_json_atomic, write_video


def test_video_round_trip_keeps_size_count_fps_and_content(tmp_path):
    f, h, w = 9, 32, 48
    t = np.linspace(0, 1, f)[:, None, None, None]
    frames = np.broadcast_to(t, (f, h, w, 3)).astype(np.float32).copy()
    frames[..., 1] = np.linspace(0, 1, w)[None, None, :]
    path = write_video(tmp_path / "clip.mp4", frames, fps=16)
    decoded, fps = read_video(path)
    assert decoded.shape == (f, h, w, 3) and fps == pytest.approx(16)
    # H.264 at crf 18 on smooth gradients: mean error well under 2% of the range
    assert np.abs(decoded / 255.0 - frames).mean() < 0.02
    assert not list(tmp_path.glob(".clip.mp4*"))  # no temporary file left behind


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = np.zeros((3, 31, 33, 3), dtype=np.float32)
    decoded, _ = read_video(write_video(tmp_path / "odd.mp4", frames, fps=8))
    assert decoded.shape == (3, 32, 34, 3)


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "data.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("killed midway")
    assert target.read_text().strip() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_bad_frame_shapes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        write_video(tmp_path / "bad.mp4", np.zeros((4, 8, 8)), fps=8)

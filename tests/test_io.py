"""Atomic writes and the PyAV video writer."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pila.io import (
    atomic_folder,
    atomic_path,
    read_json,
    read_video,
    write_json_atomic,
    write_video,
)


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


def test_a_small_clip_encodes_to_the_same_video_every_time(tmp_path):
    """x264's SIMD code gave a 64 × 64 clip another video on most encodes in one process;
    small frames are encoded without it (pila.io.X264_PLAIN_C_AREA)."""
    from pila.lab import corruptions

    clip = corruptions.ground_truth("ball_collision", 4321, 2)  # (33, 64, 64, 3)
    videos = set()
    for k in range(6):
        path = write_video(tmp_path / f"clip{k}.mp4", clip, fps=16, crf=35)
        videos.add(path.read_bytes())
        churn = [np.random.default_rng(k).random((400, 400)) for _ in range(3)]  # reuse memory
        del churn
    assert len(videos) == 1


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


def test_json_reads_back_what_was_written_atomically(tmp_path):
    target = tmp_path / "data.json"
    obj = {"scene": "ball_bounce", "violation": 1.25, "labels": ["mechanics", "ñ"]}
    write_json_atomic(target, obj)
    assert read_json(target) == obj
    target.write_text('{"v": 2, "trunc', encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        read_json(target)


def test_bad_frame_shapes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        write_video(tmp_path / "bad.mp4", np.zeros((4, 8, 8)), fps=8)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    from pila.adapter import AdapterConfig, PILAAdapter
    from pila.io import write_text_atomic

    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        write_json_atomic(tmp_path / "b.json", {"v": 1})
        write_video(tmp_path / "c.mp4", np.zeros((2, 8, 8, 3), dtype=np.float32), fps=8)
        adapter = PILAAdapter(
            AdapterConfig(
                text_dim=8, hidden=8, cond_dim=8, expert_width=4, norm_groups=4, sigma_embed_dim=8
            )
        )
        folder = adapter.save_pretrained(tmp_path / "adapter")
        with atomic_folder(tmp_path / "weights") as scratch:  # as save_pretrained writes
            (scratch / "vae").mkdir()
            save_file({"w": torch.zeros(2)}, str(scratch / "vae" / "w.safetensors"))
    finally:
        os.umask(previous)
    written = [tmp_path / "a.txt", tmp_path / "b.json", tmp_path / "c.mp4", *Path(folder).iterdir()]
    written.append(tmp_path / "weights" / "vae" / "w.safetensors")
    assert len(written) == 6
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    for made in (tmp_path / "weights", tmp_path / "weights" / "vae"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o777 & ~umask, made


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "world"
    with atomic_folder(target) as scratch:
        (scratch / "a.json").write_text("1")
        (scratch / "old_only.json").write_text("1")
    with atomic_folder(target) as scratch:  # the new folder replaces the old one whole
        (scratch / "a.json").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]
    assert (target / "a.json").read_text() == "2"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as scratch:
            (scratch / "a.json").write_text("3, trunc")
            raise RuntimeError("killed midway")
    assert (target / "a.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["world"]  # nothing left beside it

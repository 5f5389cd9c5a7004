"""Clip sampling with PyAV: frame choice, resize and crop, value range, video layouts, bad files."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
from data_helpers import frame_level, wisa_record, write_indexed_video

from pila.datamodules.clips import (
    ClipConfig,
    ClipTooShort,
    frames_to_model_range,
    load_record_clip,
    plan_frame_indices,
    read_clip,
    resize_center_crop,
)
from pila.datamodules.records import parse_record
from pila.datamodules.rejections import RecordError
from pila.datamodules.sources import VideoIndex, open_video


def test_defaults_are_the_papers_clip():
    config = ClipConfig()
    assert (config.num_frames, config.fps, config.height, config.width) == (81, 16.0, 480, 832)
    assert config.short_clip == "reject"
    assert config.span_seconds == pytest.approx(5.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_frames": 1}, {"fps": 0.0}, {"height": 0}, {"short_clip": "pad"}, {"anchor": "end"}],
)
def test_clip_config_validates_itself(kwargs):
    with pytest.raises(ValueError):
        ClipConfig(**kwargs)


def test_frames_are_taken_at_the_nearest_source_frame_to_each_target_time():
    start = ClipConfig(num_frames=9, fps=16.0, anchor="start")
    # 30 fps → 16 fps: one clip frame every 1.875 source frames
    assert plan_frame_indices(90, 30.0, start) == [0, 2, 4, 6, 8, 9, 11, 13, 15]
    # centred: the 15-frame span sits in the middle of 90 frames (offset (89 − 15)/2 = 37)
    centre = plan_frame_indices(90, 30.0, ClipConfig(num_frames=9, fps=16.0))
    assert centre[0] == 37 and centre[-1] == 52
    # same rate: consecutive frames
    assert plan_frame_indices(9, 16.0, start) == list(range(9))
    # lower source rate: frames repeat
    assert plan_frame_indices(40, 8.0, start) == [0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_short_videos_are_rejected_or_looped():
    config = ClipConfig(num_frames=33, fps=16.0)
    assert len(plan_frame_indices(33, 16.0, config)) == 33
    with pytest.raises(ClipTooShort, match="32 frames"):
        plan_frame_indices(32, 16.0, config)
    loop = ClipConfig(num_frames=33, fps=16.0, short_clip="loop")
    assert plan_frame_indices(20, 16.0, loop) == list(range(20)) + list(range(13))
    # the loop respects the rate: 8 source frames at 32 fps are 4 clip frames at 16 fps
    assert plan_frame_indices(8, 32.0, ClipConfig(num_frames=9, fps=16.0, short_clip="loop")) == [
        0,
        2,
        4,
        6,
        0,
        2,
        4,
        6,
        0,
    ]


def test_resize_keeps_aspect_then_crops_the_centre():
    columns = np.tile(np.arange(200, dtype=np.float32), (100, 1))  # value = source column
    frame = np.repeat(columns[..., None], 3, axis=-1).astype(np.uint8)
    out = resize_center_crop(frame, 50, 50)  # ×0.5 → 50 × 100, keep columns 25..74 → source 50..149
    assert out.shape == (50, 50, 3)
    assert abs(float(out[:, 0].mean()) - 50.5) < 1.0
    assert abs(float(out[:, -1].mean()) - 148.5) < 1.0
    tall = resize_center_crop(np.zeros((300, 100, 3), np.uint8), 64, 128)  # ×1.28 → 384 × 128
    assert tall.shape == (64, 128, 3)


def test_model_range_is_minus_one_to_one_channels_first():
    frames = np.zeros((5, 4, 6, 3), np.uint8)
    frames[:, :, :3] = 255
    video = frames_to_model_range(frames)
    assert video.shape == (3, 5, 4, 6) and video.dtype == torch.float32
    assert video.min() == -1.0 and video.max() == 1.0
    assert torch.all(video[:, :, :, :3] == 1.0) and torch.all(video[:, :, :, 3:] == -1.0)


def test_read_clip_samples_the_planned_frames_at_the_requested_size(tmp_path):
    path = write_indexed_video(tmp_path / "v.mp4", num_frames=60, fps=30.0, height=48, width=80)
    config = ClipConfig(num_frames=17, fps=16.0, height=32, width=40, anchor="start")
    frames = read_clip(str(path), config)
    assert frames.shape == (17, 32, 40, 3) and frames.dtype == np.uint8
    assert [frame_level(f) for f in frames] == plan_frame_indices(60, 30.0, config)
    video = frames_to_model_range(frames)
    assert -1.0 <= float(video.min()) and float(video.max()) <= 1.0


def test_loop_pads_a_short_video_from_its_start(tmp_path):
    path = write_indexed_video(tmp_path / "short.mp4", num_frames=6, fps=16.0)
    frames = read_clip(
        str(path), ClipConfig(num_frames=9, fps=16.0, height=16, width=16, short_clip="loop")
    )
    assert [frame_level(f) for f in frames] == [0, 1, 2, 3, 4, 5, 0, 1, 2]
    with pytest.raises(ClipTooShort):
        read_clip(str(path), ClipConfig(num_frames=9, fps=16.0, height=16, width=16))


def test_all_three_layouts_index_and_read_the_same_clip(tmp_path, wisa_fixture):
    videos = tmp_path / "videos"
    shutil.copytree(wisa_fixture["videos"], videos)
    with zipfile.ZipFile(videos / "000.zip") as archive:  # an unpacked copy as shard folder 001
        good = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] in wisa_fixture["good"]]
        archive.extractall(videos / "001", members=good)
    index = VideoIndex.scan(videos)
    zipped, flat = wisa_fixture["good"][0], wisa_fixture["good"][3]
    assert index.get(zipped).shard == "000" and index.get(zipped).member.endswith(zipped)
    assert index.get(flat).shard == "" and index.get(flat).member is None
    # names in both 000.zip and 001/: the first shard wins, the copy is counted
    assert index.duplicates == 3
    folder_copy = VideoIndex({zipped: VideoIndex.scan(videos / "001").get(zipped)})
    config = ClipConfig(num_frames=9, fps=16.0, height=16, width=16)
    from_zip = read_clip(open_video(index.get(zipped)), config)
    from_folder = read_clip(open_video(folder_copy.get(zipped)), config)
    np.testing.assert_array_equal(from_zip, from_folder)
    assert [frame_level(f) for f in from_zip] == plan_frame_indices(40, 16.0, config)


def test_missing_videos_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="zip shards"):
        VideoIndex.scan(tmp_path / "nowhere")


def test_bad_files_are_rejected_with_their_reason_and_good_ones_load(wisa_fixture):
    index = VideoIndex.scan(wisa_fixture["videos"])
    config = ClipConfig(num_frames=33, fps=16.0, height=16, width=16)
    video_reasons = {k: v for k, v in wisa_fixture["expected"].items() if v.startswith("video_")}
    assert len(video_reasons) == 6
    for name, reason in video_reasons.items():
        record = parse_record(wisa_record(name), 0)
        with pytest.raises(RecordError) as info:
            load_record_clip(record, index.get(name), config)
        assert info.value.rejection.reason == reason, (name, info.value.rejection)
        assert info.value.rejection.video_name == name
    for name in wisa_fixture["good"]:
        clip = load_record_clip(parse_record(wisa_record(name), 0), index.get(name), config)
        assert clip.shape == (33, 16, 16, 3)


def test_a_video_that_ends_before_its_header_says_is_replanned(tmp_path, monkeypatch):
    path = write_indexed_video(tmp_path / "v.mp4", num_frames=40, fps=16.0)
    import pila.datamodules.clips as clips

    # the container claims 60 frames, 40 decode: the clip is planned again on the 40
    monkeypatch.setattr(clips, "_count_frames", lambda source, fallback: (60, 16.0))
    frames = read_clip(str(path), ClipConfig(num_frames=33, fps=16.0, height=16, width=16))
    assert [frame_level(f) for f in frames] == plan_frame_indices(
        40, 16.0, ClipConfig(num_frames=33, fps=16.0)
    )

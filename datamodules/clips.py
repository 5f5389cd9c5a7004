"""Clip sampling with PyAV: fixed frame count and rate, resized and centre-cropped.

Shapes: F pixel frames, H_px, W_px pixel height and width.

A clip is ``num_frames`` frames at ``fps`` frames per second, taken from the source at
the nearest source frame to each target time (so a 30 fps video sampled at 16 fps skips
frames; a 12 fps one repeats some). Each frame is resized keeping its aspect ratio until
it covers ``height × width`` and then centre-cropped. Values go to [-1, 1] with
:func:`frames_to_model_range`.

Where in the video the clip sits (``anchor``): ``"center"`` (default) takes the middle
of the video, ``"start"`` its beginning.

Short videos (fewer usable frames than the clip spans, ``(num_frames − 1)/fps`` seconds)
follow ``short_clip``: ``"reject"`` (default) skips them with reason
``video_too_short``; ``"loop"`` plays the video again from its first frame until the
clip is full (a visible jump at the seam, and a jump in the flow target there).
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from typing import Literal

import av
import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from .records import WisaRecord
from .rejections import RecordError, Rejection
from .sources import VideoRef, open_video

DECODE_ERRORS = (
    av.FFmpegError, OSError, ValueError, EOFError, LookupError, RuntimeError, zipfile.BadZipFile,
)  # fmt: skip
"""Exceptions that mean "this file cannot be decoded" (a rejection, never a crash)."""


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut from videos.

    Args:
        num_frames: F, frames per clip (Wan needs 4k + 1). [paper, Sec. 4.2 and App. B.2:
            81-frame clips]
        fps: frames per second the clip is sampled at. [ours: Wan's native rate, 16; the
            paper states none]
        height: H_px of the output, after resize and centre crop. [ours: Wan 2.1-1.3B's
            480p size; the paper's resolution was lost (Sec. 4.2, App. B.2)]
        width: W_px of the output. [ours: as ``height``, 832]
        short_clip: ``"reject"`` or ``"loop"`` for videos shorter than the clip (module
            docstring). [ours: a looped clip has a seam]
        anchor: ``"center"`` or ``"start"``: where in a longer video the clip is taken.
            [ours: the video's middle, away from fades at its ends]
    """

    num_frames: int = 81
    fps: float = 16.0
    height: int = 480
    width: int = 832
    short_clip: Literal["reject", "loop"] = "reject"
    anchor: Literal["start", "center"] = "center"

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be ≥ 2, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be positive, got {self.height} × {self.width}")
        if self.short_clip not in ("reject", "loop"):
            raise ValueError(f"short_clip must be 'reject' or 'loop', got {self.short_clip!r}")
        if self.anchor not in ("start", "center"):
            raise ValueError(f"anchor must be 'start' or 'center', got {self.anchor!r}")

    @property
    def span_seconds(self) -> float:
        """Seconds of video one clip covers."""
        return (self.num_frames - 1) / self.fps


class ClipTooShort(Exception):
    """The video has fewer usable frames than the clip needs (and ``short_clip='reject'``)."""


def plan_frame_indices(num_source_frames: int, source_fps: float, config: ClipConfig) -> list[int]:
    """Source frame index of each of the clip's F frames.

    Args:
        num_source_frames: frames in the video.
        source_fps: the video's frame rate.
        config: the clip settings.

    Returns:
        F indices in [0, num_source_frames).

    Raises:
        ClipTooShort: the video is shorter than the clip and ``short_clip='reject'``.
        ValueError: the video has no frames or a non-positive rate.
    """
    if num_source_frames < 1:
        raise ValueError("the video has no frames")
    if not source_fps > 0:
        raise ValueError(f"the video's frame rate is {source_fps}")
    step = source_fps / config.fps  # source frames per clip frame
    span = (config.num_frames - 1) * step
    last = num_source_frames - 1
    # clip frames the video can supply (1e-6 absorbs rounding of rates like 29.97)
    available = math.floor(last / step + 1e-6) + 1
    if available >= config.num_frames:
        offset = 0.0 if config.anchor == "start" else (last - span) / 2.0
        positions = [offset + i * step for i in range(config.num_frames)]
    elif config.short_clip == "loop":
        positions = [(i % available) * step for i in range(config.num_frames)]
    else:
        raise ClipTooShort(
            f"{num_source_frames} frames at {source_fps:g} fps give {available} of the "
            f"{config.num_frames} frames needed at {config.fps:g} fps"
        )
    return [min(last, max(0, int(math.floor(p + 0.5)))) for p in positions]


def resize_center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (h, w, 3) keeping the aspect ratio until it covers height × width, then crop the
    centre."""
    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(frame[top : top + height, left : left + width])


def _source_fps(stream, fallback: float | None) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    if fallback:
        return float(fallback)
    raise ValueError("the video stream has no frame rate and the record gives none")


def _count_frames(source: str | io.BytesIO, fallback_fps: float | None) -> tuple[int, float]:
    """(frames, fps) of the first video stream; counts packets when the header has no count."""
    with av.open(source) as container:
        stream = container.streams.video[0]
        fps = _source_fps(stream, fallback_fps)
        count = int(stream.frames or 0)
        if count <= 0:
            count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    return count, fps


def _decode_indices(
    source: str | io.BytesIO, indices: list[int], height: int, width: int
) -> tuple[dict[int, np.ndarray], int]:
    """Decode up to the largest index.

    Returns:
        (resized frames at the wanted indices, number of frames decoded).
    """
    wanted = set(indices)
    last = max(indices)
    out: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(source) as container:
        stream = container.streams.video[0]
        if get_worker_info() is None:
            # in the main process the decoder may use every core; DataLoader workers are
            # the parallelism themselves and decode on one thread each
            stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            decoded = i + 1
            if i in wanted:
                out[i] = resize_center_crop(frame.to_ndarray(format="rgb24"), height, width)
            if i >= last:
                break
    return out, decoded


def read_clip(
    source: str | io.BytesIO, config: ClipConfig, fallback_fps: float | None = None
) -> np.ndarray:
    """Sample one clip from a video with PyAV.

    The frame count comes from the container header (or a packet count); when fewer
    frames decode than the header promised (a truncated file), the clip is planned again
    on the frames that did decode.

    Args:
        source: a path, or an in-memory file (a zip member).
        config: frames, rate, size and the short-clip rule.
        fallback_fps: frame rate to use when the stream declares none (the record's ``fps``).

    Returns:
        (F, H_px, W_px, 3) uint8 RGB.

    Raises:
        ClipTooShort: too few frames and ``short_clip='reject'``.
        av.FFmpegError, ValueError, …: the file cannot be decoded (see :data:`DECODE_ERRORS`).
    """
    count, fps = _count_frames(source, fallback_fps)
    indices = plan_frame_indices(count, fps, config)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    frames, decoded = _decode_indices(source, indices, config.height, config.width)
    if decoded <= max(indices):
        if decoded == 0:
            raise ValueError("no frame could be decoded")
        indices = plan_frame_indices(decoded, fps, config)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        frames, _ = _decode_indices(source, indices, config.height, config.width)
    return np.stack([frames[i] for i in indices])


def frames_to_model_range(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 frames (F, H_px, W_px, 3) → float32 video (3, F, H_px, W_px) in [-1, 1]."""
    video = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, Tensor) else frames
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames (F, H, W, 3), got {video.dtype} {tuple(video.shape)}"
        )
    return video.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)  # (3, F, H_px, W_px)


def load_record_clip(record: WisaRecord, ref: VideoRef | None, config: ClipConfig) -> np.ndarray:
    """The clip of one record, or a :class:`RecordError` saying why there is none.

    Returns:
        (F, H_px, W_px, 3) uint8.

    Raises:
        RecordError: with reason ``video_missing``, ``video_empty``, ``video_undecodable``
            or ``video_too_short``.
    """

    def reject(reason: str, detail: str) -> RecordError:
        return RecordError(Rejection(record.video_name, reason, detail, record.index))

    if ref is None:
        raise reject("video_missing", "not found under the videos folder")
    if ref.size == 0:
        raise reject("video_empty", ref.describe())
    try:
        source = open_video(ref)
    except FileNotFoundError as err:
        raise reject("video_missing", str(err)) from err
    except DECODE_ERRORS as err:
        raise reject("video_undecodable", f"{ref.describe()}: {err}") from err
    try:
        return read_clip(source, config, fallback_fps=record.number("fps"))
    except ClipTooShort as err:
        raise reject("video_too_short", str(err)) from err
    except DECODE_ERRORS as err:
        raise reject("video_undecodable", f"{ref.describe()}: {type(err).__name__}: {err}") from err

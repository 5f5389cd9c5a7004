"""Atomic file writes and video encoding (PyAV).

Every file the project writes goes through a temporary sibling and ``os.replace``, so a
killed process leaves either the old file or the new one, never a truncated one. The
temporary file is created with the process's umask (0644 under the usual 022), as a
plain ``open`` would, so caches, adapters and videos are readable by whoever the umask
lets read them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the final destination.
        suffix: the temporary file's suffix (default: ``path``'s, so encoders that pick a
            format from the extension see the right one).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(final, final.suffix if suffix is None else suffix)
    mode = stat.S_IMODE(tmp_path.stat().st_mode)  # 0o666 less the umask
    try:
        yield tmp_path
        # Some writers replace the file with one of their own (safetensors writes 0600).
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it takes ``path``'s place.

    For writers that fill a whole folder themselves (diffusers' ``save_pretrained``): every
    file and folder they wrote gets the mode the umask gives (safetensors creates its files
    0600), then the folder is renamed into place. An existing ``path`` is moved aside first
    and removed after, so a killed process leaves the old folder or the new one, never a
    half-written one (at worst the old one under a ``.<name>.<random>.old`` sibling). On an
    exception the temporary folder is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(final, ".partial")
    tmp.unlink()
    tmp.mkdir()  # 0o777 less the umask
    mask = 0o777 & ~stat.S_IMODE(tmp.stat().st_mode)
    try:
        yield tmp
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(Path(root) / name, 0o777 & ~mask)
            for name in files:
                os.chmod(Path(root) / name, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.{secrets.token_hex(4)}.old"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _create_temporary(final: Path, suffix: str) -> Path:
    """Create ``.<name>.<random><suffix>`` next to ``final``, exclusively, honouring the umask.

    ``tempfile.mkstemp`` would create it with mode 0600 whatever the umask; ``os.open`` with
    0o666 lets the umask decide, as for any other file the process creates.
    """
    for _ in range(100):
        candidate = final.parent / f".{final.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"could not create a temporary file next to {final}")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a UTF-8 JSON file (the counterpart of :func:`write_json_atomic`).

    A malformed file raises ``json.JSONDecodeError``; a missing one ``FileNotFoundError``.
    """
    return json.loads(Path(path).read_text(encoding="utf-8"))


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames (F, H, W, 3) in [0, 1] → uint8 (values outside are clipped)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (F, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 16.0,
    *,
    codec: str = "libx264",
    crf: int = 18,
) -> Path:
    """Encode frames as an H.264 mp4 with PyAV, atomically.

    Args:
        path: destination ``.mp4``.
        frames: (F, H, W, 3) float in [0, 1] or uint8. Odd sizes are padded by one
            pixel (edge-replicated) because yuv420p needs even dimensions.
        fps: frames per second of the file.
        codec: PyAV encoder name.
        crf: constant-rate factor for x264 (lower is better quality).

    Returns:
        The final path.
    """
    data = frames_to_uint8(np.asarray(frames))
    pad_h, pad_w = data.shape[1] % 2, data.shape[2] % 2
    if pad_h or pad_w:
        data = np.pad(data, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        encode_mp4(str(tmp), data, fps=fps, codec=codec, crf=crf)
    return Path(path)


X264_PLAIN_C_AREA = 256 * 256
"""Ours: frames of at most this many pixels are encoded by x264 without its SIMD code
(``asm=0``). There x264 is not repeatable: the same 64 × 64 clip encoded in one process gave
different videos from call to call (5 encodes, 5 videos; at 80, 96 and 112 px too, at 128
and 256 px one), and the lab's videos and its ruler's codec round trips are 64 × 64. Without
SIMD every encode of a clip is the same video, at about 3× the time (40 ms for 33 frames of
64 × 64). Larger frames keep x264's own code."""


def encode_mp4(
    target: Any, data: np.ndarray, *, fps: float, codec: str = "libx264", crf: int = 18
) -> None:
    """Encode (F, H, W, 3) uint8 frames (even H and W) as an mp4 into ``target``: a path or a
    writable binary file object (e.g. ``io.BytesIO`` for an in-memory round trip).

    Small frames (:data:`X264_PLAIN_C_AREA`) are encoded without x264's SIMD code, so that
    the same frames always give the same video."""
    with av.open(target, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=_fps_fraction(fps))
        stream.width, stream.height = data.shape[2], data.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            options = {"crf": str(crf)}
            if data.shape[1] * data.shape[2] <= X264_PLAIN_C_AREA:
                options["x264-params"] = "asm=0"
            stream.options = options
        for frame in data:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole video with PyAV: (F, H, W, 3) uint8 frames and the stream's fps."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not frames:
        raise ValueError(f"{path} holds no decodable video frames")
    return np.stack(frames), fps


def _fps_fraction(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a hub repository id (``owner/name``) rather than a local path.

    A value starting with ``.``, ``/`` or ``~``, holding a backslash or more than one ``/``,
    or whose first component exists here (``checkpoints/Wan2.1-…`` next to a ``checkpoints``
    folder) is a path, so a missing one is reported as "folder not found", not as a failed
    download. What remains must also be a valid repository id.
    """
    if name.count("/") != 1 or "\\" in name or name.startswith((".", "/", "~")):
        return False
    if os.path.exists(name) or os.path.exists(name.split("/", 1)[0]):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True

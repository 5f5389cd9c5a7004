"""Fixtures in WISA-80K's real format, generated here: mp4s (PyAV), one zip shard, one flat folder.

Every video's frame k is filled with grey level ``LEVEL_STEP·k`` plus a fixed texture, so a
decoded frame tells which source frame it came from (:func:`frame_level`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pila.datamodules.clips import ClipConfig
from pila.datamodules.prepare import PrepareConfig
from pila.io import write_video

LEVEL_STEP = 5
"""Grey-level step between consecutive source frames."""


def indexed_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8 frames whose mean level is LEVEL_STEP·k (+ a zero-mean texture)."""
    yy, xx = np.mgrid[0:height, 0:width]
    texture = (8 * np.sign(np.sin(xx / 3.0) * np.sin(yy / 3.0))).astype(np.int16)  # ±8
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for k in range(num_frames):
        frames[k] = np.clip(20 + LEVEL_STEP * k + texture, 0, 255)[..., None]
    return frames


def frame_level(frame: np.ndarray) -> int:
    """Which source frame a decoded (resized) frame came from."""
    return round((float(frame.mean()) - 20) / LEVEL_STEP)


def write_indexed_video(
    path: Path, num_frames: int, fps: float, height: int = 48, width: int = 80
) -> Path:
    return write_video(path, indexed_frames(num_frames, height, width), fps=fps, crf=10)


def wisa_record(name: str, **overrides: Any) -> dict[str, Any]:
    """A WISA-80K record with the real field names."""
    record = {
        "video_name": name,
        "label": "Collision",
        "width": 80,
        "height": 48,
        "fps": 16.0,
        "duration": 3.0,
        "motion_score": 0.8,
        "motion_score_v2": 1.1,
        "visual_quality_score": 5.0,
        "text_bbox_num": 0,
        "text_bbox_ratio": 0.0,
        "captions": f"Two balls collide on a table ({name[:6]}).",
        "physical_annotation": {
            "phys_law": "momentum is conserved",
            "q0": "collision, rigid body motion",
            "q1": "No obvious thermodynamic phenomenon",
            "q2": "No obvious optical phenomenon",
            "q3": "no",
            "q4": "1. no change",
            "n0": "wood: 0.7 g/cm³",
            "n1": "1 to 2 seconds",
            "n2": "20 degrees celsius",
            "quantify_n0": [[0.7, 0.7]],
            "quantify_n1": [1, 2],
            "quantify_n2": [20, 20],
        },
    }
    record.update(overrides)
    return record


def sha_name(i: int) -> str:
    return f"{i:064x}.mp4"


def build_wisa_fixture(root: Path, num_frames: int = 40, fps: float = 16.0) -> dict[str, Any]:
    """A small WISA-format dataset with good and bad entries.

    Layout::

        root/annotations.json
        root/videos/000.zip        members under long nested folders (good 0–2, a corrupt member)
        root/videos/<name>.mp4     flat: good 3–5, an empty file, a truncated file, garbage,
                                   a short clip

    Returns:
        ``annotations``, ``videos``, ``good`` (names that must load) and ``expected``
        (name → rejection reason for every bad entry).
    """
    videos = root / "videos"
    videos.mkdir(parents=True)
    staging = root / "staging"
    staging.mkdir()
    good = [sha_name(i) for i in range(6)]
    for name in good:
        write_indexed_video(staging / name, num_frames, fps)
    corrupt_member = sha_name(100)
    write_indexed_video(staging / corrupt_member, num_frames, fps)
    with zipfile.ZipFile(videos / "000.zip", "w", compression=zipfile.ZIP_STORED) as archive:
        for name in good[:3]:
            archive.write(staging / name, f"data/videos/raw/shard_000/clips/{name}")
        archive.write(staging / corrupt_member, f"data/videos/raw/shard_000/clips/{corrupt_member}")
    # zero bytes in the middle of the stored member: its CRC no longer matches
    with zipfile.ZipFile(videos / "000.zip") as archive:
        info = archive.getinfo(f"data/videos/raw/shard_000/clips/{corrupt_member}")
    blob = bytearray((videos / "000.zip").read_bytes())
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = data_start + info.compress_size // 2
    blob[middle : middle + 64] = bytes(64)
    (videos / "000.zip").write_bytes(bytes(blob))
    for name in good[3:]:
        (staging / name).rename(videos / name)

    empty, truncated, garbage, short = sha_name(200), sha_name(201), sha_name(202), sha_name(203)
    (videos / empty).write_bytes(b"")
    full = (staging / good[0]).read_bytes()
    (videos / truncated).write_bytes(full[: len(full) // 3])
    (videos / garbage).write_bytes(b"this is not a video file at all" * 50)
    write_indexed_video(videos / short, 8, fps)

    records = [wisa_record(name) for name in good]
    records[1]["label"] = "melting"
    records[1]["captions"] = "An ice cube melts in a warm pan."
    records[1]["physical_annotation"]["q0"] = "No obvious dynamic phenomenon"
    records[1]["physical_annotation"]["q1"] = "melting"
    records[4]["label"] = "Reflection"
    records[4]["captions"] = "A lamp is reflected in a still window."
    records[4]["physical_annotation"]["q0"] = "No obvious dynamic phenomenon"
    records[4]["physical_annotation"]["q2"] = "reflection"
    expected = {
        corrupt_member: "video_undecodable",
        empty: "video_empty",
        truncated: "video_undecodable",
        garbage: "video_undecodable",
        short: "video_too_short",
        sha_name(300): "video_missing",
        sha_name(301): "duration_out_of_range",
        sha_name(302): "too_many_text_boxes",
        sha_name(303): "missing_field",
        sha_name(304): "malformed_field",
        sha_name(305): "unlabeled",
    }
    records += [
        wisa_record(n) for n in (corrupt_member, empty, truncated, garbage, short, sha_name(300))
    ]
    records.append(wisa_record(sha_name(301), duration=12.5))
    records.append(wisa_record(sha_name(302), text_bbox_num=3))
    bad = wisa_record(sha_name(303))
    del bad["captions"]
    records.append(bad)
    records.append(wisa_record(sha_name(304), duration="three seconds"))
    records.append(
        wisa_record(
            sha_name(305),
            label="something else",
            captions="A quiet empty room.",
            physical_annotation={
                "q0": "No obvious dynamic phenomenon",
                "q1": "none",
                "q2": "No obvious optical phenomenon",
            },
        )
    )
    records.append(["not", "a", "record"])
    annotations = root / "annotations.json"
    annotations.write_text(json.dumps(records))
    return {
        "annotations": annotations,
        "videos": videos,
        "good": good,
        "expected": expected,
        "staging": staging,
    }


CLIP = ClipConfig(num_frames=17, fps=16.0, height=32, width=48)
"""Clip settings of the cache tests (latents 16 × 5 × 4 × 6)."""


def prepare_config(fixture: dict[str, Any], out: Path, **kwargs: Any) -> PrepareConfig:
    """A ``pila prepare`` config over :func:`build_wisa_fixture`'s dataset, CPU, float32 cache."""
    settings: dict[str, Any] = dict(
        annotations=str(fixture["annotations"]),
        videos=str(fixture["videos"]),
        out=str(out),
        clip=CLIP,
        shard_size=4,
        workers=0,
        device="cpu",
        storage_dtype="float32",
    )
    settings.update(kwargs)
    return PrepareConfig(**settings)

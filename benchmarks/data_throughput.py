"""Data throughput: raw decode + resize against reading the ``pila prepare`` cache, same clips.

For each preset the script writes source videos, builds their cache with the tiny
backbone (``prepare_cache``, the code behind ``pila prepare``), then times on the same
clips, in one process, one after the other:

1. raw: PyAV decode + resize/crop to the clip size + conversion to [-1, 1] (what
   ``encode_on_the_fly`` does per clip before the VAE even runs);
2. the flow target of each clip (Farneback + latent-grid resampling);
3. the cache: reading each clip's latents, flow, text embeddings and labels (what
   training does by default), and the sha256 check of the shards.

Presets:

``tiny``   the synthetic default of the demo: 64 × 64 sources, clips of 33 frames at 64 × 64.
``paper``  720p 30 fps sources of 6 s, clips of 81 frames at 16 fps, 480 × 832 (App. B.2).
           Sources are rendered at 180 × 320 and upscaled to 1280 × 720 before H.264
           encoding, so their decode cost is that of 720p video.

Usage::

    python benchmarks/data_throughput.py                       # both presets
    python benchmarks/data_throughput.py --preset tiny --clips 32

Results go to ``benchmarks/results/data_throughput.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from pila.datamodules.cache import CachedClips, read_manifest, verify_cache
from pila.datamodules.clips import ClipConfig, frames_to_model_range, load_record_clip
from pila.datamodules.flow_targets import FlowConfig, flow_target
from pila.datamodules.prepare import PrepareConfig, load_records, prepare_cache
from pila.datamodules.records import FilterConfig
from pila.datamodules.sources import VideoIndex
from pila.datamodules.synthetic import SyntheticConfig, clip_name, render_clip, wisa_record
from pila.io import write_json_atomic, write_text_atomic
from pila.lab.scenes import SCENES

log = logging.getLogger("benchmarks.data_throughput")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Preset:
    """Source videos and clip settings of one benchmark case."""

    name: str
    clips: int
    render_size: tuple[int, int]  # (H, W) the scenes are drawn at
    source_size: tuple[int, int]  # (H, W) of the written video
    source_fps: float
    source_frames: int
    clip: ClipConfig


PRESETS = {
    "tiny": Preset(
        "tiny",
        32,
        (64, 64),
        (64, 64),
        16.0,
        33,
        ClipConfig(num_frames=33, fps=16.0, height=64, width=64),
    ),
    "paper": Preset("paper", 4, (180, 320), (720, 1280), 30.0, 180, ClipConfig()),
}


def write_sources(preset: Preset, folder: Path) -> Path:
    """Render the preset's clips, encode them with PyAV at source size; return the annotation."""
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    h, w = preset.render_size
    config = SyntheticConfig(
        num_frames=preset.source_frames, fps=preset.source_fps, height=h, width=w
    )
    scenes = list(SCENES)
    records = []
    for i in range(preset.clips):
        scene, index = scenes[i % len(scenes)], i // len(scenes)
        clip = render_clip(scene, index, config)
        name = clip_name(scene, index, config)
        with av.open(str(videos / name), mode="w") as container:
            stream = container.add_stream(
                "libx264", rate=Fraction(preset.source_fps).limit_denominator(1001)
            )
            stream.height, stream.width = preset.source_size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
            for frame in clip.frames:
                pixels = (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)
                if (h, w) != preset.source_size:
                    pixels = cv2.resize(
                        pixels, preset.source_size[::-1], interpolation=cv2.INTER_CUBIC
                    )
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        record = wisa_record(name, scene, index, clip, config)
        record.update(height=preset.source_size[0], width=preset.source_size[1])
        records.append(record)
    annotation = folder / "annotations.json"
    write_json_atomic(annotation, records)
    return annotation


def run_preset(preset: Preset, work: Path) -> dict:
    """Time raw decode, flow targets and cache reads on the preset's clips."""
    log.info(
        "[%s] writing %d source videos (%d × %d, %d frames)",
        preset.name,
        preset.clips,
        *preset.source_size,
        preset.source_frames,
    )
    annotation = write_sources(preset, work)
    config = PrepareConfig(
        annotations=str(annotation),
        videos=str(work / "videos"),
        out=str(work / "cache"),
        clip=preset.clip,
        filters=FilterConfig(min_duration=None, max_duration=None, max_text_boxes=None),
        workers=0,
        device="cpu",
        shard_size=16,
        encode_batch_size=1 if preset.name == "paper" else 4,
    )
    log.info("[%s] building the cache with the tiny backbone", preset.name)
    start = time.perf_counter()
    summary = prepare_cache(config)
    prepare_seconds = time.perf_counter() - start
    if summary.num_clips != preset.clips:
        raise RuntimeError(
            f"expected {preset.clips} cached clips, got {summary.num_clips} ({summary.rejected})"
        )

    records, _, _, _ = load_records(config)
    index = VideoIndex.scan(config.videos)

    # 1. raw decode + resize + [-1, 1]
    frames_per_clip, raw_seconds = [], []
    for record in records:
        t0 = time.perf_counter()
        frames = load_record_clip(record, index.get(record.video_name), config.clip)
        video = frames_to_model_range(frames)
        raw_seconds.append(time.perf_counter() - t0)
        frames_per_clip.append(frames)
        del video

    # 2. flow targets of the same clips
    flow_seconds = []
    for frames in frames_per_clip:
        t0 = time.perf_counter()
        flow_target(frames, FlowConfig())
        flow_seconds.append(time.perf_counter() - t0)
    del frames_per_clip

    # 3. the cache: checksum pass, then every clip read
    manifest = read_manifest(config.out)
    t0 = time.perf_counter()
    verify_cache(config.out, manifest, threads=1)
    verify_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    dataset = CachedClips(config.out, verify=False, manifest=manifest)
    read_seconds = []
    for i in range(len(dataset)):
        t1 = time.perf_counter()
        item = dataset[i]
        read_seconds.append(time.perf_counter() - t1)
        del item
    cache_total = time.perf_counter() - t0
    cache_bytes = sum(e["bytes"] for e in manifest["shards"])

    raw_total = sum(raw_seconds)
    return {
        "preset": preset.name,
        "clips": preset.clips,
        "source": {
            "height": preset.source_size[0],
            "width": preset.source_size[1],
            "fps": preset.source_fps,
            "frames": preset.source_frames,
            "codec": "libx264 crf 18",
        },
        "clip": {
            "num_frames": preset.clip.num_frames,
            "fps": preset.clip.fps,
            "height": preset.clip.height,
            "width": preset.clip.width,
        },
        "latent_shape": manifest["latent_shape"],
        "storage_dtype": manifest["storage_dtype"],
        "raw_decode_resize": {
            "clips_per_s": preset.clips / raw_total,
            "ms_per_clip_median": 1000 * statistics.median(raw_seconds),
        },
        "flow_target": {
            "ms_per_clip_mean": 1000 * statistics.fmean(flow_seconds),
            "ms_per_clip_median": 1000 * statistics.median(flow_seconds),
        },
        "cache_read": {
            "clips_per_s": preset.clips / cache_total,
            "ms_per_clip_median": 1000 * statistics.median(read_seconds),
            "index_and_read_seconds": cache_total,
            "sha256_check_seconds": verify_seconds,
            "bytes_per_clip": cache_bytes / preset.clips,
        },
        "speedup_cache_vs_raw": (preset.clips / cache_total) / (preset.clips / raw_total),
        "prepare": {
            "seconds": prepare_seconds,
            "clips_per_s": preset.clips / prepare_seconds,
            "note": "tiny backbone on CPU, includes building it",
        },
    }


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Data throughput",
        "",
        f"`{results['command']}` — {env['date']}, {env['cpu_count']} CPU cores, torch "
        f"{env['torch']} "
        f"({env['torch_threads']} threads), PyAV {env['av']}, OpenCV {env['opencv']}, load average "
        f"at start {env['load_average']}.",
        "",
        "Same clips, one run, one process, no DataLoader workers. *Raw* is PyAV decode + "
        "resize/crop +",
        "conversion to [-1, 1] (before any VAE); *cache* reads a clip's latents, flow, text "
        "embeddings and",
        "labels from the `pila prepare` shards (memory-mapped safetensors) right after they were "
        "written,",
        "so from the page cache: a cold disk adds the time to read *cache bytes/clip*. The machine "
        "was shared",
        "(see the load average), so take the absolute numbers as rough; the ratio is the point.",
        "",
        "| preset | clip | source | raw decode+resize (clips/s) | cache read (clips/s) | cache / "
        "raw | flow target (ms/clip) | sha256 check (s) | cache bytes/clip |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["presets"]:
        c, s = r["clip"], r["source"]
        lines.append(
            f"| {r['preset']} | {c['num_frames']}×{c['height']}×{c['width']} @ {c['fps']:g} fps | "
            f"{s['width']}×{s['height']} @ {s['fps']:g} fps, {s['frames']} frames | "
            f"{r['raw_decode_resize']['clips_per_s']:.1f} | {r['cache_read']['clips_per_s']:.0f} | "
            f"{r['speedup_cache_vs_raw']:.0f}× | {r['flow_target']['ms_per_clip_mean']:.0f} | "
            f"{r['cache_read']['sha256_check_seconds']:.3f} | "
            f"{r['cache_read']['bytes_per_clip'] / 1024:.0f} KiB |"
        )
    lines += ["", "Building the cache (tiny backbone on CPU, building the backbone included):", ""]
    for r in results["presets"]:
        lines.append(
            f"- {r['preset']}: {r['prepare']['seconds']:.1f} s for {r['clips']} clips "
            f"({r['prepare']['clips_per_s']:.2f} clips/s)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=[*PRESETS, "all"],
        default="all",
        help="which case to run (default: all)",
    )
    parser.add_argument(
        "--clips", type=int, default=None, help="clips per preset (default: 32 tiny, 4 paper)"
    )
    parser.add_argument(
        "--out", default=str(RESULTS / "data_throughput"), help="results path without extension"
    )
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the .md from an existing .json (no timing)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.render_only:
        write_text_atomic(
            f"{args.out}.md", markdown(json.loads(Path(f"{args.out}.json").read_text()))
        )
        return 0
    names = list(PRESETS) if args.preset == "all" else [args.preset]
    results = {
        "command": "python benchmarks/data_throughput.py"
        + (
            ""
            if argv is None and len(sys.argv) == 1
            else " " + " ".join(argv if argv is not None else sys.argv[1:])
        ),
        "environment": {
            "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "av": av.__version__,
            "opencv": cv2.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "presets": [],
    }
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        for name in names:
            preset = PRESETS[name]
            if args.clips is not None:
                preset = Preset(**{**preset.__dict__, "clips": args.clips})
            results["presets"].append(run_preset(preset, Path(scratch) / name))
    write_json_atomic(f"{args.out}.json", results)
    write_text_atomic(f"{args.out}.md", markdown(results))
    log.info("%s", markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Seconds per lab video against the batch size of ``pila predict`` (``--predict-batch``).

``pila lab ablate`` spends most of each run generating its evaluation set (128 videos of
33 × 64 × 64 frames, 25 steps, guidance 2.0 on the lab world). One video leaves a CPU's
matrix units half idle: the transformer's token count is 144 and the VAE decodes one clip at
a time. This benchmark generates the same videos (the first ``--videos`` of evaluation set
a, each with its record's own seed) through :func:`pila.generate` at each batch size, the
sizes taking turns over ``--reps`` rounds so that load on the machine falls on all of them;
it reports each size's median seconds per video, its ratio to one at a time, and the largest
frame difference from the one-at-a-time videos (batched matrix products sum in another
order; the noise and the conditions are each video's own).

Run (writes ``benchmarks/results/lab_predict_batch.json`` and ``.md``)::

    .venv/bin/python benchmarks/lab_predict_batch.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pila.io import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
# the lab's evaluation settings (lightning_configs/lab/predict.yaml)
LAB_SETTINGS = {
    "height": 64,
    "width": 64,
    "num_frames": 33,
    "num_inference_steps": 25,
    "guidance_scale": 2.0,
    "shift": 3.0,
    "max_sequence_length": 512,
}
log = logging.getLogger("lab_predict_batch")


def evaluation_records(count: int) -> list[dict[str, Any]]:
    """The first ``count`` records of evaluation set a, taken round-robin over its scenes."""
    from pila.lab.evalset import EVAL_SETS, read_records

    records = read_records(EVAL_SETS["a"].path)
    by_scene: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_scene.setdefault(record["scene"], []).append(record)
    chosen: list[dict[str, Any]] = []
    for i in range(count):
        scene = list(by_scene)[i % len(by_scene)]
        chosen.append(by_scene[scene][i // len(by_scene)])
    return chosen


def measure(batches: list[int], videos: int, reps: int) -> dict[str, Any]:
    from pila.backbone.wan import load_backbone
    from pila.generation.sampling import generate

    backbone = load_backbone("lab", dtype=torch.float32)
    records = evaluation_records(videos)
    prompts = [r["prompt"] for r in records]
    seeds = [int(r["seed"]) for r in records]
    generate(backbone, prompts[:1], seed=seeds[:1], **LAB_SETTINGS)  # warm-up
    seconds: dict[int, list[float]] = {b: [] for b in batches}
    frames: dict[int, list[np.ndarray]] = {}
    for rep in range(reps):
        order = batches if rep % 2 == 0 else batches[::-1]
        for batch in order:
            start = time.perf_counter()
            out = generate(backbone, prompts, seed=seeds, batch_size=batch, **LAB_SETTINGS)
            seconds[batch].append((time.perf_counter() - start) / videos)
            frames.setdefault(batch, out)
            log.info("round %d, batch %d: %.2f s a video", rep + 1, batch, seconds[batch][-1])
    reference = frames[batches[0]]
    rows = []
    for batch in batches:
        median = statistics.median(seconds[batch])
        diff = max(
            float(np.abs(a - b).max()) for a, b in zip(frames[batch], reference, strict=True)
        )
        rows.append(
            {
                "batch": batch,
                "seconds_per_video": round(median, 3),
                "ratio_to_first": round(median / statistics.median(seconds[batches[0]]), 3),
                "max_frame_difference": diff,
                "all_seconds": [round(s, 3) for s in seconds[batch]],
            }
        )
    return {"rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Lab generation: seconds per video against the batch size",
        "",
        f"Command: `{result['command']}`. {result['machine']}, torch {result['torch']}, "
        f"{result['threads']} threads; load average {result['load_average_at_start']} at the "
        f"start (another lab job on the same cores counts in it). {result['videos']} videos of "
        "evaluation set a (33 × 64 × 64, 25 steps, guidance 2.0, the lab world, no adapter), "
        f"each batch size {result['reps']} times, in turns; medians.",
        "",
        "| videos per call | seconds per video | ratio to one at a time | max frame difference |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['batch']} | {row['seconds_per_video']:.3f} | {row['ratio_to_first']:.2f} "
            f"| {row['max_frame_difference']:.1e} |"
        )
    lines += [
        "",
        "Frame differences are on [0, 1] frames before the mp4's 8-bit quantisation, against "
        "the videos generated one at a time.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4,8,16", help="batch sizes, the first the base")
    parser.add_argument("--videos", type=int, default=16, help="videos per measurement")
    parser.add_argument("--reps", type=int, default=2, help="measurements per batch size")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    result: dict[str, Any] = {
        "command": "python benchmarks/lab_predict_batch.py"
        + f" --batches {args.batches} --videos {args.videos} --reps {args.reps}"
        + (f" --threads {args.threads}" if args.threads else ""),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "videos": args.videos,
        "reps": args.reps,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    start = time.perf_counter()
    result.update(measure(batches, args.videos, args.reps))
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "lab_predict_batch.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(args.out / "lab_predict_batch.md", markdown(result))
    log.info("%s", markdown(result))


if __name__ == "__main__":
    main()

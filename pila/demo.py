"""``pila demo``: the main job end to end on the embedded tiny default.

Runs on a CPU with nothing downloaded and leaves everything in one output folder. What
it runs grows with the project; today: the tiny Wan preset is built, saved as a
diffusers folder, loaded back, and used to generate a few short clips written as mp4.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from pila.backbone import WanBackbone
from pila.io import write_json_atomic, write_video

log = logging.getLogger("pila.demo")

DEMO_PROMPTS = (
    "A rubber ball falls onto a wooden floor and bounces twice.",
    "Blue dye swirls as it is carried along by flowing water.",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pila demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny backbone and the noise")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=17, help="frames per clip, 4k+1 (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="height and width in pixels (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=8.0, help="fps of the written mp4s (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out).resolve()
    start = time.perf_counter()

    backbone_dir = out / "backbone"
    if not (backbone_dir / "model_index.json").exists():
        log.info("building the tiny Wan backbone → %s", backbone_dir)
        WanBackbone.tiny(seed=args.seed).save_pretrained(backbone_dir)
    backbone = WanBackbone.from_pretrained(backbone_dir)

    videos = out / "videos"
    for i, prompt in enumerate(DEMO_PROMPTS):
        frames = backbone.pipeline(
            prompt,
            num_frames=args.frames,
            height=args.size,
            width=args.size,
            num_inference_steps=args.steps,
            generator=torch.Generator().manual_seed(args.seed + i),
            output_type="np",
        ).frames[0]
        path = write_video(videos / f"video_{i:03d}.mp4", frames, fps=args.fps)
        write_json_atomic(path.with_suffix(".json"), {"prompt": prompt, "seed": args.seed + i, "steps": args.steps})
        log.info("wrote %s", path)

    log.info("demo finished in %.1f s; outputs in %s", time.perf_counter() - start, out)
    return 0

"""The lab world's quality, measured with the ruler (issue: the physics lab, part 1).

What it measures, on clips and prompts disjoint from the world's training clips:

1. **VAE**: PSNR of the world's VAE on held-out ground-truth clips, and the ruler's
   violation on the reconstructions against the originals (the VAE must not break the
   ruler: a reconstruction of a law-abiding clip should still read as law-abiding).
2. **Generator**: one video per scene × sampling seed from the held-out clips' prompts
   (``pila.generate``, no adapter). Scene fidelity (the ruler's probability of the
   prompted scene, and top-1 accuracy of its scene classifier) and the violation of
   generated videos against ground truth, per scene. The gap between them is what a
   physics adapter can close.

Usage::

    .venv/bin/python benchmarks/lab_world.py                      # the shipped world, 8 seeds
    .venv/bin/python benchmarks/lab_world.py --seeds 2 --heldout 1 --out /tmp/w.md   # quick look

Results: ``benchmarks/results/lab_world.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pila.backbone import WanBackbone
from pila.generation import generate
from pila.io import write_json_atomic, write_text_atomic
from pila.lab.ablate import LAB_CONFIGS
from pila.lab.evaluate import write_strips
from pila.lab.ruler import measure, scene_probabilities
from pila.lab.scenes import SCENES, render_indexed
from pila.lab.world import HELDOUT_INDEX_OFFSET

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "lab_world.md"
FIGURE = REPO / "docs" / "figures" / "lab_vae_reconstructions.png"
NUM_FRAMES, SIZE = 33, 64  # the lab size (ours)
LAB_SAMPLING = yaml.safe_load((LAB_CONFIGS / "predict.yaml").read_text())["model"]["init_args"][
    "sampling"
]
"""The lab's sampling settings (``lightning_configs/lab/predict.yaml``).

The demo and ``pila lab ablate`` draw with them.
"""


def heldout_clip(scene: str, index: int, seed: int = 0):
    """Held-out clip ``index`` of ``scene``: the world's rendering, past the training indices."""
    return render_indexed(scene, HELDOUT_INDEX_OFFSET + index, seed, NUM_FRAMES, SIZE, SIZE)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@torch.no_grad()
def reconstruct(backbone: WanBackbone, frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) in [0, 1] → the VAE's reconstruction, same shape."""
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None] * 2 - 1  # (1, 3, F, H, W) in [-1, 1]
    out = backbone.decode_latents(backbone.encode_video(video.to(backbone.device, torch.float32)))
    return ((out[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) / 2).cpu().numpy()


def portable(value) -> str:
    """A value as recorded: a path inside the repository relative to it (results name no host)."""
    if isinstance(value, Path) and value.resolve().is_relative_to(REPO):
        return value.resolve().relative_to(REPO).as_posix()
    return str(value)


def arg_text(value) -> str:
    """A command-line value as it is typed (a list comma-separated)."""
    return ",".join(f"{v:g}" for v in value) if isinstance(value, list) else portable(value)


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def generated(
    backbone: WanBackbone, scene: str, guidance: float, seeds: int, steps: int
) -> tuple[dict[str, float], list[dict], np.ndarray]:
    """The world's videos of ``scene`` (one per sampling seed, held-out prompts), ruler-measured.

    Returns the scene's row (violation mean and median, fidelity, top-1), one record per
    video, and the first video's frames (for the figure).
    """
    viol, fid, top1, records, first = [], [], [], [], None
    for s in range(seeds):
        prompt = heldout_clip(scene, s).prompt
        frames = generate(
            backbone.pipeline,
            [prompt],
            seed=s,
            num_inference_steps=steps,
            guidance_scale=guidance,
            num_frames=NUM_FRAMES,
            height=SIZE,
            width=SIZE,
        )[0]
        first = frames if first is None else first
        result = measure(frames, scene)
        probs = scene_probabilities(frames)
        viol.append(result.violation)
        fid.append(result.fidelity)
        top1.append(float(max(probs, key=probs.get) == scene))
        records.append(
            {
                "scene": scene,
                "seed": s,
                "guidance": guidance,
                "prompt": prompt,
                "violation": result.violation,
                "fidelity": result.fidelity,
                "top1": probs,
            }
        )
    row = {
        "gen_violation": mean(viol),
        "gen_violation_median": float(np.median(viol)),
        "fidelity": mean(fid),
        "top1": mean(top1),
    }
    return row, records, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--world", default="lab", help="backbone to measure (default: the shipped lab world)"
    )
    parser.add_argument(
        "--heldout", type=int, default=4, help="held-out clips per scene for the VAE"
    )
    parser.add_argument("--seeds", type=int, default=8, help="sampling seeds per scene")
    parser.add_argument(
        "--steps",
        type=int,
        default=LAB_SAMPLING["num_inference_steps"],
        help="denoising steps (default: the lab's predict.yaml)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=LAB_SAMPLING["guidance_scale"],
        help="guidance scale (default: the lab's predict.yaml)",
    )
    parser.add_argument(
        "--sweep",
        type=lambda text: [float(v) for v in text.split(",") if v],
        default=[1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0],
        help=(
            "guidance scales to compare (fidelity and violation of generated videos per scale); "
            "empty: none"
        ),
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--figure",
        type=Path,
        default=FIGURE,
        help="ground truth, reconstruction and generated frames per scene",
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    backbone = WanBackbone.from_pretrained(args.world)
    rows: dict[str, dict[str, float]] = {}
    videos = []
    strips: list[tuple[str, np.ndarray]] = []
    start = time.perf_counter()
    for scene in SCENES:
        gt_v, rec_v, psnrs = [], [], []
        for i in range(args.heldout):
            clip = heldout_clip(scene, i)
            rec = reconstruct(backbone, clip.frames)
            if i == 0:
                strips += [(f"{scene}\nground truth", clip.frames), (f"{scene}\nVAE", rec)]
            psnrs.append(psnr(clip.frames, rec))
            gt_v.append(measure(clip.frames, scene).violation)
            rec_v.append(measure(rec, scene).violation)
        gen, scene_videos, first = generated(backbone, scene, args.guidance, args.seeds, args.steps)
        strips.append((f"{scene}\ngenerated", first))
        videos += scene_videos
        rows[scene] = {
            "psnr": mean(psnrs),
            "gt_violation": mean(gt_v),
            "recon_violation": mean(rec_v),
            **gen,
        }
        print(scene, rows[scene], flush=True)
    sweep: dict[float, dict[str, float]] = {}
    for guidance in sorted(set(args.sweep) | {args.guidance}):
        if guidance == args.guidance:
            per_scene = [
                {k: rows[s][k] for k in ("gen_violation", "fidelity", "top1")} for s in SCENES
            ]
        else:
            per_scene = [
                generated(backbone, s, guidance, args.seeds, args.steps)[0] for s in SCENES
            ]
        sweep[guidance] = {
            "gen_violation": mean([r["gen_violation"] for r in per_scene]),
            "fidelity": mean([r["fidelity"] for r in per_scene]),
            "top1": mean([r["top1"] for r in per_scene]),
            "min_scene_fidelity": min(r["fidelity"] for r in per_scene),
        }
        print("guidance", guidance, sweep[guidance], flush=True)
    seconds = time.perf_counter() - start
    write_strips(args.figure, strips)
    overall = {k: mean([r[k] for r in rows.values()]) for k in next(iter(rows.values()))}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    flags = [f"--{k} {arg_text(v)}" for k, v in vars(args).items() if k != "out"]
    lines = [
        "# The lab world's quality",
        "",
        f"`{' '.join(['benchmarks/lab_world.py', *flags])}` "
        f"at commit {commit}; {time.strftime('%Y-%m-%d')}; {seconds / 60:.1f} min on this "
        "machine's CPU.",
        "",
        f"Held-out clips: {args.heldout} per scene (indices from {HELDOUT_INDEX_OFFSET}); "
        "generated: "
        f"{args.seeds} seeds per scene from held-out prompts, {args.steps} UniPC steps, guidance "
        f"{args.guidance}, "
        f"{NUM_FRAMES} × {SIZE} × {SIZE}, no adapter. Violation: the ruler's (0 ≈ the ground "
        "truth's typical score); "
        "fidelity: the ruler's probability of the prompted scene; top-1: its scene classifier's "
        "argmax is the prompted scene.",
        "",
        "| scene | VAE PSNR (dB) | violation: ground truth | VAE reconstruction | generated (mean) "
        "| generated (median) | fidelity | top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scene, r in {**rows, "overall": overall}.items():
        lines.append(
            f"| {scene} | {r['psnr']:.1f} | {r['gt_violation']:.2f} | {r['recon_violation']:.2f} | "
            f"{r['gen_violation']:.2f} | {r['gen_violation_median']:.2f} | {r['fidelity']:.2f} | "
            f"{r['top1']:.2f} |"
        )
    if len(sweep) > 1:
        lines += [
            "",
            f"Guidance sweep (the same {args.seeds} seeds × 8 scenes, {args.steps} steps; guidance "
            "1 is no classifier-free guidance):",
            "",
            "| guidance | fidelity | top-1 | lowest scene fidelity | violation (generated) |",
            "|---|---|---|---|---|",
            *[
                f"| {g:g} | {r['fidelity']:.2f} | {r['top1']:.2f} | {r['min_scene_fidelity']:.2f} "
                f"| {r['gen_violation']:.2f} |"
                for g, r in sweep.items()
            ],
        ]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    write_json_atomic(
        args.out.with_suffix(".json"),
        {
            "args": {k: portable(v) for k, v in vars(args).items()},
            "scenes": rows,
            "overall": overall,
            "videos": videos,
            "sweep": {str(g): r for g, r in sweep.items()},
            "seconds": seconds,
            "commit": commit,
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How much the lab's ruler reads a lawful clip's look as a broken law.

A generator that draws a scene blurred, colour-cast, flickering or grainy has not broken the
scene's law; the ruler's violation should stay near the ground truth's and well below what
the law's own corruptions score. Per scene, on held-out ground-truth clips (seed disjoint
from the calibration's), the mean violation of:

- ``truth``: the clip as rendered;
- ``blur``: Gaussian blur, σ = 1.5 px;
- ``colour``: a colour cast, per-channel gain (1.10, 0.92, 1.05) and offset (+0.04, −0.03, +0.02);
- ``flicker``: a per-frame brightness offset, uniform in ±0.03;
- ``grain``: per-pixel Gaussian grain, σ = 0.03;
- ``all``: :func:`pila.lab.ruler.appearance_variant` (each of them at once, random strengths);

and, for scale, the lowest violation any of the scene's law corruptions
(:mod:`pila.lab.corruptions`) scores on two clips. The sizes are our choice: about what the
lab world's VAE does to a clip.

Usage::

    # writes benchmarks/results/lab_ruler_robustness.md
    .venv/bin/python benchmarks/lab_ruler_robustness.py

Results: ``benchmarks/results/lab_ruler_robustness.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from pila.io import write_json_atomic, write_text_atomic
from pila.lab import corruptions as C
from pila.lab import ruler as M
from pila.lab.ruler.calibration import ground_truth_clips
from pila.lab.scenes import SCENES

RESULTS = Path(__file__).resolve().parent / "results" / "lab_ruler_robustness.md"
CLIP_SEED = 4321  # ours: disjoint from the calibration's (1234) and the tests' seeds


def looks(rng: np.random.Generator) -> dict[str, callable]:
    """The appearance changes, each (F, H, W, 3) float → the same shape."""
    gain, offset = (
        np.array([1.10, 0.92, 1.05], np.float32),
        np.array([0.04, -0.03, 0.02], np.float32),
    )
    return {
        "truth": lambda c: c,
        "blur": lambda c: np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in c]),
        "colour": lambda c: np.clip(c * gain + offset, 0, 1),
        "flicker": lambda c: np.clip(
            c + rng.uniform(-0.03, 0.03, (len(c), 1, 1, 1)).astype(np.float32), 0, 1
        ),
        "grain": lambda c: np.clip(c + rng.normal(0, 0.03, c.shape).astype(np.float32), 0, 1),
        "all": lambda c: M.appearance_variant(c, rng),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="ground-truth clips per scene")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    changes = looks(rng)
    start = time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    for scene in SCENES:
        clips = ground_truth_clips(scene, args.clips, CLIP_SEED)
        rows[scene] = {
            name: float(np.mean([M.measure(change(c), scene).violation for c in clips]))
            for name, change in changes.items()
        }
        corrupted = {
            n: min(M.measure(C.corrupt(scene, n, 7, i), scene).violation for i in range(2))
            for n in C.corruption_names(scene)
        }
        weakest = min(corrupted, key=corrupted.get)
        rows[scene] |= {"weakest_corruption": corrupted[weakest]}
        rows[scene]["weakest_corruption_name"] = weakest  # type: ignore[assignment]
        print(scene, rows[scene], flush=True)
    seconds = time.perf_counter() - start
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    names = list(changes)
    lines = [
        "# The ruler against a lawful clip's look",
        "",
        f"`benchmarks/lab_ruler_robustness.py --clips {args.clips}` at commit {commit}; "
        f"{time.strftime('%Y-%m-%d')}; "
        f"{seconds / 60:.1f} min on this machine's CPU.",
        "",
        "Mean violation of lawful ground-truth clips drawn differently (0 ≈ ground truth; the "
        "module docstring "
        "gives each change), against the lowest violation the scene's law corruptions score (two "
        "clips each).",
        "",
        "| scene | " + " | ".join(names) + " | weakest law corruption |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for scene, row in rows.items():
        cells = " | ".join(f"{row[n]:.2f}" for n in names)
        lines.append(
            f"| {scene} | {cells} | {row['weakest_corruption']:.2f} "
            f"({row['weakest_corruption_name']}) |"
        )
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    write_json_atomic(
        args.out.with_suffix(".json"),
        {"clips": args.clips, "commit": commit, "seconds": seconds, "rows": rows},
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How well the lab's ruler separates law-breaking clips from ground truth, per scene and fault.

For every scene: ``--clips`` ground-truth clips and, for each corruption of
:mod:`pila.lab.corruptions`, the same clips corrupted. Prints, per scene and corruption,
the AUC (probability that a corrupted clip scores a higher violation than a ground-truth
one), the margin (the lowest corrupted violation minus the highest ground-truth one;
> 0 means every corrupted clip scores worse than every ground-truth clip) and the median
corrupted violation; then the scene fidelity's top-1 accuracy on the ground truth.

    python benchmarks/lab_ruler.py --clips 16 [--mp4] > benchmarks/results/lab_ruler.md

The clips use seed 2024 (our choice: disjoint from the calibration's 1234 and the
tests'). ``--mp4`` passes every clip through an H.264 round trip first (crf 18).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pila.lab import corruptions as C
from pila.lab import ruler as M
from pila.lab.ruler.looks import mp4_round_trip
from pila.lab.scenes import SCENES


def auc(positive: list[float], negative: list[float]) -> float:
    """P(positive > negative) + ½ P(tie): the Mann–Whitney AUC."""
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--mp4", action="store_true")
    parser.add_argument("--scenes", nargs="*", default=list(SCENES))
    args = parser.parse_args()
    prep = (lambda f: mp4_round_trip(f)) if args.mp4 else (lambda f: f)
    start = time.perf_counter()
    rows, correct, total = [], 0, 0
    for scene in args.scenes:
        gt = [
            M.measure(prep(C.ground_truth(scene, args.seed, i)), scene) for i in range(args.clips)
        ]
        gt_v = [r.violation for r in gt]
        for i in range(args.clips):
            probs = M.scene_probabilities(M.prepare(prep(C.ground_truth(scene, args.seed, i))))
            correct += max(probs, key=probs.get) == scene
            total += 1
        rows.append(
            (
                scene,
                "ground truth",
                float("nan"),
                float("nan"),
                float(np.median(gt_v)),
                float(np.max(gt_v)),
                "",
            )
        )
        for name in C.corruption_names(scene):
            results = [
                M.measure(prep(C.corrupt(scene, name, args.seed, i)), scene)
                for i in range(args.clips)
            ]
            v = [r.violation for r in results]
            worst = min(range(len(v)), key=v.__getitem__)
            top = sorted(results[worst].normalised.items(), key=lambda kv: -kv[1])[:2]
            rows.append(
                (
                    scene,
                    name,
                    auc(v, gt_v),
                    min(v) - max(gt_v),
                    float(np.median(v)),
                    float(np.max(v)),
                    ", ".join(f"{k} {z:.1f}" for k, z in top),
                )
            )
    print(
        f"# The lab ruler's separation ({args.clips} clips per scene and corruption, seed "
        f"{args.seed}{', mp4 round trip' if args.mp4 else ''})\n"
    )
    print(
        "| scene | corruption | AUC | margin | median violation | max violation | least-caught "
        "clip's top sub-measures |"
    )
    print("|---|---|---|---|---|---|---|")
    for scene, name, a, margin, med, mx, top in rows:
        fa = "" if np.isnan(a) else f"{a:.3f}"
        fm = "" if np.isnan(margin) else f"{margin:+.2f}"
        print(f"| {scene} | {name} | {fa} | {fm} | {med:.2f} | {mx:.2f} | {top} |")
    print(
        f"\nScene fidelity, top-1 on ground truth: {correct}/{total} = "
        f"{correct / max(total, 1):.1%}"
    )
    print(f"\nWall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

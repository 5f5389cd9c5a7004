"""Whether the lab's ruler reads a lawful clip's look as a broken law.

A generator that draws a scene blurred, colour-cast, compressed or one pixel off has not
broken the scene's law; a clip played at another speed or rendered with another law
constant has. Per scene, on lawful held-out clips (seed :data:`CLIP_SEED`, disjoint from
the calibration's 1234, ``benchmarks/lab_ruler.py``'s 2024 and the tests' seeds), the mean
violation of:

- ``truth``: the clip as rendered;
- each look change of :func:`looks` (every one keeps the law);
- each law break of the same clips (:func:`law_breaks`): playback at half and double
  speed (:func:`pila.lab.corruptions.played_at`) and every re-render with a changed law
  constant (:data:`pila.lab.corruptions.LAW_CHANGES`).

A look passes when |Δ look| (its mean violation minus the truth's) is below half of the
smallest law break's Δ (for ``ball_collision``, whose law has no time constant, the
smallest changed-constant break's: :func:`timed`). The look sizes are our choice: blur up
to σ 1.5 px, mp4 up to CRF 35 and a camera shift of one or two pixels are lab.md §5's bounds;
the others are about what a generator or its VAE does to a clip. The ruler is calibrated on
lawful clips as rendered and after an mp4 round trip at CRF 18, never on these looks.

Usage::

    .venv/bin/python benchmarks/lab_ruler_robustness.py          # 4 clips per scene
    .venv/bin/python benchmarks/lab_ruler_robustness.py --clips 2 --scenes smoke_puff \\
        --out /tmp/robustness.md

Results: ``benchmarks/results/lab_ruler_robustness.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np

from pila.io import write_json_atomic, write_text_atomic
from pila.lab import corruptions as C
from pila.lab import ruler as M
from pila.lab.ruler.looks import (
    Look,
    blur,
    colour_cast,
    contrast,
    gamma,
    grain,
    mix,
    mp4,
    resample,
    saturation,
    sharpen,
    shift,
)
from pila.lab.ruler.looks import flicker as flicker_look
from pila.lab.scenes import SCENES

RESULTS = Path(__file__).resolve().parent / "results" / "lab_ruler_robustness.md"
CLIP_SEED = 4321  # ours: disjoint from the calibration's (1234), lab_ruler's (2024), the tests'
SPEEDS = (0.5, 2.0)  # ours: half and double playback speed


def looks(rng: np.random.Generator) -> dict[str, Look]:
    """The look changes (:mod:`pila.lab.ruler.looks`), each (F, H, W, 3) float → the same
    shape; random ones draw from ``rng``."""
    colour = colour_cast([1.10, 0.92, 1.05], [0.04, -0.03, 0.02])
    flicker = flicker_look(0.03, rng)
    grain_ = grain(0.03, rng)

    return {
        "blur 0.75": blur(0.75),
        "blur 1.5": blur(1.5),
        "colour": colour,
        "gamma 0.8": gamma(0.8),
        "gamma 1.25": gamma(1.25),
        "flicker": flicker,
        "grain": grain_,
        "crf 23": mp4(23),
        "crf 35": mp4(35),
        "shift 1": shift(1),
        "shift 2": shift(2),
        "resample ½": resample(0.5),
        "contrast 0.8": contrast(0.8),
        "saturation 0.7": saturation(0.7),
        "sharpen": sharpen(0.6),
        "mix blur+grain+crf": mix(blur(0.75), grain_, mp4(23)),
        "mix cast+γ+shift+crf": mix(colour, gamma(1.25), shift(1), flicker, mp4(35)),
        "mix all": lambda c: M.appearance_variant(c, rng),
    }


def law_breaks(scene: str, count: int, seed: int) -> dict[str, list[np.ndarray]]:
    """The same clips with their law broken: other playback speeds and changed constants."""
    breaks = {
        f"speed ×{s:g}": [C.played_at(scene, s, seed, i) for i in range(count)] for s in SPEEDS
    }
    for name in C.LAW_CHANGES[scene]:
        breaks[f"law:{name}"] = [C.corrupt(scene, f"law:{name}", seed, i) for i in range(count)]
    return breaks


def timed(scene: str) -> bool:
    """Whether ``scene``'s law has a time constant, so that another playback speed breaks it
    (the collision's has none: its restitution and momentum read the same at any speed,
    so its speed rows are listed but do not set its threshold)."""
    return bool(C.TIME_DIMENSION[scene])


def scene_row(scene: str, count: int, seed: int) -> dict:
    """One scene's mean violations, deltas, threshold and verdicts."""
    rng = np.random.default_rng([seed, list(SCENES).index(scene)])
    clips = [C.ground_truth(scene, seed, i) for i in range(count)]

    def mean_violation(videos: list[np.ndarray]) -> float:
        return float(np.mean([M.measure(v, scene).violation for v in videos]))

    truth = mean_violation(clips)
    look = {name: mean_violation([f(c) for c in clips]) for name, f in looks(rng).items()}
    law = {name: mean_violation(v) for name, v in law_breaks(scene, count, seed).items()}
    counted = {n: v for n, v in law.items() if timed(scene) or not n.startswith("speed")}
    weakest = min(counted, key=counted.get)
    threshold = 0.5 * (law[weakest] - truth)
    deltas = {name: v - truth for name, v in look.items()}
    return {
        "truth": truth,
        "looks": look,
        "look_delta": deltas,
        "law_breaks": law,
        "weakest_break": weakest,
        "threshold": threshold,
        "passes": {name: bool(abs(d) < threshold) for name, d in deltas.items()},
    }


def table(rows: dict[str, dict]) -> list[str]:
    """The markdown tables: per scene and look |Δ| with PASS/FAIL, then the law breaks."""
    names = list(next(iter(rows.values()))["looks"])
    out = [
        "| scene | truth | ½ weakest break | " + " | ".join(names) + " | failing |",
        "|---|---|---|" + "---|" * (len(names) + 1),
    ]
    for scene, row in rows.items():
        cells = " | ".join(
            f"{abs(row['look_delta'][n]):.2f} {'PASS' if row['passes'][n] else '**FAIL**'}"
            for n in names
        )
        failing = sum(not p for p in row["passes"].values())
        out.append(
            f"| {scene} | {row['truth']:.2f} | {row['threshold']:.2f} | {cells} | {failing} |"
        )
    out += ["", "| scene | law break: mean violation (Δ against truth) |", "|---|---|"]
    for scene, row in rows.items():
        cells = ", ".join(
            f"{n} {v:.2f} ({v - row['truth']:+.2f})" for n, v in row["law_breaks"].items()
        )
        out.append(f"| {scene} | {cells}; weakest: {row['weakest_break']} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="lawful clips per scene")
    parser.add_argument("--seed", type=int, default=CLIP_SEED)
    parser.add_argument("--scenes", nargs="*", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--title", default="The ruler against a lawful clip's look")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = {}
    for scene in args.scenes:
        rows[scene] = scene_row(scene, args.clips, args.seed)
        failing = [n for n, p in rows[scene]["passes"].items() if not p]
        print(scene, f"threshold {rows[scene]['threshold']:.2f}", "failing:", failing, flush=True)
    seconds = time.perf_counter() - start
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    passed = sum(all(r["passes"].values()) for r in rows.values())
    extra = "" if args.scenes == list(SCENES) else " --scenes " + " ".join(args.scenes)
    lines = [
        f"# {args.title}",
        "",
        f"`benchmarks/lab_ruler_robustness.py --clips {args.clips} --seed {args.seed}{extra}` "
        f"at commit {commit}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{seconds / 60:.1f} min wall on this machine's shared CPU.",
        "",
        "Per scene, on lawful held-out clips: |Δ| of each look change's mean violation against "
        "the truth's, PASS when under ½ × the smallest law break's Δ (the column ½ weakest "
        "break; the law breaks are playback at ×0.5 and ×2 and the re-renders with a changed "
        "law constant, listed below). The module docstring gives each look.",
        "",
        f"Scenes passing every look: {passed}/{len(rows)}.",
        "",
        *table(rows),
    ]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    write_json_atomic(
        args.out.with_suffix(".json"),
        {
            "clips": args.clips,
            "seed": args.seed,
            "commit": commit,
            "seconds": seconds,
            "rows": rows,
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

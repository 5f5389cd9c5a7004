"""What ``pila lab evaluate`` writes from its measurements: the summaries of report.json,
the per-scene table (report.md), the ruler's figure, and the demo's side-by-side views."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pila.io import atomic_path, read_video
from pila.lab.scenes import SCENES
from pila.lab.stats import mean_interval

TRACES_PER_SCENE = 8
"""Our choice: at most eight videos' traces per scene panel keep the figure readable."""


# ------------------------------------------------------------------------- summaries
def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean, median and the 95 % Student-t interval of the mean (:mod:`pila.lab.stats`;
    one value: the interval is that value)."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return {"mean": None, "median": None, "ci95": None}
    mean = float(v.mean())
    bounds = mean_interval(v) or (mean, mean)
    return {"mean": mean, "median": float(np.median(v)), "ci95": [float(b) for b in bounds]}


def build_report(entries: list[dict[str, Any]], skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The report.json object from per-video entries."""
    scenes: dict[str, Any] = {}
    for name in SCENES:
        mine = [e for e in entries if e["scene"] == name]
        if not mine:
            continue
        measure_names = list(mine[0]["measures"])
        scenes[name] = {
            "n": len(mine),
            "violation": summarise([e["violation"] for e in mine]),
            "fidelity": summarise([e["fidelity"] for e in mine]),
            "measures": {
                m: float(np.mean([e["measures"][m]["z"] for e in mine])) for m in measure_names
            },
        }
    scene_means = [s["violation"]["mean"] for s in scenes.values()]
    overall = {
        "n": len(entries),
        "skipped": len(skipped),
        "violation": summarise([e["violation"] for e in entries]),
        "fidelity": summarise([e["fidelity"] for e in entries]),
        "scene_mean_violation": float(np.mean(scene_means)) if scenes else None,
    }
    return {"videos": entries, "scenes": scenes, "overall": overall, "skipped": skipped}


# -------------------------------------------------------------------------- tables
def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report_markdown(report: dict[str, Any], source: str) -> str:
    """The per-scene table of a report."""
    lines = [
        f"# Ruler report: {source}",
        "",
        "Violation: the root mean square of the scene's normalised sub-measures (0 ≈ the "
        "scene's own ground truth; 1 = one ground-truth spread off, over its sub-measures). "
        "Fidelity: the probability "
        "that the video shows its scene.",
        "",
        "| scene | n | violation mean [95 % CI] | median | fidelity "
        "| worst sub-measures (mean z) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["scenes"].items():
        v = s["violation"]
        worst = sorted(s["measures"].items(), key=lambda kv: -kv[1])[:3]
        low, high = v["ci95"]
        lines.append(
            f"| {name} | {s['n']} | {_fmt(v['mean'])} [{_fmt(low)}, {_fmt(high)}] "
            f"| {_fmt(v['median'])} | {_fmt(s['fidelity']['mean'])} "
            f"| {', '.join(f'{k} {z:.1f}' for k, z in worst)} |"
        )
    o = report["overall"]
    lines += [
        f"| **all** | {o['n']} | {_fmt(o['violation']['mean'])} "
        f"| {_fmt(o['violation']['median'])} | {_fmt(o['fidelity']['mean'])} | |",
        "",
    ]
    if report["skipped"]:
        skipped = [f"- `{s['video']}`: {s['reason']}" for s in report["skipped"]]
        lines += ["Skipped:", "", *skipped, ""]
    return "\n".join(lines)


def comparison_markdown(reports: dict[str, dict[str, Any]], reference: str) -> str:
    """Per scene, each report's mean violation and fidelity side by side, and the change
    from ``reference``.

    ``reports`` maps a label (e.g. ``adapter``, ``baseline``) to a report.json object of the
    same evaluation set.
    """
    labels = list(reports)
    others = [label for label in labels if label != reference]
    head = [
        "scene",
        "n",
        *(f"violation {label}" for label in labels),
        *(f"Δ {label}" for label in others),
        *(f"fidelity {label}" for label in labels),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    scenes = [name for name in SCENES if any(name in r["scenes"] for r in reports.values())]

    def mean(block: dict[str, Any] | None, key: str) -> str:
        return _fmt(block[key]["mean"]) if block else "–"

    def cells(block: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
        viol = [mean(block.get(label), "violation") for label in labels]
        ref = block.get(reference)
        delta = []
        for label in others:
            mine = block.get(label)
            if mine and ref and None not in (mine["violation"]["mean"], ref["violation"]["mean"]):
                delta.append(f"{mine['violation']['mean'] - ref['violation']['mean']:+.2f}")
            else:
                delta.append("–")
        fid = [mean(block.get(label), "fidelity") for label in labels]
        return viol, delta, fid

    for name in scenes:
        block = {label: r["scenes"].get(name) for label, r in reports.items()}
        n = max((b["n"] for b in block.values() if b), default=0)
        viol, delta, fid = cells(block)
        lines.append("| " + " | ".join([name, str(n), *viol, *delta, *fid]) + " |")
    block = {label: r["overall"] if r["overall"]["n"] else None for label, r in reports.items()}
    n = max((b["n"] for b in block.values() if b), default=0)
    viol, delta, fid = cells(block)
    lines.append("| " + " | ".join(["**all**", str(n), *viol, *delta, *fid]) + " |")
    lines += ["", "Violation: 0 ≈ the scene's own ground truth, lower is better; Δ < 0: more "
              f"lawful than the {reference}. Fidelity: the probability that the video shows "
              "its scene."]  # fmt: skip
    skipped = sum(len(r["skipped"]) for r in reports.values())
    if skipped:
        lines.append(f"{skipped} videos were skipped (see each report.md).")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- figures
def write_frame_strip(path: Path, reports: dict[str, dict[str, Any]], frames: int = 8) -> None:
    """A PNG of ``frames`` evenly spaced frames of the first video of every scene, one row
    per report and scene."""
    rows: list[tuple[str, np.ndarray]] = []
    for name in SCENES:
        for label, report in reports.items():
            entry = next((e for e in report["videos"] if e["scene"] == name), None)
            if entry is None:
                continue
            try:
                video, _ = read_video(Path(report["source"]) / entry["video"])
            except Exception:  # noqa: BLE001 - a video gone since it was measured: no row
                continue
            rows.append((f"{name}\n{label}", video))
    write_strips(path, rows, frames)


def write_strips(path: Path, rows: list[tuple[str, np.ndarray]], frames: int = 8) -> None:
    """A PNG with one labelled row per video (F, H, W, 3): ``frames`` evenly spaced frames
    side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    strips = []
    for label, video in rows:
        picks = np.linspace(0, len(video) - 1, frames).round().astype(int)
        strips.append((label, np.concatenate(list(np.asarray(video)[picks]), axis=1)))
    size = (frames * 0.9 + 1.2, 0.95 * len(strips))
    fig, axes = plt.subplots(len(strips), 1, figsize=size, squeeze=False)
    for ax, (label, strip) in zip(axes[:, 0], strips, strict=True):
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png", bbox_inches="tight")  # tight: keeps the labels
    plt.close(fig)


def write_figure(path: Path, traces: dict[str, list[dict[str, Any]]]) -> None:
    """Per scene, each video's measured quantity (solid) against the law (dashed), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in SCENES if traces.get(n)] or ["(no videos)"]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.set_title(name, fontsize=9)
        for i, trace in enumerate(traces.get(name, [])[:TRACES_PER_SCENE]):
            t = np.asarray(trace["t"])
            measured, law = np.asarray(trace["measured"], float), np.asarray(trace["law"], float)
            colour = f"C{i % 10}"
            if measured.ndim == 2:  # two balls
                for row in measured:
                    ax.plot(t, row, color=colour, lw=1)
                for row in law:
                    ax.plot(t, row, color=colour, lw=1, ls="--")
            else:
                ax.plot(t, measured, color=colour, lw=1, marker=".", ms=2)
                ax.plot(t, law, color=colour, lw=1, ls="--")
            ax.set_ylabel(trace["label"], fontsize=7)
        ax.set_xlabel("frame", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle("measured (solid) against the world's law (dashed)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

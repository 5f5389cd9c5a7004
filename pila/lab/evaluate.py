"""``pila lab evaluate``: the ruler (:mod:`pila.lab.ruler`) over a folder of videos.

    pila lab evaluate --videos DIR --out REPORT_DIR [--scene NAME]

``DIR`` is either

- a folder of scene clips with its annotation file (``annotations.json``, the layout
  :func:`pila.datamodules.synthetic.write_synthetic_dataset` writes: videos under
  ``videos/``, each record's ``synthetic.scene`` names its scene), or
- a ``pila predict`` output folder: every ``*.mp4`` below it with its JSON sidecar (next
  to it, or under ``pila_meta/``). The scene is the prompt record's ``scene`` field
  (a ``scene`` column of the prompt file, kept in the sidecar's ``record.extra``), else
  it is inferred from the prompt by its wording (:func:`infer_scene`).

``--scene`` measures every video against one scene instead. Writes, atomically,

- ``REPORT_DIR/report.json``: ``{"videos": [{"video", "scene", "violation", "fidelity",
  "measures": {name: {"raw", "z"}}, ...}], "scenes": {name: {"n", "violation": {"mean",
  "median", "ci95"}, "fidelity": {"mean", ...}, "measures": {name: mean z}}},
  "overall": {...}, "skipped": [{"video", "reason"}]}``,
- ``REPORT_DIR/report.md``: the per-scene table,
- ``REPORT_DIR/ruler.png``: per scene, the measured quantity of each video against the law.

A video that cannot be read, is shorter than the ruler needs or has no scene is listed
under ``skipped``, never fatal. Bad arguments are a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pila.io import atomic_path, read_video, write_json_atomic, write_text_atomic
from pila.lab import ruler as metrics
from pila.lab.scenes import SCENES, render_scene

log = logging.getLogger(__name__)

ANNOTATION_NAME = "annotations.json"
META_DIR = "pila_meta"
FIGURE_NAME = "ruler.png"
TRACES_PER_SCENE = 8
"""Our choice: at most eight videos' traces per scene panel keep the figure readable."""
MIN_PROMPT_OVERLAP = 0.3
"""Our choice: a prompt shares at least 30 % of its words with a scene's wording to be
taken for that scene."""


class UsageError(Exception):
    """A bad command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # noqa: D102 - argparse hook
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pila lab evaluate", description="Measure physical law from the pixels of lab videos (a pila predict folder, or scene clips with annotations.json).")
    parser.add_argument("--videos", required=True, help="a pila predict output folder, or scene clips with annotations.json")
    parser.add_argument("--out", required=True, help="the report folder (report.json, report.md, ruler.png)")
    parser.add_argument("--scene", default=None, help=f"measure every video against this scene ({', '.join(SCENES)})")
    return parser


# ------------------------------------------------------------------------- discovery
_WORD = re.compile(r"[a-z]+")
_COLOUR_WORDS = {"red", "orange", "yellow", "green", "blue", "purple", "grey", "a", "an", "the", "and", "of", "on", "in", "as", "its", "at", "one"}


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COLOUR_WORDS}


def _scene_wording() -> dict[str, set[str]]:
    """Each scene's prompt words (a tiny render of one clip; colours and articles dropped)."""
    return {name: _words(render_scene(name, np.random.default_rng(0), 2, 16, 16).prompt) for name in SCENES}


def infer_scene(prompt: str, wording: dict[str, set[str]] | None = None) -> str | None:
    """The scene whose prompt wording a prompt shares most (Jaccard ≥ :data:`MIN_PROMPT_OVERLAP`), else None."""
    words = _words(prompt)
    if not words:
        return None
    wording = wording or _scene_wording()
    score = {name: len(words & w) / len(words | w) for name, w in wording.items()}
    best = max(score, key=score.get)
    return best if score[best] >= MIN_PROMPT_OVERLAP else None


def _sidecar_scene(sidecar: dict[str, Any]) -> str | None:
    """The ``scene`` field of a sidecar's prompt record (``record.extra.scene``, ``record.scene``, ``scene``)."""
    record = sidecar.get("record") if isinstance(sidecar.get("record"), dict) else {}
    extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
    for value in (extra.get("scene"), record.get("scene"), sidecar.get("scene")):
        if isinstance(value, str) and value:
            return value
    return None


def discover(folder: Path, scene: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The videos to measure: ``[{"path", "video", "scene", "prompt"}]`` and the skipped ones.

    ``video`` is the path relative to ``folder``; ``scene`` is None when it cannot be
    told (such videos are returned as skipped).
    """
    items: list[dict[str, Any]] = []
    annotation = folder / ANNOTATION_NAME
    wording = _scene_wording()
    if annotation.is_file():
        records = json.loads(annotation.read_text(encoding="utf-8"))
        if isinstance(records, dict):
            records = records.get("videos") or records.get("records") or []
        for record in records:
            name = record.get("video_name") or record.get("video") or ""
            path = folder / "videos" / name if (folder / "videos" / name).is_file() else folder / name
            synthetic = record.get("synthetic") if isinstance(record.get("synthetic"), dict) else {}
            prompt = record.get("captions") or record.get("prompt") or ""
            found = synthetic.get("scene") or record.get("scene") or infer_scene(prompt, wording)
            items.append({"path": path, "video": path.relative_to(folder).as_posix(), "scene": found, "prompt": prompt})
    else:
        for path in sorted(folder.rglob("*.mp4")):
            if path.name.startswith("."):
                continue  # an unfinished atomic write
            rel = path.relative_to(folder)
            sidecar_paths = [path.with_suffix(".json"), folder / META_DIR / rel.with_suffix(".json")]
            sidecar: dict[str, Any] = {}
            for candidate in sidecar_paths:
                if candidate.is_file():
                    try:
                        data = json.loads(candidate.read_text(encoding="utf-8"))
                    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                        continue
                    if isinstance(data, dict):
                        sidecar = data
                        break
            prompt = sidecar.get("prompt") or ""
            found = _sidecar_scene(sidecar) or (infer_scene(prompt, wording) if prompt else None)
            items.append({"path": path, "video": rel.as_posix(), "scene": found, "prompt": prompt})
    skipped = []
    kept = []
    for item in items:
        if scene is not None:
            item["scene"] = scene
        if item["scene"] not in SCENES:
            why = f"unknown scene {item['scene']!r}" if item["scene"] else "no scene: no sidecar scene field, and the prompt names none"
            skipped.append({"video": item["video"], "reason": why})
        else:
            kept.append(item)
    return kept, skipped


# ------------------------------------------------------------------------- summaries
def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean, median and a normal-approximation 95 % interval of the mean (mean ± 1.96·sd/√n)."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return {"mean": None, "median": None, "ci95": None}
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "median": float(np.median(v)), "ci95": [float(v.mean() - half), float(v.mean() + half)]}


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
            "measures": {m: float(np.mean([e["measures"][m]["z"] for e in mine])) for m in measure_names},
        }
    overall = {
        "n": len(entries),
        "skipped": len(skipped),
        "violation": summarise([e["violation"] for e in entries]),
        "fidelity": summarise([e["fidelity"] for e in entries]),
        "scene_mean_violation": float(np.mean([s["violation"]["mean"] for s in scenes.values()])) if scenes else None,
    }
    return {"videos": entries, "scenes": scenes, "overall": overall, "skipped": skipped}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report_markdown(report: dict[str, Any], source: str) -> str:
    """The per-scene table of a report."""
    lines = [
        f"# Ruler report: {source}",
        "",
        "Violation: the mean of the scene's normalised sub-measures (0 ≈ the scene's own ground truth; "
        "1 = one ground-truth spread off on average). Fidelity: the probability that the video shows its scene.",
        "",
        "| scene | n | violation mean [95 % CI] | median | fidelity | worst sub-measures (mean z) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["scenes"].items():
        v = s["violation"]
        worst = sorted(s["measures"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(
            f"| {name} | {s['n']} | {_fmt(v['mean'])} [{_fmt(v['ci95'][0])}, {_fmt(v['ci95'][1])}] | {_fmt(v['median'])} | "
            f"{_fmt(s['fidelity']['mean'])} | {', '.join(f'{k} {z:.1f}' for k, z in worst)} |"
        )
    o = report["overall"]
    lines += [
        f"| **all** | {o['n']} | {_fmt(o['violation']['mean'])} | {_fmt(o['violation']['median'])} | {_fmt(o['fidelity']['mean'])} | |",
        "",
    ]
    if report["skipped"]:
        lines += ["Skipped:", ""] + [f"- `{s['video']}`: {s['reason']}" for s in report["skipped"]] + [""]
    return "\n".join(lines)


def comparison_markdown(reports: dict[str, dict[str, Any]], reference: str) -> str:
    """Per scene, each report's mean violation and fidelity side by side, and the change from ``reference``.

    ``reports`` maps a label (e.g. ``adapter``, ``baseline``) to a report.json object of the
    same evaluation set.
    """
    labels = list(reports)
    others = [label for label in labels if label != reference]
    head = ["scene", "n"] + [f"violation {label}" for label in labels] + [f"Δ {label}" for label in others] + [f"fidelity {label}" for label in labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    scenes = [name for name in SCENES if any(name in r["scenes"] for r in reports.values())]

    def cells(block: dict[str, Any] | None) -> tuple[list[str], list[str], list[str]]:
        viol = [_fmt(block[label]["violation"]["mean"]) if block.get(label) else "–" for label in labels]
        ref = block.get(reference)
        delta = []
        for label in others:
            mine = block.get(label)
            if mine and ref and mine["violation"]["mean"] is not None and ref["violation"]["mean"] is not None:
                delta.append(f"{mine['violation']['mean'] - ref['violation']['mean']:+.2f}")
            else:
                delta.append("–")
        fid = [_fmt(block[label]["fidelity"]["mean"]) if block.get(label) else "–" for label in labels]
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
    lines += ["", "Violation: 0 ≈ the scene's own ground truth, lower is better; Δ < 0: more lawful than the "
              f"{reference}. Fidelity: the probability that the video shows its scene."]  # fmt: skip
    skipped = sum(len(r["skipped"]) for r in reports.values())
    if skipped:
        lines.append(f"{skipped} videos were skipped (see each report.md).")
    return "\n".join(lines) + "\n"


def write_frame_strip(path: Path, reports: dict[str, dict[str, Any]], frames: int = 8) -> None:
    """A PNG of ``frames`` evenly spaced frames of the first video of every scene, one row per report and scene."""
    rows: list[tuple[str, np.ndarray]] = []
    for name in SCENES:
        for label, report in reports.items():
            entry = next((e for e in report["videos"] if e["scene"] == name), None)
            if entry is None:
                continue
            try:
                video, _ = read_video(Path(report["source"]) / entry["video"])
            except Exception:  # noqa: BLE001 - a video gone since it was measured: leave its row out
                continue
            rows.append((f"{name}\n{label}", video))
    write_strips(path, rows, frames)


def write_strips(path: Path, rows: list[tuple[str, np.ndarray]], frames: int = 8) -> None:
    """A PNG with one labelled row per video (F, H, W, 3): ``frames`` evenly spaced frames side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    strips = []
    for label, video in rows:
        picks = np.linspace(0, len(video) - 1, frames).round().astype(int)
        strips.append((label, np.concatenate(list(np.asarray(video)[picks]), axis=1)))
    fig, axes = plt.subplots(len(strips), 1, figsize=(frames * 0.9 + 1.2, 0.95 * len(strips)), squeeze=False)
    for ax, (label, strip) in zip(axes[:, 0], strips, strict=True):
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png", bbox_inches="tight")  # tight: keeps the row labels
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
            t, measured, law = np.asarray(trace["t"]), np.asarray(trace["measured"], float), np.asarray(trace["law"], float)
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


# ----------------------------------------------------------------------------- main
def evaluate(videos: Path, out: Path, scene: str | None = None) -> dict[str, Any]:
    """Measure every video under ``videos`` and write the report to ``out``; returns report.json's object."""
    items, skipped = discover(videos, scene)
    entries: list[dict[str, Any]] = []
    traces: dict[str, list[dict[str, Any]]] = {}
    calibration = metrics.load_calibration()
    for item in items:
        try:
            frames, _ = read_video(item["path"])
        except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
            skipped.append({"video": item["video"], "reason": f"unreadable: {type(err).__name__}: {err}".strip()})
            continue
        if len(frames) < metrics.MIN_FRAMES:
            skipped.append({"video": item["video"], "reason": f"too short: {len(frames)} frames (the ruler needs {metrics.MIN_FRAMES})"})
            continue
        result = metrics.measure(frames, item["scene"], calibration)
        entries.append(
            {
                "video": item["video"],
                "scene": item["scene"],
                "violation": result.violation,
                "fidelity": result.fidelity,
                "measures": result.measures(),
                "frames": int(len(frames)),
                "prompt": item["prompt"],
            }
        )
        traces.setdefault(item["scene"], []).append(result.trace)
    report = build_report(entries, skipped)
    report["source"] = str(videos)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", report_markdown(report, str(videos)))
    write_figure(out / FIGURE_NAME, traces)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``pila lab evaluate``: returns 0, or 2 for a bad command line."""
    try:
        args = build_parser().parse_args(argv)
        videos, out = Path(args.videos), Path(args.out)
        if not videos.is_dir():
            raise UsageError(f"--videos {str(videos)!r} is not a folder")
        if args.scene is not None and args.scene not in SCENES:
            raise UsageError(f"--scene {args.scene!r} is not a scene; valid: {', '.join(SCENES)}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    except UsageError as err:
        sys.stderr.write(f"pila lab evaluate: error: {err}\n")
        return 2
    report = evaluate(videos, out, args.scene)
    sys.stdout.write(report_markdown(report, str(videos)))
    sys.stdout.write(f"\nwrote {out / 'report.json'}, {out / 'report.md'}, {out / FIGURE_NAME}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

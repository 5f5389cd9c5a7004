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

import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pila.io import read_json, read_video, write_json_atomic, write_text_atomic
from pila.lab import ruler
from pila.lab.cli import ArgumentParser, UsageError, run_command
from pila.lab.evaluate_report import (
    build_report,
    comparison_markdown,
    report_markdown,
    summarise,
    write_figure,
    write_frame_strip,
    write_strips,
)
from pila.lab.scenes import SCENES, render_scene

log = logging.getLogger(__name__)

__all__ = [
    "build_parser",
    "build_report",
    "comparison_markdown",
    "discover",
    "evaluate",
    "infer_scene",
    "main",
    "report_markdown",
    "summarise",
    "write_frame_strip",
    "write_strips",
]

PROG = "pila lab evaluate"
ANNOTATION_NAME = "annotations.json"
META_DIR = "pila_meta"
FIGURE_NAME = "ruler.png"
MIN_PROMPT_OVERLAP = 0.3
"""Our choice: a prompt shares at least 30 % of its words with a scene's wording to be
taken for that scene."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Measure physical law from the pixels of lab videos (a pila predict "
        "folder, or scene clips with annotations.json).",
    )
    parser.add_argument(
        "--videos",
        required=True,
        help="a pila predict output folder, or scene clips with annotations.json",
    )
    parser.add_argument(
        "--out", required=True, help="the report folder (report.json, report.md, ruler.png)"
    )
    parser.add_argument(
        "--scene",
        default=None,
        help=f"measure every video against this scene ({', '.join(SCENES)})",
    )
    return parser


# ------------------------------------------------------------------------- discovery
_WORD = re.compile(r"[a-z]+")
_COLOUR_WORDS = {
    *("red", "orange", "yellow", "green", "blue", "purple", "grey"),
    *("a", "an", "the", "and", "of", "on", "in", "as", "its", "at", "one"),
}


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COLOUR_WORDS}


def _scene_wording() -> dict[str, set[str]]:
    """Each scene's prompt words (a tiny render of one clip; colours and articles dropped)."""
    rng = np.random.default_rng
    return {name: _words(render_scene(name, rng(0), 2, 16, 16).prompt) for name in SCENES}


def infer_scene(prompt: str, wording: dict[str, set[str]] | None = None) -> str | None:
    """The scene whose prompt wording a prompt shares most (Jaccard ≥
    :data:`MIN_PROMPT_OVERLAP`), else None."""
    words = _words(prompt)
    if not words:
        return None
    wording = wording or _scene_wording()
    score = {name: len(words & w) / len(words | w) for name, w in wording.items()}
    best = max(score, key=score.get)
    return best if score[best] >= MIN_PROMPT_OVERLAP else None


def _sidecar_scene(sidecar: dict[str, Any]) -> str | None:
    """The ``scene`` field of a sidecar's prompt record (``record.extra.scene``,
    ``record.scene``, ``scene``)."""
    record = sidecar.get("record") if isinstance(sidecar.get("record"), dict) else {}
    extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
    for value in (extra.get("scene"), record.get("scene"), sidecar.get("scene")):
        if isinstance(value, str) and value:
            return value
    return None


def discover(
    folder: Path, scene: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The videos to measure: ``[{"path", "video", "scene", "prompt"}]`` and the skipped ones.

    ``video`` is the path relative to ``folder``; ``scene`` is None when it cannot be
    told (such videos are returned as skipped).
    """
    items: list[dict[str, Any]] = []
    annotation = folder / ANNOTATION_NAME
    wording = _scene_wording()
    if annotation.is_file():
        records = read_json(annotation)
        if isinstance(records, dict):
            records = records.get("videos") or records.get("records") or []
        for record in records:
            name = record.get("video_name") or record.get("video") or ""
            path = folder / "videos" / name
            path = path if path.is_file() else folder / name
            synthetic = record.get("synthetic")
            synthetic = synthetic if isinstance(synthetic, dict) else {}
            prompt = record.get("captions") or record.get("prompt") or ""
            found = synthetic.get("scene") or record.get("scene") or infer_scene(prompt, wording)
            video = path.relative_to(folder).as_posix()
            items.append({"path": path, "video": video, "scene": found, "prompt": prompt})
    else:
        for path in sorted(folder.rglob("*.mp4")):
            if path.name.startswith("."):
                continue  # an unfinished atomic write
            rel = path.relative_to(folder)
            sidecar_paths = [
                path.with_suffix(".json"),
                folder / META_DIR / rel.with_suffix(".json"),
            ]
            sidecar: dict[str, Any] = {}
            for candidate in sidecar_paths:
                if candidate.is_file():
                    try:
                        data = read_json(candidate)
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
            if item["scene"]:
                why = f"unknown scene {item['scene']!r}"
            else:
                why = "no scene: no sidecar scene field, and the prompt names none"
            skipped.append({"video": item["video"], "reason": why})
        else:
            kept.append(item)
    return kept, skipped


# ----------------------------------------------------------------------------- main
def evaluate(videos: Path, out: Path, scene: str | None = None) -> dict[str, Any]:
    """Measure every video under ``videos`` and write the report to ``out``; returns
    report.json's object."""
    items, skipped = discover(videos, scene)
    entries: list[dict[str, Any]] = []
    traces: dict[str, list[dict[str, Any]]] = {}
    calibration = ruler.load_calibration()
    for item in items:
        try:
            frames, _ = read_video(item["path"])
        except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
            why = f"unreadable: {type(err).__name__}: {err}".strip()
            skipped.append({"video": item["video"], "reason": why})
            continue
        if len(frames) < ruler.MIN_FRAMES:
            why = f"too short: {len(frames)} frames (the ruler needs {ruler.MIN_FRAMES})"
            skipped.append({"video": item["video"], "reason": why})
            continue
        result = ruler.measure(frames, item["scene"], calibration)
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
    report["ruler"] = ruler.ruler_identity()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", report_markdown(report, str(videos)))
    write_figure(out / FIGURE_NAME, traces)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``pila lab evaluate``: returns 0, or 2 for a bad command line."""
    return run_command(PROG, _run, argv)


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    videos, out = Path(args.videos), Path(args.out)
    if not videos.is_dir():
        raise UsageError(f"--videos {str(videos)!r} is not a folder")
    if args.scene is not None and args.scene not in SCENES:
        raise UsageError(f"--scene {args.scene!r} is not a scene; valid: {', '.join(SCENES)}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    report = evaluate(videos, out, args.scene)
    sys.stdout.write(report_markdown(report, str(videos)))
    written = f"{out / 'report.json'}, {out / 'report.md'}, {out / FIGURE_NAME}"
    sys.stdout.write(f"\nwrote {written}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

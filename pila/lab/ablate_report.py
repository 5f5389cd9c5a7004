"""The table of ``pila lab ablate``: its rows from the runs' reports (:func:`aggregate`),
report.md and the bar figure. Every interval is :mod:`pila.lab.stats`'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pila.io import atomic_path
from pila.lab.ablate_variants import BASELINE, FULL, PLAIN, Plan
from pila.lab.stats import interval

Videos = dict[str, dict[str, Any]]
"""One run's report entries by video file name."""


# ------------------------------------------------------------------------- rows
def _per_video(report: dict[str, Any]) -> Videos:
    return {Path(e["video"]).name: e for e in report["videos"]}


def _scene_means(videos: Videos, key: str) -> dict[str, float]:
    scenes: dict[str, list[float]] = {}
    for entry in videos.values():
        scenes.setdefault(entry["scene"], []).append(entry[key])
    return {scene: float(np.mean(v)) for scene, v in scenes.items()}


def _summary(videos: Videos, key: str) -> dict[str, float]:
    """Per scene mean of ``key``, and ``overall``: the mean over scenes (each scene weighs
    the same)."""
    means = _scene_means(videos, key)
    overall = float(np.mean(list(means.values()))) if means else float("nan")
    return {**means, "overall": overall}


def _video_values(videos: Videos, key: str, scene: str) -> list[float]:
    if scene == "overall":
        return [e[key] for e in videos.values()]
    return [e[key] for e in videos.values() if e["scene"] == scene]


def _paired_video_diffs(mine: Videos, ref: Videos, scene: str) -> list[float]:
    shared = [k for k in mine if k in ref and (scene == "overall" or mine[k]["scene"] == scene)]
    return [mine[k]["violation"] - ref[k]["violation"] for k in shared]


def _run_of(runs: dict[int | None, dict[str, Any]], seed: int | None) -> dict[str, Any] | None:
    """The run of ``seed``; a single run (the baseline's one generation) pairs with any."""
    if not runs:
        return None
    return runs.get(seed) or (runs[next(iter(runs))] if len(runs) == 1 else None)


def _paired_seed_diffs(
    runs: dict[int | None, dict[str, Any]],
    ref_runs: dict[int | None, dict[str, Any]],
    seeds: list[int],
    scene: str,
) -> list[float]:
    diffs = []
    for s in seeds or [None]:
        mine, ref = _run_of(runs, s), _run_of(ref_runs, s)
        if mine is not None and ref is not None:
            mine_value = _summary(_per_video(mine), "violation").get(scene, float("nan"))
            ref_value = _summary(_per_video(ref), "violation").get(scene, float("nan"))
            diffs.append(mine_value - ref_value)
    return diffs


def aggregate(results: dict[str, dict[int | None, dict[str, Any]]]) -> dict[str, Any]:
    """Summarise ``results[variant][seed] = report.json`` into the table's rows.

    With two or more training seeds, intervals are over the seeds (a seed's value is its
    mean over the evaluation set) and differences are paired by seed (the baseline's one
    generation pairs with every seed). With one seed, intervals are over the evaluation
    videos and differences are paired by video (the same prompt and sampling seed).
    """
    rows: dict[str, Any] = {}
    seeds = sorted({s for runs in results.values() for s in runs if s is not None})
    references = {
        "vs_baseline": (BASELINE, results.get(BASELINE, {})),
        "vs_plain": (PLAIN, results.get(PLAIN, {})),
        "vs_full": (FULL, results.get(FULL, {})),
    }
    for name, runs in results.items():
        by_seed = {s: _per_video(r) for s, r in runs.items()}
        row: dict[str, Any] = {"seeds": sorted(s for s in runs if s is not None)}
        row.update({key: {} for key in ("violation", "fidelity", *references)})
        scene_names = sorted({e["scene"] for v in by_seed.values() for e in v.values()})
        scene_names.append("overall")
        over_seeds = len(by_seed) >= 2
        row["interval_over"] = "training seeds" if over_seeds else "evaluation videos"
        only = next(iter(by_seed.values()), {})
        for key in ("violation", "fidelity"):
            for scene in scene_names:
                if over_seeds:
                    values = [_summary(v, key).get(scene) for v in by_seed.values()]
                else:
                    values = _video_values(only, key, scene)
                row[key][scene] = interval(values)
        for key, (ref_name, ref_runs) in references.items():
            if name == ref_name or not ref_runs:
                continue
            for scene in scene_names:
                if over_seeds or len(ref_runs) >= 2:
                    diffs = _paired_seed_diffs(runs, ref_runs, seeds, scene)
                else:
                    ref = _per_video(next(iter(ref_runs.values())))
                    diffs = _paired_video_diffs(only, ref, scene)
                row[key][scene] = interval(diffs)
        rows[name] = row
    return {"rows": rows, "seeds": seeds}


# ----------------------------------------------------------------------- report
def _num(x: float, digits: int) -> str:
    return f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.00"


def _ci(summary: dict[str, Any] | None, digits: int = 2) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    text = _num(summary["mean"], digits)
    if summary.get("ci95"):
        lo, hi = summary["ci95"]
        text += f" [{_num(lo, digits)}, {_num(hi, digits)}]"
    return text


def report_markdown(table: dict[str, Any], plan: Plan, wall_seconds: float) -> str:
    rows = table["rows"]
    seeds = ", ".join(map(str, table["seeds"])) or "–"
    sampling_steps = f", {plan.inference_steps} sampling steps" if plan.inference_steps else ""
    lines = [
        "# The lab's Table 4",
        "",
        f"Variants trained on the lab world with one budget (configs `{plan.configs}`, steps × "
        f"{plan.steps_scale:g}), training seeds {seeds}; evaluation set: every scene's held-out "
        f"prompt × {plan.eval_seeds} sampling seeds{sampling_steps}. Violation: the ruler's "
        "(0 = as lawful as the renderer's own clips; lower is better); fidelity: the ruler's "
        "scene fidelity. Overall values weigh every scene equally. Brackets: 95 % Student-t "
        "intervals (over training seeds; over evaluation videos where a row has one seed). "
        "Δ: violation minus the reference's, paired by seed (by video with one seed); "
        "negative is better.",
        "",
        "| variant | seeds | violation | fidelity | Δ vs baseline | Δ vs plain adapter "
        "| Δ vs full |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        cells = [name, str(len(row["seeds"]) or "–")]
        cells += [_ci(row[key].get("overall")) for key in ("violation", "fidelity")]
        cells += [_ci(row[key].get("overall")) for key in ("vs_baseline", "vs_plain", "vs_full")]
        lines.append("| " + " | ".join(cells) + " |")
    scenes = sorted({s for row in rows.values() for s in row["violation"] if s != "overall"})
    head = ["| variant | " + " | ".join(scenes) + " |", "|---|" + "---|" * len(scenes)]
    by_scene = {
        "Violation per scene (mean [95 % interval]):": "violation",
        "Δ violation vs baseline per scene:": "vs_baseline",
    }
    for title, key in by_scene.items():
        lines += ["", title, "", *head]
        for name, row in rows.items():
            if row[key]:
                cells = " | ".join(_ci(row[key].get(s)) for s in scenes)
                lines.append(f"| {name} | {cells} |")
    lines += ["", f"Wall time of this invocation: {wall_seconds / 60:.1f} min.", ""]
    return "\n".join(lines)


def write_figure(path: Path, table: dict[str, Any]) -> None:
    """Bars of mean violation (overall and per scene) with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    names = list(rows)
    scenes = sorted({s for row in rows.values() for s in row["violation"] if s != "overall"})
    scenes.append("overall")
    width_in = max(6.0, 1.1 * len(scenes) * max(1, len(names)) * 0.35 + 2)
    fig, ax = plt.subplots(figsize=(width_in, 3.6))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        means, lows, highs = [], [], []
        for scene in scenes:
            s = rows[name]["violation"].get(scene) or {}
            m = s.get("mean")
            means.append(np.nan if m is None else m)
            lo, hi = s.get("ci95") or (m, m)
            lows.append(0.0 if m is None else m - lo)
            highs.append(0.0 if m is None else hi - m)
        x = np.arange(len(scenes)) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, means, width, yerr=[lows, highs], capsize=2, label=name)
    ax.set_xticks(np.arange(len(scenes)))
    ax.set_xticklabels(scenes, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("violation (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

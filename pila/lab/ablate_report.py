"""The table of ``pila lab ablate``: its rows from the runs' reports (:func:`aggregate`),
report.md and the bar figure. Every interval is :mod:`pila.lab.stats`'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pila.io import atomic_path
from pila.lab.ablate_variants import BASELINE, FULL, PLAIN, WORLD_FINETUNE, Plan
from pila.lab.stats import BOOTSTRAP_RESAMPLES, two_level_bootstrap

Videos = dict[str, dict[str, Any]]
"""One run's report entries by video file name."""


# ------------------------------------------------------------------------- rows
def _per_video(report: dict[str, Any]) -> Videos:
    return {Path(e["video"]).name: e for e in report["videos"]}


def _strata(
    pairs: list[tuple[Videos, Videos | None]], key: str, scene: str
) -> list[list[list[float]]]:
    """The bootstrap's ``strata[scene][seed][video]`` of ``key`` (minus the paired
    reference's, given one) for ``scene`` (``overall``: every scene, a stratum each).

    ``pairs``: per training seed, the row's videos and the reference's of the same seed
    (None: no reference). Videos pair by file name (the same prompt and noise seed); only
    videos every seed (and its reference) has are kept.
    """
    names = set.intersection(*({*mine} & ({*ref} if ref else {*mine}) for mine, ref in pairs))
    first = pairs[0][0]
    scenes = sorted({first[n]["scene"] for n in names} if scene == "overall" else {scene})
    strata = []
    for name_of_scene in scenes:
        videos = sorted(n for n in names if first[n]["scene"] == name_of_scene)
        if not videos:
            continue
        strata.append(
            [[mine[v][key] - (ref[v][key] if ref else 0.0) for v in videos] for mine, ref in pairs]
        )
    return strata


def _run_of(runs: dict[int | None, dict[str, Any]], seed: int | None) -> dict[str, Any] | None:
    """The run of training seed ``seed``; an untrained row's one generation (seed None, the
    baseline) pairs with every seed. A trained row's run of another seed never does."""
    return runs[seed] if seed in runs else runs.get(None)


def _paired_runs(
    runs: dict[int | None, dict[str, Any]],
    ref_runs: dict[int | None, dict[str, Any]],
    seeds: list[int],
) -> list[tuple[Videos, Videos]]:
    """The row's and the reference's videos for every training seed both have (the
    baseline's one generation pairs with every seed)."""
    trained = any(s is not None for s in (*runs, *ref_runs))
    pairs = []
    for s in seeds if trained else [None]:
        mine, ref = _run_of(runs, s), _run_of(ref_runs, s)
        if mine is not None and ref is not None:
            pairs.append((_per_video(mine), _per_video(ref)))
    return pairs


INTERVAL_OVER = "training seeds and evaluation videos (two-level bootstrap)"


def aggregate(results: dict[str, dict[int | None, dict[str, Any]]]) -> dict[str, Any]:
    """Summarise ``results[variant][seed] = report.json`` into the table's rows.

    Every value is the mean over training seeds of the mean over scenes (each scene weighs
    the same) of the mean over the evaluation videos; its interval is
    :func:`pila.lab.stats.two_level_bootstrap` over the training seeds and, within each,
    the videos of each scene. Differences are paired by seed (the baseline's one generation
    pairs with every seed) and by video (the same prompt and noise seed).
    """
    rows: dict[str, Any] = {}
    seeds = sorted({s for runs in results.values() for s in runs if s is not None})
    references = {
        "vs_baseline": (BASELINE, results.get(BASELINE, {})),
        "vs_plain": (PLAIN, results.get(PLAIN, {})),
        "vs_full": (FULL, results.get(FULL, {})),
    }
    for name, runs in results.items():
        own: list[tuple[Videos, Videos | None]] = [
            (_per_video(runs[s]), None) for s in sorted(runs, key=lambda s: (s is None, s))
        ]
        row: dict[str, Any] = {"seeds": sorted(s for s in runs if s is not None)}
        row.update({key: {} for key in ("violation", "fidelity", *references)})
        scene_names = sorted({e["scene"] for v, _ in own for e in v.values()})
        scene_names.append("overall")
        row["interval_over"] = INTERVAL_OVER
        for key in ("violation", "fidelity"):
            for scene in scene_names:
                row[key][scene] = two_level_bootstrap(_strata(own, key, scene))
        for key, (ref_name, ref_runs) in references.items():
            if name == ref_name or not ref_runs:
                continue
            pairs = _paired_runs(runs, ref_runs, seeds)
            for scene in scene_names:
                strata = _strata(pairs, "violation", scene) if pairs else []
                row[key][scene] = two_level_bootstrap(strata)
        rows[name] = row
    return {"rows": rows, "seeds": seeds}


def decide(table: dict[str, Any]) -> dict[str, Any]:
    """The readings' decision rule (``benchmarks/results/lab_readings_plan.md``), applied to
    an :func:`aggregate` table.

    A candidate (any row but full PILA, the baseline, the plain adapter and
    ``world_finetune``) is kept when its overall violation minus full PILA's, paired by seed
    and video, is below 0 with its whole 95 % interval below 0. Of the kept, the one with
    the lowest mean difference is proposed; none kept, nothing is (the defaults stay).

    Returns ``{"reference", "candidates": {name: {"mean", "ci95", "kept"}}, "kept",
    "proposed"}``.
    """
    if FULL not in table["rows"]:
        raise ValueError(f"the table has no {FULL!r} row to decide against")
    candidates: dict[str, Any] = {}
    for name, row in table["rows"].items():
        if name in (FULL, BASELINE, PLAIN, WORLD_FINETUNE):
            continue
        summary = row["vs_full"].get("overall") or {}
        mean, ci = summary.get("mean"), summary.get("ci95")
        kept = mean is not None and ci is not None and mean < 0 and ci[1] < 0
        candidates[name] = {"mean": mean, "ci95": ci, "kept": bool(kept)}
    kept = sorted(
        (n for n, c in candidates.items() if c["kept"]), key=lambda n: candidates[n]["mean"]
    )
    return {
        "reference": FULL,
        "candidates": candidates,
        "kept": kept,
        "proposed": kept[0] if kept else None,
    }


# ----------------------------------------------------------------------- report
def _num(x: float, digits: int, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{round(x, digits) + 0.0:{sign}.{digits}f}"  # + 0.0: no "-0.00"


def interval_text(summary: dict[str, Any] | None, digits: int = 2, signed: bool = False) -> str:
    """A bootstrap summary as "mean [lo, hi]" ("–" when there is none); ``signed`` writes
    every number with its sign (for differences)."""
    if not summary or summary.get("mean") is None:
        return "–"
    text = _num(summary["mean"], digits, signed)
    if summary.get("ci95"):
        lo, hi = summary["ci95"]
        text += f" [{_num(lo, digits, signed)}, {_num(hi, digits, signed)}]"
    return text


def decision_markdown(decision: dict[str, Any]) -> list[str]:
    """:func:`decide`'s verdict as report lines."""
    ref = decision["reference"]
    lines = [
        f"Decision against `{ref}` (the readings' rule, fixed before the runs: a candidate is "
        f"kept when candidate − {ref} is below 0 with its whole 95 % interval; the lowest "
        "kept is proposed):",
        "",
        f"| candidate | Δ vs {ref} | kept |",
        "|---|---|---|",
    ]
    for name, c in decision["candidates"].items():
        lines.append(f"| {name} | {interval_text(c)} | {'yes' if c['kept'] else 'no'} |")
    proposed = decision["proposed"]
    lines += [
        "",
        f"Proposed: `{proposed}`." if proposed else "Proposed: none; the defaults stay.",
    ]
    return lines


def report_markdown(table: dict[str, Any], plan: Plan, wall_seconds: float) -> str:
    rows = table["rows"]
    seeds = ", ".join(map(str, table["seeds"])) or "–"
    sampling_steps = f", {plan.inference_steps} sampling steps" if plan.inference_steps else ""
    world = "the lab world" if plan.backbone in (None, "lab") else f"`{plan.backbone}`"
    trained = f"Variants trained on {world}"
    if plan.adapters_from is not None:  # the transfer: trained elsewhere, generated here
        trained = (
            f"Variants generated on {world} with the adapters trained in `{plan.adapters_from}`"
            ", moved unchanged (both regimes corrected), trained there"
        )
    lines = [
        "# The lab's Table 4" if plan.adapters_from is None else "# Transfer in the lab",
        "",
        f"{trained} with one budget (configs `{plan.configs}`, steps × "
        f"{plan.steps_scale:g}), training seeds {seeds}; evaluation set `{plan.eval_set}`: "
        f"{plan.eval_seeds} held-out prompts per scene, every video its own noise draw"
        f"{sampling_steps}. Violation: the ruler's "
        "(0 = as lawful as the renderer's own clips; lower is better); fidelity: the ruler's "
        "scene fidelity. Overall values weigh every scene equally. Brackets: 95 % intervals "
        "of a two-level bootstrap over training seeds and, within each, the evaluation "
        "videos of each scene, so they include the evaluation set's own variance "
        f"({BOOTSTRAP_RESAMPLES} resamples, seeded). Δ: violation minus the reference's, "
        "paired by training seed and by video; negative is better.",
        "",
        "| variant | seeds | violation | fidelity | Δ vs baseline | Δ vs plain adapter "
        "| Δ vs full |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        cells = [name, str(len(row["seeds"]) or "–")]
        cells += [interval_text(row[key].get("overall")) for key in ("violation", "fidelity")]
        cells += [
            interval_text(row[key].get("overall")) for key in ("vs_baseline", "vs_plain", "vs_full")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    scenes = sorted({s for row in rows.values() for s in row["violation"] if s != "overall"})
    head = ["| variant | " + " | ".join(scenes) + " |", "|---|" + "---|" * len(scenes)]
    by_scene = {
        "Violation per scene (mean [95 % interval]):": "violation",
        "Δ violation vs baseline per scene:": "vs_baseline",
    }
    for title, key in by_scene.items():
        filled = [(name, row[key]) for name, row in rows.items() if row[key]]
        if not filled:  # no reference row (a table without the baseline): no section
            continue
        lines += ["", title, "", *head]
        for name, values in filled:
            cells = " | ".join(interval_text(values.get(s)) for s in scenes)
            lines.append(f"| {name} | {cells} |")
    if table.get("decision"):
        lines += ["", *decision_markdown(table["decision"])]
    if table.get("missing"):
        lines += ["", "Not finished, left out: " + ", ".join(table["missing"]) + "."]
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

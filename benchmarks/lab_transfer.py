"""The lab's transfer table: adapters trained on ``lab`` moved unchanged onto ``lab-moe``,
beside the same variants trained on ``lab-moe`` (``benchmarks/results/lab_transfer_plan.md``).

Reads two finished ``pila lab ablate`` folders on ``--backbone lab-moe``:

* ``--moved``: the ablation run with ``--adapters-from`` (the moved rows and ``lab-moe``'s
  own baseline);
* ``--trained``: the reference, the same variants trained on ``lab-moe`` directly
  (optional: without it the table has the moved rows and the baseline only).

Every run is read from its ``done.json`` (finished runs only) and all must have been scored
by one ruler (re-score a folder with ``pila lab ablate … --report-only`` otherwise). The rows
go through :func:`pila.lab.ablate_report.aggregate` together, so each difference is paired
by training seed and video and its interval is Table 4's two-level bootstrap: moved rows
against the baseline and the moved plain adapter (the plan's primary comparisons), and
each trained reference against its moved twin on the seeds both have (what moving costs).
Nothing is trained or generated.

Run (writes ``benchmarks/results/<name>.json`` and ``.md``)::

    .venv/bin/python benchmarks/lab_transfer.py --moved outputs/lab_transfer \\
        --trained outputs/lab_moe_t4 --name lab_transfer
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from pila.io import read_json, write_text_atomic
from pila.lab.ablate_report import aggregate, interval_text
from pila.lab.ablate_variants import BASELINE, FULL, PLAIN, WORLD_FINETUNE

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
TRAINED = " · trained on lab-moe"
"""Suffix of a reference row (a variant trained on ``lab-moe`` itself)."""
LABELS = {
    BASELINE: "lab-moe baseline (no adapter)",
    FULL: "full PILA, moved from lab",
    PLAIN: "plain adapter, moved from lab",
    WORLD_FINETUNE: "world_finetune's LoRA, moved from lab",
    FULL + TRAINED: "full PILA, trained on lab-moe",
    PLAIN + TRAINED: "plain adapter, trained on lab-moe",
}


def finished_runs(folder: Path) -> dict[str, dict[int | None, dict[str, Any]]]:
    """``{variant: {seed: done.json with its report}}`` of every run in an ablation folder
    that finished under the budget of the folder's last report (the untrained baseline's
    seed is None); runs of another budget (another evaluation set, step scale) are left out."""
    report = folder / "report.json"
    if not report.is_file():
        raise SystemExit(f"{folder}: no report.json; run the ablation (or --report-only) first")
    plan = read_json(report)["plan"]
    markers = sorted((folder / "runs").glob("*/done.json"))
    markers += sorted((folder / "runs").glob("*/seed*/done.json"))
    runs: dict[str, dict[int | None, dict[str, Any]]] = {}
    for marker in markers:
        done = read_json(marker)
        if any(plan.get(k) != v for k, v in done["budget"].items()):
            continue
        done["report_json"] = read_json(Path(done["report"]))
        runs.setdefault(done["variant"], {})[done["seed"]] = done
    if not runs:
        raise SystemExit(f"{folder}: no run finished under its report's budget")
    return runs


def _negated(summary: dict[str, Any]) -> dict[str, Any]:
    """The same bootstrap summary for the difference taken the other way round."""
    lo, hi = summary["ci95"] or (None, None)
    ci = None if lo is None else [-hi, -lo]
    return {**summary, "mean": -summary["mean"], "ci95": ci}


def _verdict(summary: dict[str, Any]) -> str:
    lo, hi = summary["ci95"] or (summary["mean"], summary["mean"])
    if hi < 0:
        return "below 0, its interval excludes 0"
    if lo > 0:
        return "above 0, its interval excludes 0"
    return "its interval includes 0"


def transfer_table(moved: Path, trained: Path | None = None) -> dict[str, Any]:
    """The aggregated rows and the plan's comparisons of the two ablations (``trained``
    None: of the moved one alone)."""
    moved_runs = finished_runs(moved)
    trained_runs = finished_runs(trained) if trained is not None else {}
    rulers = {
        done["ruler"]
        for runs in (moved_runs, trained_runs)
        for r in runs.values()
        for done in r.values()
    }
    if len(rulers) != 1:
        raise SystemExit(
            f"the runs were scored by {len(rulers)} rulers; re-score both folders with "
            "`pila lab ablate … --report-only` under one checkout first"
        )
    results: dict[str, dict[int | None, dict[str, Any]]] = {}
    for name, runs in moved_runs.items():
        results[name] = {s: d["report_json"] for s, d in runs.items()}
    for name, runs in trained_runs.items():
        if name != BASELINE:  # the same evaluation set on the same world: one baseline
            results[name + TRAINED] = {s: d["report_json"] for s, d in runs.items()}
    table = aggregate(results)
    rows = table["rows"]
    comparisons = {}
    if FULL in rows:
        comparisons["moved full PILA − lab-moe baseline"] = rows[FULL]["vs_baseline"]["overall"]
        if PLAIN in rows:
            comparisons["moved full PILA − moved plain adapter"] = rows[FULL]["vs_plain"]["overall"]
    secondary = {}
    for name, ref_key in ((FULL, "vs_full"), (PLAIN, "vs_plain")):
        if name + TRAINED in rows and name in rows:
            secondary[f"moved {LABELS[name].split(',')[0]} − trained on lab-moe"] = _negated(
                rows[name + TRAINED][ref_key]["overall"]
            )
    if WORLD_FINETUNE in rows:
        secondary["moved world_finetune − lab-moe baseline"] = rows[WORLD_FINETUNE]["vs_baseline"][
            "overall"
        ]
    if FULL + TRAINED in rows and PLAIN + TRAINED in rows:  # the reference's own pair
        own = aggregate({FULL: results[FULL + TRAINED], PLAIN: results[PLAIN + TRAINED]})
        secondary["trained on lab-moe: full PILA − plain adapter"] = own["rows"][FULL]["vs_plain"][
            "overall"
        ]
    seconds = {}
    for label, runs in (("moved", moved_runs), ("trained", trained_runs)):
        for name, by_seed in runs.items():
            for seed, done in by_seed.items():
                key = f"{name} seed {seed}" if seed is not None else name
                seconds[f"{label}: {key}"] = done["seconds"]
    return {
        "rows": rows,
        "seeds": table["seeds"],
        "primary": comparisons,
        "secondary": secondary,
        "ruler": rulers.pop(),
        "seconds": seconds,
        "plans": {
            "moved": read_json(moved / "report.json").get("plan"),
            "trained": read_json(trained / "report.json").get("plan") if trained else None,
        },
    }


def portable(value: Any) -> Any:
    """``value`` with every absolute path in it written relative to the repository, or as
    ``…/`` and its last two parts when outside it (recorded results name no machine)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        if path.is_relative_to(REPO):
            return path.relative_to(REPO).as_posix()
        return "…/" + "/".join(path.parts[-2:])
    return value


def markdown(result: dict[str, Any], command: str, commit: str, wall: float) -> str:
    rows = result["rows"]
    lines = [
        "# The transfer table: adapters trained on `lab`, moved unchanged onto `lab-moe`",
        "",
        f"`{command}` at commit {commit}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{wall:.0f} s (reads finished runs; nothing trained). Plan, written before the runs: "
        "`lab_transfer_plan.md`. Ruler identity: `" + result["ruler"][:12] + "`.",
        "",
        "Violation: the mean over the eight scenes (each weighs the same) of the mean over the "
        "16 held-out videos of each scene (evaluation set `a`, every video its own noise draw, "
        "generated on `lab-moe`, both regimes corrected); lower is more lawful. Brackets: 95 % "
        "intervals of a two-level bootstrap over training seeds and, within each, the videos "
        "of each scene. Δ: paired by training seed and video; negative is better.",
        "",
    ]
    for title, key in (("The plan's primary comparisons", "primary"), ("Secondary", "secondary")):
        lines += [
            f"## {title}",
            "",
            "| comparison | Δ violation [95 %] | reading |",
            "|---|---|---|",
        ]
        for name, summary in result[key].items():
            lines.append(
                f"| {name} | {interval_text(summary, signed=True)} | {_verdict(summary)} |"
            )
        lines.append("")
    lines += [
        "## Rows",
        "",
        "| row | training seeds | violation | fidelity | Δ vs lab-moe baseline | "
        "Δ vs moved plain adapter | Δ vs moved full PILA |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        seeds = ", ".join(map(str, row["seeds"])) or "–"
        cells = [LABELS.get(name, name), seeds, interval_text(row["violation"].get("overall"))]
        cells.append(interval_text(row["fidelity"].get("overall")))
        cells += [
            interval_text(row[k].get("overall"), signed=True)
            for k in ("vs_baseline", "vs_plain", "vs_full")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    scenes = sorted({s for row in rows.values() for s in row["violation"] if s != "overall"})
    lines += ["", "Violation per scene:", "", "| row | " + " | ".join(scenes) + " |"]
    lines.append("|---|" + "---|" * len(scenes))
    for name, row in rows.items():
        cells = " | ".join(interval_text(row["violation"].get(s)) for s in scenes)
        lines.append(f"| {LABELS.get(name, name)} | {cells} |")
    lines += ["", "Δ violation vs the lab-moe baseline per scene:", ""]
    lines += ["| row | " + " | ".join(scenes) + " |", "|---|" + "---|" * len(scenes)]
    for name, row in rows.items():
        if row["vs_baseline"]:
            cells = " | ".join(
                interval_text(row["vs_baseline"].get(s), signed=True) for s in scenes
            )
            lines.append(f"| {LABELS.get(name, name)} | {cells} |")
    lines += [
        "",
        "## Wall time per run (two cores; train = every stage, generate = 128 videos)",
        "",
    ]
    lines += ["| run | train (min) | generate (min) | score (min) |", "|---|---|---|---|"]
    for key, parts in result["seconds"].items():
        train = sum(v for k, v in parts.items() if k not in ("predict", "evaluate")) / 60
        lines.append(
            f"| {key} | {train:.1f} | {parts.get('predict', 0) / 60:.1f} | "
            f"{parts.get('evaluate', 0) / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moved", type=Path, required=True, help="the --adapters-from ablation")
    parser.add_argument("--trained", type=Path, help="the reference ablation (optional)")
    parser.add_argument("--name", default="lab_transfer", help="results file stem")
    args = parser.parse_args()
    start = time.perf_counter()
    result = transfer_table(args.moved.resolve(), args.trained.resolve() if args.trained else None)
    wall = time.perf_counter() - start
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    command = (
        f"python benchmarks/lab_transfer.py --moved {args.moved} "
        + (f"--trained {args.trained} " if args.trained else "")
        + f"--name {args.name}"
    )
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(RESULTS / f"{args.name}.md", markdown(result, command, commit, wall))
    write_text_atomic(
        RESULTS / f"{args.name}.json",
        json.dumps(portable({"command": command, "commit": commit, **result}), indent=1) + "\n",
    )
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()

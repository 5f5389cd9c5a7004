"""What stage C did in a finished ``pila lab ablate``: flow loss and gradient ratios per run.

For each trained variant of an ablation folder and each of its seeds, read from the runs'
TensorBoard logs (:func:`pila.analysis.scalars.read_scalars`):

* stage C's training flow-matching loss, mean of its first and last tenth of logged steps,
  and its last validation flow loss (``train/fm_loss``, ``val/fm_loss``; ``world_finetune``
  logs them as ``flow_loss``);
* for PILA variants, per parameter group the ratio ‖∇(λ_phys·L_res)‖ / ‖∇L_fm‖ logged by the
  gradient diagnostics (``train/grad_ratio/<group>``), median over the diagnostic steps
  from the first step at which ``train/lambda_phys`` reached its largest value (its target,
  after the warm-up); 0 where L_res does not reach the group (the decoder); a run without
  L_res (the plain adapter) has none.

Only finished runs (a ``done.json``) are read; a variant with none is an error.

It answers, for the runs behind a table, whether the physics loss drowns the flow signal
on the shared parts and whether stage C lowers the flow loss at all. Nothing is trained.

Run (writes ``benchmarks/results/<name>.json`` and ``.md``)::

    .venv/bin/python benchmarks/lab_run_diagnostics.py outputs/lab_t4_v2 \\
        --variants full,plain_adapter,world_finetune,wo_afe --name lab_t4_v2_diagnostics \\
        --figure docs/figures/lab_t4_v2_diagnostics.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from pila.adapter import PARAMETER_GROUPS
from pila.analysis.scalars import ScalarTable, gradient_curves, read_scalars
from pila.io import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
SMOOTH = 10
"""Logged training losses averaged in the figure (a running mean over this many)."""


def _series(table: ScalarTable, names: tuple[str, ...]) -> np.ndarray | None:
    """Stage C's curve of the first of ``names`` it logged (None: none)."""
    for name in names:
        if name in table.tags:
            return table.series(name, stage="stageC").values
    return None


TRAINING_STAGES = ("stageA", "stageB", "stageC", "finetune")
"""Timed parts of a run (``done.json``'s ``seconds``) counted as its training."""


def run_row(folder: Path) -> dict[str, Any]:
    """One run's stage C flow losses, late gradient ratios and wall times (``done.json``)."""
    seconds = json.loads((folder / "done.json").read_text()).get("seconds", {})
    whole = read_scalars(folder)
    table = whole.where(stage="stageC")
    train = _series(table, ("train/fm_loss", "train/flow_loss"))
    val = _series(table, ("val/fm_loss", "val/flow_loss"))
    row: dict[str, Any] = {
        "train_seconds": sum(v for k, v in seconds.items() if k in TRAINING_STAGES),
        "generate_seconds": seconds.get("predict"),
    }
    if train is not None and len(train):
        tenth = max(1, len(train) // 10)
        row["fm_first"] = float(train[:tenth].mean())
        row["fm_last"] = float(train[-tenth:].mean())
    row["val_fm_last"] = float(val[-1]) if val is not None and len(val) else None
    ratios = {}
    start = 0
    if "train/lambda_phys" in table.tags:
        lam = table.series("train/lambda_phys", stage="stageC")
        start = int(lam.steps[np.argmax(lam.values >= lam.values.max() * (1 - 1e-6))])
    row["lambda_target_from_step"] = start
    for group, series in gradient_curves(whole, "stageC").items():
        late = series.steps >= start
        if late.any():
            ratios[group] = float(np.median(series.values[late]))
    # a run without a physics loss logs ratios of 0 on every group: none to report
    row["grad_ratio"] = ratios if any(ratios.values()) else {}
    return row


def figure(out: Path, variants: list[str], path: Path) -> None:
    """Stage C's training flow loss per variant (every seed) and, for the first variant with
    gradient ratios, each group's ratio over the steps (every seed), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pila.analysis.plots import save_figure

    fig, (loss_ax, ratio_ax) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ratio_variant = None
    for k, variant in enumerate(variants):
        for n, done in enumerate(sorted((out / "runs" / variant).glob("seed*/done.json"))):
            whole = read_scalars(done.parent)  # read once: the loss and the ratios
            table = whole.where(stage="stageC")
            name = "train/fm_loss" if "train/fm_loss" in table.tags else "train/flow_loss"
            loss = table.series(name, stage="stageC")
            window = min(SMOOTH, len(loss.values))  # the per-batch loss is noisy
            smooth = np.convolve(loss.values, np.ones(window) / window, mode="valid")
            loss_ax.plot(loss.steps[window - 1 :], smooth, color=colours[k % len(colours)],
                         lw=0.9, alpha=0.8, label=variant if n == 0 else None)  # fmt: skip
            curves = gradient_curves(whole, "stageC")
            if not any(np.any(s.values) for s in curves.values()):
                continue
            if ratio_variant not in (None, variant):
                continue
            ratio_variant = variant
            for g, group in enumerate(PARAMETER_GROUPS):
                if group in curves and np.any(curves[group].values > 0):
                    s = curves[group]
                    ratio_ax.plot(s.steps, s.values, color=colours[g % len(colours)], lw=0.8,
                                  marker=".", label=group if n == 0 else None)  # fmt: skip
    loss_ax.set(
        xlabel="stage C step",
        ylabel="training flow loss",
        title=f"Flow loss, stage C (running mean of {SMOOTH} logged steps)",
    )
    loss_ax.legend(fontsize=8)
    loss_ax.grid(alpha=0.3)
    ratio_ax.set_yscale("log")
    ratio_ax.set(xlabel="stage C step", ylabel="‖∇(λ·L_res)‖ / ‖∇L_fm‖",
                 title=f"Gradient ratio per group, {ratio_variant} (every seed)")  # fmt: skip
    ratio_ax.legend(fontsize=8)
    ratio_ax.grid(alpha=0.3)
    save_figure(fig, path)


def summarise(out: Path, variants: list[str]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for variant in variants:
        runs = sorted((out / "runs" / variant).glob("seed*/done.json"))
        if not runs:
            raise SystemExit(
                f"lab_run_diagnostics: no finished run of {variant!r} under {out / 'runs'}; "
                "name a trained variant of that ablation (its folder under runs/)"
            )
        rows[variant] = {p.parent.name: run_row(p.parent) for p in runs}
    return rows


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Stage C of `{result['folder']}`: flow loss and gradient ratios",
        "",
        f"`{result['command']}` at commit {result['commit']}; {result['wall_seconds']:.0f} s. "
        "Medians over the seeds (their count in brackets); flow loss: training mean of the "
        "first and last tenth of stage C's logged steps, validation at its end. Gradient "
        "ratio ‖∇(λ_phys·L_res)‖ / ‖∇L_fm‖ per parameter group, median over the diagnostic "
        "steps once λ_phys is at its target (then min–max over the seeds). Wall time per run "
        "(its `done.json`): training (every stage) and generation, median in minutes.",
        "",
        "| variant | train (min) | generate (min) | fm first | fm last | val fm | "
        + " | ".join(PARAMETER_GROUPS)
        + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(PARAMETER_GROUPS),
    ]

    def fmt(v: float | None) -> str:
        return "–" if v is None else (f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}")

    for variant, seeds in result["rows"].items():
        runs = list(seeds.values())
        minutes = [_median([r.get(k) for r in runs]) for k in ("train_seconds", "generate_seconds")]
        cells = ["–" if m is None else f"{m / 60:.1f}" for m in minutes]
        cells += [fmt(_median([r.get(k) for r in runs])) for k in ("fm_first", "fm_last")]
        cells.append(fmt(_median([r.get("val_fm_last") for r in runs])))
        for group in PARAMETER_GROUPS:
            values = [r["grad_ratio"][group] for r in runs if group in r["grad_ratio"]]
            if not values:
                cells.append("–")
            else:
                cells.append(
                    f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"
                )
        lines.append(f"| {variant} ({len(runs)}) | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a pila lab ablate --out folder")
    parser.add_argument("--variants", default="full,plain_adapter,world_finetune")
    parser.add_argument("--name", default="lab_run_diagnostics", help="results file stem")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--figure", type=Path, default=None, help="also draw the curves here")
    args = parser.parse_args()
    start = time.perf_counter()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    # as given, unless absolute (results name no machine's paths)
    shown = args.folder.name if args.folder.is_absolute() else str(args.folder)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    result: dict[str, Any] = {
        "command": f"python benchmarks/lab_run_diagnostics.py {shown} "
        f"--variants {','.join(variants)} --name {args.name}",
        "folder": shown,
        "commit": commit or "unknown",
        "rows": summarise(args.folder, variants),
    }
    if args.figure is not None:
        figure(args.folder, variants, args.figure)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / f"{args.name}.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(args.out / f"{args.name}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

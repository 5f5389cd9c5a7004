"""How hard the physics loss pulls against flow matching in the lab's stage C, per reading.

Runs the lab's stage C (the ``configs/stageC.yaml`` of a ``pila demo --out DIR`` folder,
same data and seeds) for ``--steps`` steps once per variant, with the gradient diagnostics
on every ``--every`` steps, in one of two regimes:

* ``--regime start``: from the demo's stage B checkpoint, the warm-ups (λ_phys, c, mask,
  encoder freeze) compressed in proportion to the run;
* ``--regime late``: from the demo's trained stage C checkpoint (120 steps of today's
  reading), warm-ups over (λ_phys at 0.3, encoder at lr × 0.1): where the physics loss
  has fallen and the flow gradient reaches the shared parts through a trained decoder.

It reports

* per parameter group, the ratio ‖∇(λ_phys·L_res)‖ / ‖∇ L_fm‖ (``train/grad_ratio/<group>``)
  averaged over the diagnostic steps of the last third of the run (λ_phys near its target);
* the flow-matching loss, mean of the first and last tenth of the steps;
* the wall time of a training step with and without the diagnostics (medians; the
  diagnostic steps are interleaved in the same run), and so the cost of the default
  ``grad_log_every_n_steps``.

Variants: the readings of the adaptive weights (``AdapterConfig.loss_weighting``) under
the lab's optimiser settings, and today's reading under the paper configs' optimiser
settings (lr 1e-4, gradient clipping at 1.0) and with the lab's lr and that clipping.

    pila demo --out /tmp/demo                       # configs, data, stage B and C checkpoints
    python benchmarks/grad_diagnostics.py --demo /tmp/demo --regime late

Each variant's result is kept in ``WORK/<variant>.json`` (variants may run as separate
processes); the table of every variant found there goes to
``benchmarks/results/grad_diagnostics_<regime>.json`` and ``.md`` (written atomically).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback

from pila.io import read_json, write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_EVERY = 50
"""``PILAModule``'s default ``grad_log_every_n_steps``, whose cost this measures."""

#: name → (loss_weighting, lr, gradient_clip_val); None keeps the config's value
VARIANTS: dict[str, tuple[str, float | None, float | None]] = {
    "inverse_running_mean": ("inverse_running_mean", None, None),
    "frozen": ("frozen", None, None),
    "category_mean": ("category_mean", None, None),
    "grad_balanced": ("grad_balanced", None, None),
    "paper_optimiser": ("inverse_running_mean", 1e-4, 1.0),
    "lab_lr_clipped": ("inverse_running_mean", None, 1.0),
}


class StepTimer(Callback):
    """Wall time of each training batch (forward, diagnostics, backward, optimizer step)."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times[trainer.global_step - 1] = time.perf_counter() - self._start


def variant_config(demo: Path, work: Path, name: str, steps: int, every: int, regime: str) -> Path:
    """The demo's stage C config for one variant: no checkpoints or images, logs under ``work``."""
    weighting, lr, clip = VARIANTS[name]
    config = yaml.safe_load((demo / "configs" / "stageC.yaml").read_text())
    trainer = config["trainer"]
    shrink = steps / trainer["max_steps"]  # start: the lab's schedules, compressed to the run
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith(
            ("PhysicsWarmup", "ConditioningWarmup", "MaskBlend", "EncoderFreeze")
        ):
            late = 0 if callback["class_path"].endswith("EncoderFreeze") else 1
            start = max(1, round(callback["init_args"]["steps"] * shrink))
            callback["init_args"]["steps"] = late if regime == "late" else start
    trainer.update(
        max_steps=steps, log_every_n_steps=every, val_check_interval=steps, limit_val_batches=2
    )
    trainer["enable_checkpointing"] = False
    trainer["callbacks"] = [
        c
        for c in trainer["callbacks"]
        if not c["class_path"].endswith(("ModelCheckpoint", "ExpertImageLogger"))
    ]
    trainer["logger"]["init_args"].update(save_dir=str(work), name=name, version="")
    if clip is not None:
        trainer["gradient_clip_val"] = clip
    model = config["model"]["init_args"]
    model["adapter"]["loss_weighting"] = weighting
    model["grad_log_every_n_steps"] = every
    if regime == "late":
        model["init_from"] = str(demo / "stageC" / "checkpoints" / "last.ckpt")
    if lr is not None:
        model["lr"] = lr
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def run_variant(
    demo: Path, work: Path, name: str, steps: int, every: int, regime: str
) -> dict[str, Any]:
    from pila.analysis import read_scalars
    from pila.cli import PilaCLI

    config = variant_config(demo, work, name, steps, every, regime)
    cli = PilaCLI(args=["--config", str(config)], run=False)
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - t0
    table = read_scalars(work / name)
    late = steps - steps // 3
    ratios: dict[str, float] = {}
    for tag in table.tags:
        if tag.startswith("train/grad_ratio/"):
            series = table.series(tag)
            kept = series.values[series.steps >= late]
            if len(kept):
                ratios[tag.removeprefix("train/grad_ratio/")] = float(kept.mean())
    fm = table.series("train/fm_loss")
    tenth = max(1, len(fm.values) // 10)
    diagnostic = [t for s, t in timer.times.items() if (s + 1) % every == 0 and s > 0]
    plain = [t for s, t in timer.times.items() if (s + 1) % every and s > 0]
    out: dict[str, Any] = {
        "settings": dict(
            zip(("loss_weighting", "lr", "gradient_clip_val"), VARIANTS[name], strict=True)
        ),
        "grad_ratio_late": ratios,
        "fm_loss_first": float(fm.values[:tenth].mean()),
        "fm_loss_last": float(fm.values[-tenth:].mean()),
        "val_fm_loss": float(table.series("val/fm_loss").values[-1]),
        "step_s_median": statistics.median(plain),
        "diagnostic_step_s_median": statistics.median(diagnostic),
        "wall_s": wall,
    }
    if "train/balance_scale" in table.tags:
        out["balance_scale_last"] = float(table.series("train/balance_scale").values[-1])
    out["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent
    ).stdout.strip()
    write_json_atomic(work / f"{name}.json", out)
    return out


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    groups = ("condition", "encoder", "anchor", "afe", "router", "experts", "decoder")
    lines = [
        f"# Gradient of λ_phys·L_res against flow matching, lab stage C ({meta['regime']})",
        "",
        f"`{meta['command']}`; {meta['steps']} steps from the demo's {meta['start']} checkpoint, "
        f"diagnostics every {meta['every']} steps; {meta['machine']}.",
        "",
        "Ratio ‖∇(λ_phys·L_res)‖ / ‖∇L_fm‖ per parameter group, mean over the diagnostic steps "
        f"of the last third (steps ≥ {meta['steps'] - meta['steps'] // 3}); flow "
        "loss mean of the first and last tenth of the steps; validation flow loss at the end.",
        "",
        "| variant | "
        + " | ".join(groups)
        + " | fm first | fm last | val fm | s/step | wall s | s (balance) |",
        "|---|" + "---:|" * (len(groups) + 6),
    ]
    for name, r in results.items():
        cells = [
            f"{r['grad_ratio_late'][g]:.3g}" if g in r["grad_ratio_late"] else "–" for g in groups
        ]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {r['fm_loss_first']:.4f} | {r['fm_loss_last']:.4f} | {r['val_fm_loss']:.4f}"
            f" | {r['step_s_median']:.2f} | {r['wall_s']:.0f} | "
            + (f"{r['balance_scale_last']:.2g} |" if "balance_scale_last" in r else "– |")
        )
    lines += [
        "",
        f"DIR made by `pila demo --out DIR`; measured with the code of commit "
        f"{', '.join(meta['commits'])}. The decoder's ratio is 0: L_res does not reach it.",
    ]
    if meta["regime"] == "late" and "frozen" in results:
        lines += [
            "`frozen` starts here from the checkpoint's scales, most of them already past "
            "`loss_freeze_steps` values, and holds them: over a short run it reads as today's. "
            "Its difference shows from the start of training.",
        ]
    base = results.get("inverse_running_mean")
    if base:
        extra = base["diagnostic_step_s_median"] - base["step_s_median"]
        share = extra / base["step_s_median"]
        lines += [
            "",
            "## Cost of the diagnostics",
            "",
            f"inverse_running_mean run: a step takes {base['step_s_median']:.3f} s (median), "
            f"a step with the diagnostics {base['diagnostic_step_s_median']:.3f} s: "
            f"+{share:.0%} on that step, so {share / DEFAULT_EVERY:.2%} of the training time "
            f"at the default grad_log_every_n_steps = {DEFAULT_EVERY}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a `pila demo --out DIR` folder")
    parser.add_argument(
        "--work", type=Path, default=None, help="logs and configs (default: DEMO/grad_diagnostics)"
    )
    parser.add_argument("--regime", choices=("start", "late"), default="late")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated; empty: only rebuild the table",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    work = args.work or args.demo / "grad_diagnostics" / args.regime
    torch.set_num_threads(args.threads)
    for name in names:
        run_variant(args.demo, work, name, args.steps, args.every, args.regime)
    results = {n: read_json(work / f"{n}.json") for n in VARIANTS if (work / f"{n}.json").is_file()}
    meta = {
        "command": f"python benchmarks/grad_diagnostics.py --demo DIR --regime {args.regime} "
        f"--steps {args.steps} --every {args.every} --threads {args.threads}",
        "regime": args.regime,
        "commits": sorted({r.get("commit", "?") for r in results.values()}),
        "start": "trained stage C" if args.regime == "late" else "stage B",
        "steps": args.steps,
        "every": args.every,
        "machine": f"{platform.machine()}, {args.threads} threads, a CPU shared with other jobs",
    }
    RESULTS.mkdir(exist_ok=True)
    stem = f"grad_diagnostics_{args.regime}"
    write_json_atomic(RESULTS / f"{stem}.json", {"meta": meta, "variants": results})
    write_text_atomic(RESULTS / f"{stem}.md", markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()

"""``pila lab ablate``: adapter variants trained on the lab world and measured by the ruler.

The lab's version of the paper's Table 4 (lab.md, section 4). For every variant and
training seed, with one budget for all (the same clips, steps and schedules):

1. stages A → B → C on the lab world (``lightning_configs/lab/stage{A,B,C}.yaml`` with the
   variant's override file merged in); an override that sets ``init_from: null`` (the
   plain adapter) trains stage C only, from scratch, as the paper does;
2. the stage C checkpoint exported as an adapter folder;
3. one fixed evaluation set generated (``lightning_configs/lab/predict.yaml``'s settings,
   ``--eval-seeds`` videos per scene of the ``--eval-set`` chosen, :mod:`pila.lab.evalset`:
   held-out captions, every video its own noise draw, disjoint from every training clip);
4. the videos measured with :func:`pila.lab.evaluate.evaluate`.

The baseline (the world with no adapter) has no training, so one generation serves every
seed. Then :func:`aggregate` summarises per variant and scene over the training seeds:
mean violation and fidelity with 95 % intervals, and the paired difference to the
baseline and to the plain adapter with its interval.

Output folder::

    data/                          the training clips and latent cache, shared by every run
    eval_prompts.jsonl             the evaluation set's videos (prompt, scene, noise seed)
    runs/<variant>/seed<s>/        configs/ (the YAMLs run, re-runnable by hand), stageA/ …
                                   stageC/ (checkpoints, TensorBoard), adapter/, videos/,
                                   report/ (pila lab evaluate), done.json
    runs/baseline/                 videos/, report/, done.json
    report.json, report.md, report.png

``--backbone lab-moe`` trains and generates on the lab world's two-expert sibling
(:mod:`pila.lab.world_moe`); with ``--adapters-from DIR`` nothing trains: DIR's finished runs
(an ablation on ``lab``) are moved onto it unchanged, the paper's Wan 2.1 → Wan 2.2 transfer.

Another evaluation set (``--eval-set b``) in the same folder evaluates the same trained
runs again (nothing is retrained): its outputs carry the set's name, ``eval_prompts_b.jsonl``,
``runs/…/videos_b/``, ``report_b/``, ``done_b.json`` and ``report_b.json``/``.md``/``.png``.

A killed run resumes where it stopped when started again with the same arguments:
finished runs (``done.json``) and finished stages are kept, an unfinished stage restarts.
A run whose predict config changed (``predict.yaml``'s sampling, say) is generated again
from its kept adapter, and one whose adapter changed (a stage trained again) regenerates
its videos: ``configs/videos_made_by.json`` records the predict config and the adapter's
weights hash the videos were made with, and videos made otherwise move to
``superseded/<UTC time>/`` in the run's folder.

This module is the command and its loop over runs; the rows and the configs they derive
are :mod:`pila.lab.ablate_variants`, one run is :mod:`pila.lab.ablate_runs`, the table is
:mod:`pila.lab.ablate_report`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pila.io import read_json, write_json_atomic, write_text_atomic
from pila.lab.ablate_report import aggregate, decide, report_markdown, write_figure
from pila.lab.ablate_runs import PREDICT_BATCH, RunFailed, evaluation_prompts, execute_run
from pila.lab.ablate_variants import (
    BASELINE,
    DEFAULT_VARIANTS,
    FULL,
    PLAIN,
    REPO_CONFIGS,
    STAGES,
    Plan,
    Variant,
    check_stage_arguments,
    read_yaml,
    resolve_variant,
    stage_config,
)
from pila.lab.cli import ArgumentParser, UsageError, run_command
from pila.lab.evalset import DEFAULT_EVAL_SET, EVAL_SETS

log = logging.getLogger(__name__)

__all__ = [
    "BASELINE",
    "FULL",
    "LAB_CONFIGS",
    "PLAIN",
    "STAGES",
    "Plan",
    "RunFailed",
    "UsageError",
    "Variant",
    "ablate",
    "aggregate",
    "decide",
    "execute_run",
    "main",
    "resolve_variant",
    "stage_config",
]

PROG = "pila lab ablate"
LAB_CONFIGS = REPO_CONFIGS / "lab"
FIGURE_NAME = "report.png"


def ablate(
    out: Path,
    variants: Sequence[Variant],
    plan: Plan,
    threads: int | None = None,
    report_only: bool = False,
    predict_processes: int = 1,
    predict_batch: int = PREDICT_BATCH,
    decide_rule: bool = False,
) -> dict[str, Any]:
    """Run (or resume) every variant × seed, then write the report; returns report.json's
    object.

    ``threads``: torch CPU threads of the child processes (None: torch's choice).
    ``predict_processes``: processes that generate each run's evaluation set together,
    ``predict_batch`` videos per pipeline call (:func:`~pila.lab.ablate_runs.execute_run`).
    ``report_only``: run nothing, report the runs that have finished and name the others
    (an ablation cut short still gives its table).
    ``decide_rule``: the readings' decision rule against full PILA
    (:func:`~pila.lab.ablate_report.decide`) is applied and written under the table.
    """
    prompt_file = evaluation_prompts(out, plan)  # written once for every run
    jobs = [(v, s) for v in variants for s in (plan.seeds if v.trained else plan.seeds[:1])]
    start = time.perf_counter()
    results: dict[str, dict[int | None, dict[str, Any]]] = {}
    timings: dict[str, Any] = {}
    missing: list[str] = []
    for i, (variant, seed) in enumerate(jobs, 1):
        label = f"[{i}/{len(jobs)}] {variant.name}" + (f" seed {seed}" if variant.trained else "")
        t0 = time.perf_counter()
        done = execute_run(
            out,
            variant,
            seed,
            plan,
            label,
            threads,
            prompt_file,
            report_only,
            predict_processes,
            predict_batch,
        )
        if done is None:
            missing.append(label.split("] ", 1)[1])
            log.info("%s: not finished, left out of the report", label)
            continue
        elapsed = time.perf_counter() - start
        log.info(
            "%s: done in %.0f s (%.1f min so far; about %.1f min to go)",
            label,
            time.perf_counter() - t0,
            elapsed / 60,
            elapsed / i * (len(jobs) - i) / 60,
        )
        report = read_json(done["report"])
        results.setdefault(variant.name, {})[seed if variant.trained else None] = report
        timings[label.split("] ", 1)[1]] = done["seconds"]
    table = aggregate(results)
    wall = time.perf_counter() - start
    recorded_plan = {"variants": list(plan.variants), "seeds": list(plan.seeds), **plan.budget()}
    recorded_plan["eval_prompt_file"] = str(prompt_file)
    table.update(plan=recorded_plan, seconds=timings, wall_seconds=wall, missing=missing)
    if decide_rule:
        table["decision"] = decide(table)
    table["markdown"] = report_markdown(table, plan, wall)
    write_json_atomic(
        out / plan.named("report.json"), {k: v for k, v in table.items() if k != "markdown"}
    )
    write_text_atomic(out / plan.named("report.md"), table["markdown"])
    write_figure(out / plan.named(FIGURE_NAME), table)
    return table


# ------------------------------------------------------------------------- main
def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Train adapter variants on the lab world with one budget and compare "
        "them with the ruler.",
    )
    p.add_argument(
        "--out", required=True, help="output folder (runs, the shared training data and the report)"
    )
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated: baseline, full, plain (= plain_adapter), any "
        "lightning_configs/ablations/ stem, or a YAML path (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        default="3",
        help="training seeds per trained variant: N for 0 … N−1, or A-B for A … B (a "
        "confirmation on seeds a decision never saw: 3-7) (default: %(default)s; ours: the "
        "fewest that give an interval)",
    )
    p.add_argument(
        "--eval-seeds",
        type=int,
        default=16,
        help="videos per scene of the evaluation set, each its own noise draw (default: "
        "%(default)s, all of a shipped set; ours)",
    )
    p.add_argument(
        "--eval-set",
        default=DEFAULT_EVAL_SET,
        help=f"evaluation set: {', '.join(EVAL_SETS)} (pila.lab.evalset; other captions and "
        "noise draws each) or a JSONL prompt file with a scene and a seed per record "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every step count of the stage configs (default: %(default)s)",
    )
    p.add_argument(
        "--inference-steps",
        type=int,
        default=None,
        help="sampling steps of the evaluation set (default: predict.yaml's)",
    )
    p.add_argument(
        "--configs",
        default=str(LAB_CONFIGS),
        help="folder with stageA/B/C.yaml and predict.yaml (default: the lab's)",
    )
    p.add_argument(
        "--scenes",
        default=None,
        help="comma-separated: restrict the evaluation set to these scenes (default: all eight)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--predict-processes",
        type=int,
        default=1,
        help="processes that share each run's evaluation set (Lightning's DDP strategy on the "
        "CPU, --threads split between them; each video is still drawn from its own seed; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--predict-batch",
        type=int,
        default=PREDICT_BATCH,
        help="videos per pipeline call when generating the evaluation set (frames equal to "
        "one at a time up to float rounding; default: %(default)s)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        choices=("lab", "lab-moe"),
        help="the world the runs train on and generate with: lab, or lab-moe (the lab world in "
        "Wan 2.2's two-expert layout, both regimes corrected; pila.lab.world_moe) "
        "(default: the configs', the lab world)",
    )
    p.add_argument(
        "--adapters-from",
        default=None,
        help="another ablation's --out: its finished runs' adapters (and world_finetune's "
        "LoRA) are moved unchanged onto --backbone and measured there; nothing is trained "
        "(the paper's Wan 2.1 → Wan 2.2 transfer)",
    )
    p.add_argument(
        "--decide",
        action="store_true",
        help="apply the readings' decision rule against full PILA (candidate − full below 0 "
        "with its 95 %% interval; the lowest kept is proposed) and write it under the table "
        "(needs the full row)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train and generate nothing: report the runs of these variants and seeds that "
        "have finished (re-scored if the ruler changed) and name the others",
    )
    return p


def _variants(text: str) -> list[Variant]:
    """``--variants``: known names, each once."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise UsageError("--variants is empty; name at least one variant")
    variants = [resolve_variant(n) for n in names]
    if len({v.name for v in variants}) != len(variants):
        raise UsageError(f"--variants names a variant twice: {text}")
    return variants


def _seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: ``N`` for seeds 0 … N−1, ``A-B`` for A … B (both ends included)."""
    found = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if found is None:
        raise UsageError(f"--seeds {text!r}: give a count N (seeds 0 … N−1) or a range A-B")
    first, last = found.groups()
    if last is None:
        if int(first) < 1:
            raise UsageError(f"--seeds must be ≥ 1, got {text}")
        return tuple(range(int(first)))
    if int(last) < int(first):
        raise UsageError(f"--seeds {text}: the range ends before it starts; write A-B with A ≤ B")
    return tuple(range(int(first), int(last) + 1))


def _scenes(text: str | None) -> tuple[str, ...] | None:
    """``--scenes``: known scene names (None: all)."""
    if text is None:
        return None
    from pila.lab.scenes import SCENES

    scenes = tuple(s.strip() for s in text.split(",") if s.strip())
    if not scenes or any(s not in SCENES for s in scenes):
        raise UsageError(f"--scenes {text!r}: unknown or none; valid: {', '.join(SCENES)}")
    return scenes


def _adapters_from(text: str | None) -> str | None:
    """``--adapters-from``: an existing ablation folder, absolute."""
    if text is None:
        return None
    folder = Path(text).resolve()
    if not (folder / "runs").is_dir():
        raise UsageError(f"--adapters-from {text}: no ablation there (no runs/ folder)")
    return str(folder)


def _check_transfer(plan: Plan, variants: Sequence[Variant]) -> None:
    """Every moved run exists before anything is generated; a two-expert world cannot train
    world_finetune (one transformer's LoRA), it can only receive it."""
    from pila.lab.ablate_runs import moved_adapter

    for variant in variants:
        if not variant.trained:
            continue
        if plan.adapters_from is not None:
            for seed in plan.seeds:
                moved_adapter(plan, variant, seed)
        elif variant.retrains_world and plan.backbone == "lab-moe":
            raise UsageError(
                f"{variant.name} fine-tunes one transformer and lab-moe has two; measure it "
                "moved from the lab world (--adapters-from a lab ablation's --out)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pila lab ablate``; a bad command line is one line and exit status 2, a failed
    run exit status 1."""
    return run_command(PROG, _run, argv)


def _run(argv: list[str]) -> int:
    from pila import logs

    args = build_parser().parse_args(argv)
    variants = _variants(args.variants)
    if args.decide and FULL not in {v.name for v in variants}:
        raise UsageError("--decide compares every candidate with full PILA: add full to --variants")
    seeds = _seeds(args.seeds)
    if args.eval_seeds < 1:
        raise UsageError(f"--eval-seeds must be ≥ 1, got {args.eval_seeds}")
    if not args.steps_scale > 0:
        raise UsageError(f"--steps-scale must be > 0, got {args.steps_scale}")
    if args.inference_steps is not None and args.inference_steps < 1:
        raise UsageError(f"--inference-steps must be ≥ 1, got {args.inference_steps}")
    configs = Path(args.configs).resolve()
    for name in (*STAGES, "predict"):
        read_yaml(configs / f"{name}.yaml")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be ≥ 1, got {args.threads}")
    if args.predict_processes < 1:
        raise UsageError(f"--predict-processes must be ≥ 1, got {args.predict_processes}")
    if args.predict_batch < 1:
        raise UsageError(f"--predict-batch must be ≥ 1, got {args.predict_batch}")
    scenes = _scenes(args.scenes)
    check_stage_arguments(variants, configs)
    logs.configure(fmt="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    plan = Plan(
        variants=tuple(v.name for v in variants),
        seeds=seeds,
        eval_seeds=args.eval_seeds,
        steps_scale=args.steps_scale,
        inference_steps=args.inference_steps,
        configs=str(configs),
        scenes=scenes,
        eval_set=args.eval_set,
        backbone=args.backbone,
        adapters_from=_adapters_from(args.adapters_from),
    )
    _check_transfer(plan, variants)
    out = Path(args.out).resolve()
    evaluation_prompts(out, plan)  # a set short of prompts is a usage error, before training
    try:
        table = ablate(
            out,
            variants,
            plan,
            threads=args.threads,
            report_only=args.report_only,
            predict_processes=args.predict_processes,
            predict_batch=args.predict_batch,
            decide_rule=args.decide,
        )
    except RunFailed as err:
        sys.stderr.write(f"{PROG}: {err}\n")
        return 1
    sys.stdout.write(table["markdown"])
    written = f"{out / 'report.md'}, {out / 'report.json'}, {out / FIGURE_NAME}"
    sys.stdout.write(f"\nwrote {written}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

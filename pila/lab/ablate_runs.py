"""One run of ``pila lab ablate``: a variant's stages trained for one seed, its adapter
exported, the evaluation set generated and measured, each step resumed where it stopped.

Every stage and generation is ``pila fit|predict`` in a child process (:func:`run_pila`)
with the YAML :mod:`pila.lab.ablate_variants` derives, written into the run's
``configs/`` so it can be re-run by hand.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pila.io import read_json, write_json_atomic, write_text_atomic
from pila.lab.ablate_variants import (
    FULL,
    Plan,
    Variant,
    predict_config,
    read_yaml,
    resolve_variant,
    stage_config,
    write_yaml,
)
from pila.lab.cli import UsageError

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """A stage or the generation of one run failed; finished runs are kept."""


def run_pila(args: Sequence[str], threads: int | None = None) -> None:
    """Run ``pila <args>`` in a child process: each stage and generation gets a fresh
    LightningCLI and interpreter, and a failure stops this run, not the finished ones."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's CPU threads in the child
    command = [sys.executable, "-m", "pila", *args]
    returncode = subprocess.run(command, env=env, check=False).returncode
    if returncode != 0:
        raise RunFailed(
            f"`pila {' '.join(args)}` failed (exit status {returncode}); finished runs are "
            "kept: start the same pila lab ablate again to resume"
        )


PREDICT_BATCH = 4
"""Ours: videos per pipeline call when a run generates its evaluation set; four took 0.58 of
the time of one at a time on the lab world on two free CPU threads (8: 0.64, 16: 0.67;
``benchmarks/results/lab_predict_batch.md``)."""


def predict_command(
    config: Path, threads: int | None, processes: int, batch: int = 1
) -> tuple[list[str], int | None]:
    """``pila predict`` arguments and torch threads per process for ``processes`` processes
    generating ``batch`` videos per pipeline call: several processes run Lightning's DDP
    strategy on the CPU (each takes every ``processes``-th video,
    :func:`pila.generation.prompts.shard_indices`), with ``threads`` split between them.

    Neither is part of the predict config a run records: both change how the videos are
    computed, not what they are (float rounding aside)."""
    args = ["predict", "--config", str(config)]
    if batch != 1:
        args += ["--data.init_args.batch_size", str(batch)]
    if processes == 1:
        return args, threads
    args += ["--trainer.devices", str(processes), "--trainer.strategy", "ddp"]
    return args, max(1, (threads or os.cpu_count() or 1) // processes)


def eval_set_file(name: str) -> Path:
    """The prompt file of an evaluation set: a name of :data:`pila.lab.evalset.EVAL_SETS` or
    a JSONL path."""
    from pila.lab.evalset import EVAL_SETS

    if name in EVAL_SETS:
        return EVAL_SETS[name].path
    path = Path(name)
    if not (name.endswith(".jsonl") and path.is_file()):
        raise UsageError(
            f"--eval-set {name!r}: neither a set ({', '.join(EVAL_SETS)}) nor a JSONL file"
        )
    return path.resolve()


def evaluation_prompts(out: Path, plan: Plan) -> Path:
    """The evaluation set's videos, written once into ``out``: the first ``plan.eval_seeds``
    records of each scene of ``plan.eval_set`` (of ``plan.scenes``; None: all), one video
    per record with the record's own noise seed."""
    from pila.lab.evalset import jsonl, read_records, select

    source = eval_set_file(plan.eval_set)
    records = read_records(source)
    seeds = [r.get("seed") for r in records]
    if None in seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"{source}: every record needs its own 'seed' (one noise draw a video)")
    kept = select(records, plan.scenes, plan.eval_seeds)
    wanted = plan.scenes or tuple(dict.fromkeys(r.get("scene") for r in records))
    counts = {s: sum(r.get("scene") == s for r in kept) for s in wanted}
    short = sorted(s for s, n in counts.items() if n < plan.eval_seeds)
    if short:
        raise UsageError(
            f"--eval-seeds {plan.eval_seeds}: {source} has fewer prompts of "
            f"{', '.join(short)} (at most {min(counts.values())}); ask for fewer"
        )
    target = out / plan.named("eval_prompts.jsonl")
    write_text_atomic(target, jsonl(kept))
    return target


def run_folder(out: Path, variant: Variant, seed: int) -> Path:
    folder = out / "runs" / variant.name
    return folder / f"seed{seed}" if variant.trained else folder


def _done(folder: Path, plan: Plan, predict: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The run's done.json if it finished under the same budget (and, given, the same
    predict config), else None."""
    marker = folder / plan.named("done.json")
    if not marker.is_file():
        return None
    done = read_json(marker)
    if done.get("budget") != plan.budget():
        return None
    if predict is not None and done.get("predict") != predict:
        return None
    return done


def supersede(folder: Path, names: Sequence[str]) -> Path | None:
    """Move ``folder/<name>`` for each name that exists into
    ``folder/superseded/<UTC time>/``; returns that folder.

    Videos generated under another predict config or by an adapter since retrained must not
    be resumed as if finished (the writer keeps what a killed run wrote), and must not be lost.
    """
    present = [folder / name for name in names if (folder / name).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = folder / "superseded" / stamp, 0
    while target.exists():
        n += 1
        target = folder / "superseded" / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for path in present:
        path.rename(target / path.name)
    return target


def moved_adapter(plan: Plan, variant: Variant, seed: int) -> Path:
    """The adapter (or world_finetune's LoRA) a run of ``plan.adapters_from`` trained, for a
    run that moves it onto ``plan.backbone`` unchanged."""
    assert plan.adapters_from is not None
    source = run_folder(Path(plan.adapters_from), variant, seed)
    adapter = source / "adapter"
    if not (source / "done.json").is_file() or not adapter.is_dir():
        raise UsageError(
            f"--adapters-from {plan.adapters_from}: {variant.name} seed {seed} has not finished "
            f"there ({source}); finish that ablation first or ask for fewer --seeds"
        )
    return adapter


def _train(
    out: Path, variant: Variant, seed: int, plan: Plan, label: str, threads: int | None
) -> tuple[Path, dict[str, float]]:
    """Train the variant's stages of one run (finished stages kept); returns the folder the
    stages are in and the seconds of each stage trained now."""
    # a generation-only variant trains in (and reuses) full PILA's run of the same seed
    trainer_variant = resolve_variant(FULL) if variant.trains_as_full else variant
    train_folder = run_folder(out, trainer_variant, seed)
    timings: dict[str, float] = {}
    for stage in trainer_variant.stages:
        stage_done = train_folder / stage / "finished.json"
        base = read_yaml(Path(plan.configs) / f"{stage}.yaml")
        cfg = stage_config(
            base,
            trainer_variant,
            stage,
            train_folder,
            out / "data",
            seed,
            plan.steps_scale,
            backbone=plan.backbone,
        )
        path = write_yaml(train_folder / "configs" / f"{stage}.yaml", cfg)
        if stage_done.is_file() and read_json(stage_done).get("config") == cfg:
            log.info("%s: %s finished before, kept", label, stage)
            continue
        steps = cfg["trainer"]["max_steps"]
        log.info("%s: %s, %d steps (pila fit --config %s)", label, stage, steps, path)
        start = time.perf_counter()
        run_pila(["fit", "--config", str(path)], threads)
        timings[stage] = time.perf_counter() - start
        write_json_atomic(stage_done, {"config": cfg, "seconds": timings[stage]})
    return train_folder, timings


def execute_run(
    out: Path,
    variant: Variant,
    seed: int,
    plan: Plan,
    label: str,
    threads: int | None = None,
    prompt_file: Path | None = None,
    report_only: bool = False,
    predict_processes: int = 1,
    predict_batch: int = PREDICT_BATCH,
) -> dict[str, Any] | None:
    """Train (unless the baseline), export, generate and evaluate one run; resumes finished
    steps.

    ``predict_processes``: more than one generates the evaluation set in that many
    processes (:func:`predict_command`), ``predict_batch`` videos per pipeline call; each
    video is still drawn from its own seed (a process of fewer threads or a batch may sum in
    another order: float round-off).

    ``prompt_file``: the evaluation set's videos (:func:`evaluation_prompts`; None:
    predict.yaml's prompt file, one video a prompt). ``report_only``: run nothing; a run
    that has not finished under this budget gives None (a finished one is still re-scored
    when the ruler changed).
    """
    from pila.adapter.loading import folder_weights_sha256
    from pila.lab.evaluate import evaluate
    from pila.lab.ruler import ruler_identity
    from pila.stages.export import export_checkpoint

    folder = run_folder(out, variant, seed)
    adapter = folder / "adapter" if variant.trained else None
    if plan.adapters_from is not None and variant.trained:  # moved, not trained here
        adapter = moved_adapter(plan, variant, seed)
    # this evaluation set's outputs: videos/, report/, done.json for set a; videos_b/ … for b
    videos, reports, marker_name = (plan.named(n) for n in ("videos", "report", "done.json"))
    predict = predict_config(
        read_yaml(Path(plan.configs) / "predict.yaml"),
        folder,
        adapter,
        plan.inference_steps,
        prompt_file,
        variant.sampling,
        retrains_world=variant.retrains_world,
        videos=videos,
        backbone=plan.backbone,
    )
    done = _done(folder, plan, predict)
    if done is None and report_only:
        return None
    if done is not None and done.get("ruler") == ruler_identity():
        log.info("%s: finished before, kept (%s)", label, folder)
        return done
    if done is not None:  # the same videos, measured by another ruler: measure them again
        log.info("%s: finished before under another ruler; its videos re-scored", label)
        start = time.perf_counter()
        report = evaluate(folder / videos, folder / reports)
        done["seconds"]["evaluate"] = time.perf_counter() - start
        done.update(overall=report["overall"], ruler=report["ruler"])
        write_json_atomic(folder / marker_name, done)
        return done
    timings: dict[str, float] = {}
    if plan.adapters_from is None:
        train_folder, timings = _train(out, variant, seed, plan, label, threads)
        if variant.trained:
            last = train_folder / variant.stages[-1] / "checkpoints" / "last.ckpt"
            export_checkpoint(last, adapter)  # an adapter, or world_finetune's LoRA
    # what the videos are made by; videos of anything else are moved aside, not resumed
    made_by = {
        "predict": predict,
        "adapter_sha256": folder_weights_sha256(adapter)[0] if adapter else None,
    }
    marker = folder / "configs" / plan.named("videos_made_by.json")
    if (folder / videos).exists() and (not marker.is_file() or read_json(marker) != made_by):
        moved = supersede(folder, (videos, reports))
        log.info("%s: videos of another adapter or predict config moved to %s", label, moved)
    write_json_atomic(marker, made_by)
    path = write_yaml(folder / "configs" / plan.named("predict.yaml"), predict)
    log.info("%s: generating the evaluation set (pila predict --config %s)", label, path)
    start = time.perf_counter()
    # the writer keeps the videos a killed run finished
    run_pila(*predict_command(path, threads, predict_processes, predict_batch))
    timings["predict"] = time.perf_counter() - start
    start = time.perf_counter()
    report = evaluate(folder / videos, folder / reports)
    timings["evaluate"] = time.perf_counter() - start
    done = {
        "variant": variant.name,
        "seed": seed if variant.trained else None,
        "budget": plan.budget(),
        "predict": predict,
        "seconds": timings,
        "report": str(folder / reports / "report.json"),
        "overall": report["overall"],
        "ruler": report["ruler"],
    }
    write_json_atomic(folder / marker_name, done)
    return done

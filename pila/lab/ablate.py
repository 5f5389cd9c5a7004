"""``pila lab ablate``: adapter variants trained on the lab world and measured by the ruler.

The lab's version of the paper's Table 4 (lab.md, section 4). For every variant and
training seed, with one budget for all (the same clips, steps and schedules):

1. stages A → B → C on the lab world (``lightning_configs/lab/stage{A,B,C}.yaml`` with the
   variant's override file merged in); an override that sets ``init_from: null`` (the
   plain adapter) trains stage C only, from scratch, as the paper does;
2. the stage C checkpoint exported as an adapter folder;
3. one fixed evaluation set generated (``lightning_configs/lab/predict.yaml``: every scene's
   held-out prompt × ``--eval-seeds`` sampling seeds, disjoint from every training clip);
4. the videos measured with :func:`pila.lab.evaluate.evaluate`.

The baseline (the world with no adapter) has no training, so one generation serves every
seed. Then :func:`aggregate` summarises per variant and scene over the training seeds:
mean violation and fidelity with 95 % intervals, and the paired difference to the
baseline and to the plain adapter with its interval.

Output folder::

    data/                          the training clips and latent cache, shared by every run
    runs/<variant>/seed<s>/        configs/ (the YAMLs run, re-runnable by hand), stageA/ …
                                   stageC/ (checkpoints, TensorBoard), adapter/, videos/,
                                   report/ (pila lab evaluate), done.json
    runs/baseline/                 videos/, report/, done.json
    report.json, report.md, report.png

A killed run resumes where it stopped when started again with the same arguments:
finished runs (``done.json``) and finished stages are kept, an unfinished stage restarts.
A run whose predict config changed (``predict.yaml``'s sampling, say) is generated again
from its kept adapter, and one whose adapter changed (a stage trained again) regenerates
its videos: ``configs/videos_made_by.json`` records the predict config and the adapter's
weights hash the videos were made with, and videos made otherwise move to
``superseded/<UTC time>/`` in the run's folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pila import configs as packaged_configs
from pila.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

PROG = "pila lab ablate"
REPO_CONFIGS = packaged_configs.ROOT  # the shipped configs, found through the package
LAB_CONFIGS = REPO_CONFIGS / "lab"
ABLATIONS = REPO_CONFIGS / "ablations"
READINGS = REPO_CONFIGS / "readings"
"""Override files of the method readings R1–R5 (``design/pila-method.md`` §7); variants too."""
STAGES = ("stageA", "stageB", "stageC")
BASELINE, PLAIN, FULL = "baseline", "plain_adapter", "full"
ALIASES = {"plain": PLAIN, "ours": FULL}
DEFAULT_VARIANTS = (BASELINE, PLAIN, FULL)
STEP_KEYS = ("max_steps", "val_check_interval", "every_n_train_steps", "steps_per_phase", "steps", "physical_mask_steps")
"""Config keys counted in optimiser steps, scaled together by ``--steps-scale``."""

FIGURE_NAME = "report.png"


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


class RunFailed(RuntimeError):
    """A stage or the generation of one run failed; finished runs are kept."""


def run_pila(args: Sequence[str], threads: int | None = None) -> None:
    """Run ``pila <args>`` in a child process: each stage and generation gets a fresh
    LightningCLI and interpreter, and a failure stops this run, not the finished ones."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's CPU threads in the child
    returncode = subprocess.run([sys.executable, "-m", "pila", *args], env=env, check=False).returncode
    if returncode != 0:
        raise RunFailed(f"`pila {' '.join(args)}` failed (exit status {returncode}); finished runs are kept: start the same pila lab ablate again to resume")


# -------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One row of the table.

    Attributes:
        name: the row's name (an override file's stem, ``full`` or ``baseline``).
        override: the override merged into every stage config (None: the full model).
        stages: the stages it trains (empty for the baseline).
        sampling: generation settings merged into the predict config's
            ``model.init_args.sampling`` (an override file's ``model.init_args.sampling``:
            a reading of how the adapter samples, such as R3; None: the config's own).
    """

    name: str
    override: dict[str, Any] | None
    stages: tuple[str, ...]
    sampling: dict[str, Any] | None = None

    @property
    def trained(self) -> bool:
        return bool(self.stages)

    @property
    def trains_as_full(self) -> bool:
        """It trains exactly as full PILA (a generation reading such as R3): its training is shared with ``full``'s."""
        def empty(node: Any) -> bool:
            return isinstance(node, dict) and all(empty(v) for v in node.values())

        return self.name != FULL and self.stages == STAGES and (self.override is None or empty(self.override))


def available_variants(ablations: Path = ABLATIONS) -> list[str]:
    """Every variant name ``--variants`` accepts: baseline, full and the override files (ablations, readings)."""
    return [BASELINE, FULL, *sorted(p.stem for folder in (ablations, READINGS) for p in folder.glob("*.yaml"))]


def resolve_variant(name: str, ablations: Path = ABLATIONS) -> Variant:
    """A variant by name (``baseline``, ``full``, ``plain``, an override file's stem or a YAML path)."""
    name = ALIASES.get(name, name)
    if name == BASELINE:
        return Variant(BASELINE, None, ())
    if name == FULL:
        return Variant(FULL, None, STAGES)
    path = Path(name) if name.endswith((".yaml", ".yml")) else ablations / f"{name}.yaml"
    if not path.is_file() and (READINGS / f"{name}.yaml").is_file():
        path = READINGS / f"{name}.yaml"
    if not path.is_file():
        raise UsageError(f"unknown variant {name!r}: no {path}; valid: {', '.join(available_variants(ablations))}, or a YAML file")
    override = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(override, dict):
        raise UsageError(f"variant file {path} is not a YAML mapping")
    init_args = override.get("model", {}).get("init_args", {})
    sampling = init_args.pop("sampling", None)  # a predict setting, not a stage argument
    if sampling is not None and not isinstance(sampling, dict):
        raise UsageError(f"variant file {path}: model.init_args.sampling must be a mapping of generation settings")
    stages = ("stageC",) if "init_from" in init_args and init_args["init_from"] is None else STAGES
    return Variant(path.stem, override, stages, sampling)


# ---------------------------------------------------------------- derived configs
def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in (mappings recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def scale_steps(node: Any, scale: float) -> Any:
    """Every step count (:data:`STEP_KEYS`) in a config tree × ``scale``, at least 1."""
    if isinstance(node, dict):
        return {k: (max(1, round(v * scale)) if k in STEP_KEYS and isinstance(v, int) and not isinstance(v, bool) else scale_steps(v, scale)) for k, v in node.items()}
    if isinstance(node, list):
        return [scale_steps(v, scale) for v in node]
    return node


def _callbacks(config: dict[str, Any]) -> list[dict[str, Any]]:
    callbacks = config.setdefault("trainer", {}).setdefault("callbacks", [])
    return callbacks if isinstance(callbacks, list) else [callbacks]


def stage_arguments(class_path: str) -> set[str]:
    """The named ``__init__`` arguments of a stage class and of its bases (e.g. ``pila.stages.StageB``)."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}


def check_stage_arguments(variants: Sequence[Variant], configs: Path) -> None:
    """A stage argument of an override that no stage takes (a typo) is a usage error, not silently dropped."""
    accepted: set[str] = set()
    for stage in STAGES:
        class_path = _read_yaml(configs / f"{stage}.yaml").get("model", {}).get("class_path")
        if class_path:
            accepted |= stage_arguments(class_path)
    for variant in variants:
        unknown = sorted(set((variant.override or {}).get("model", {}).get("init_args", {})) - accepted)
        if unknown:
            raise UsageError(f"variant {variant.name!r} sets {', '.join(unknown)}, which no stage takes; check the override file's model.init_args")


def stage_config(base: dict[str, Any], variant: Variant, stage: str, run: Path, data: Path, seed: int, scale: float) -> dict[str, Any]:
    """The config one stage of one run trains with: the lab stage config, the variant's
    override, the run's folders and seed, and the step budget.

    A stage argument of the override that this stage's class does not take (such as stage
    B's ``physical_mask_steps``) is left out of this stage's config.
    """
    override = copy.deepcopy(variant.override or {})
    own = override.get("model", {}).get("init_args", {})
    if own and base.get("model", {}).get("class_path"):
        accepted = stage_arguments(base["model"]["class_path"])
        for key in [k for k in own if k not in accepted]:
            del own[key]
    cfg = scale_steps(deep_merge(base, override), scale)
    cfg["seed_everything"] = seed
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run / stage)
    logger = trainer.get("logger")
    if isinstance(logger, dict) and "init_args" in logger:
        logger["init_args"].update(save_dir=str(run), name=stage, version="")
    for callback in _callbacks(cfg):
        if callback.get("class_path", "").endswith("ModelCheckpoint"):
            # one checkpoint at the stage's end, the one the next stage starts from
            callback.setdefault("init_args", {}).update(dirpath=str(run / stage / "checkpoints"), save_last=True, every_n_train_steps=trainer["max_steps"])
    init_args = cfg.setdefault("model", {}).setdefault("init_args", {})
    previous = STAGES[STAGES.index(stage) - 1] if stage != STAGES[0] else None
    if previous in variant.stages:
        init_args["init_from"] = str(run / previous / "checkpoints" / "last.ckpt")
    cfg.setdefault("data", {}).setdefault("init_args", {})["root"] = str(data)
    return cfg


def predict_config(
    base: dict[str, Any],
    run: Path,
    adapter: Path | None,
    eval_seeds: int,
    inference_steps: int | None,
    prompt_file: Path | None = None,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fixed evaluation set's predict config for one run (the same prompts and seeds for every run).

    ``prompt_file`` replaces the config's prompt file (e.g. one restricted to some scenes);
    ``sampling`` (a variant's generation settings) is merged into the sampling settings.
    """
    cfg = copy.deepcopy(base)
    cfg["seed_everything"] = 0  # the evaluation set does not depend on the training seed
    cfg.setdefault("trainer", {})["default_root_dir"] = str(run / "videos")
    for callback in _callbacks(cfg):
        if callback.get("class_path", "").endswith("VideoPredictionWriter"):
            callback.setdefault("init_args", {})["output_dir"] = str(run / "videos")
    init_args = cfg.setdefault("model", {}).setdefault("init_args", {})
    init_args["adapter"] = None if adapter is None else str(adapter)
    if sampling:
        init_args["sampling"] = {**(init_args.get("sampling") or {}), **sampling}
    if inference_steps is not None:
        init_args.setdefault("sampling", {})["num_inference_steps"] = inference_steps
    data = cfg.setdefault("data", {}).setdefault("init_args", {})
    data["videos_per_prompt"] = eval_seeds
    if prompt_file is not None:
        data["prompt_file"] = str(prompt_file)
    elif data.get("prompt_file") and not Path(data["prompt_file"]).is_absolute():
        data["prompt_file"] = str((REPO_CONFIGS.parent / data["prompt_file"]).resolve())
    return cfg


def _write_yaml(path: Path, cfg: dict[str, Any]) -> Path:
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


# ------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Plan:
    """What one ablation trains and measures (recorded in report.json)."""

    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    eval_seeds: int
    steps_scale: float
    inference_steps: int | None
    configs: str
    scenes: tuple[str, ...] | None = None

    def budget(self) -> dict[str, Any]:
        return {
            "eval_seeds": self.eval_seeds,
            "steps_scale": self.steps_scale,
            "inference_steps": self.inference_steps,
            "configs": self.configs,
            "scenes": list(self.scenes) if self.scenes else None,
        }


def evaluation_prompts(out: Path, plan: Plan) -> Path | None:
    """The predict config's prompt file restricted to ``plan.scenes`` (written once into ``out``), or None for all."""
    if not plan.scenes:
        return None
    base = _read_yaml(Path(plan.configs) / "predict.yaml")
    source = Path(base["data"]["init_args"]["prompt_file"])
    source = source if source.is_absolute() else REPO_CONFIGS.parent / source
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [r for r in records if r.get("scene") in plan.scenes]
    missing = sorted(set(plan.scenes) - {r["scene"] for r in kept})
    if missing:
        raise UsageError(f"--scenes {', '.join(missing)}: {source} has no prompt of that scene")
    target = out / "eval_prompts.jsonl"
    write_text_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return target


def run_folder(out: Path, variant: Variant, seed: int) -> Path:
    return out / "runs" / variant.name if not variant.trained else out / "runs" / variant.name / f"seed{seed}"


def _done(folder: Path, plan: Plan, predict: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The run's done.json if it finished under the same budget (and, given, the same predict config), else None."""
    marker = folder / "done.json"
    if not marker.is_file():
        return None
    done = json.loads(marker.read_text(encoding="utf-8"))
    if done.get("budget") != plan.budget() or (predict is not None and done.get("predict") != predict):
        return None
    return done


def supersede(folder: Path, names: Sequence[str]) -> Path | None:
    """Move ``folder/<name>`` for each name that exists into ``folder/superseded/<UTC time>/``; returns that folder.

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


def execute_run(
    out: Path, variant: Variant, seed: int, plan: Plan, label: str, threads: int | None = None, prompt_file: Path | None = None
) -> dict[str, Any]:
    """Train (unless the baseline), export, generate and evaluate one run; resumes finished steps.

    ``prompt_file``: the evaluation set's prompt file (:func:`evaluation_prompts`; None: predict.yaml's).
    """
    from pila.adapter.pretrained import folder_weights_sha256
    from pila.lab.evaluate import evaluate
    from pila.stages.export import export_adapter

    folder = run_folder(out, variant, seed)
    configs = Path(plan.configs)
    adapter = folder / "adapter" if variant.trained else None
    predict = predict_config(_read_yaml(configs / "predict.yaml"), folder, adapter, plan.eval_seeds, plan.inference_steps, prompt_file, variant.sampling)
    done = _done(folder, plan, predict)
    if done is not None:
        log.info("%s: finished before, kept (%s)", label, folder)
        return done
    timings: dict[str, float] = {}
    # a generation-only variant trains in (and reuses) full PILA's run of the same seed
    trainer_variant = resolve_variant(FULL) if variant.trains_as_full else variant
    train_folder = run_folder(out, trainer_variant, seed)
    for stage in trainer_variant.stages:
        stage_done = train_folder / stage / "finished.json"
        cfg = stage_config(_read_yaml(configs / f"{stage}.yaml"), trainer_variant, stage, train_folder, out / "data", seed, plan.steps_scale)
        path = _write_yaml(train_folder / "configs" / f"{stage}.yaml", cfg)
        if stage_done.is_file() and json.loads(stage_done.read_text(encoding="utf-8")).get("config") == cfg:
            log.info("%s: %s finished before, kept", label, stage)
            continue
        log.info("%s: %s, %d steps (pila fit --config %s)", label, stage, cfg["trainer"]["max_steps"], path)
        start = time.perf_counter()
        run_pila(["fit", "--config", str(path)], threads)
        timings[stage] = time.perf_counter() - start
        write_json_atomic(stage_done, {"config": cfg, "seconds": timings[stage]})
    if variant.trained:
        export_adapter(train_folder / variant.stages[-1] / "checkpoints" / "last.ckpt", adapter)
    # what the videos are made by; videos of anything else are moved aside, not resumed
    made_by = {"predict": predict, "adapter_sha256": folder_weights_sha256(adapter)[0] if adapter else None}
    marker = folder / "configs" / "videos_made_by.json"
    if (folder / "videos").exists() and (not marker.is_file() or json.loads(marker.read_text(encoding="utf-8")) != made_by):
        moved = supersede(folder, ("videos", "report"))
        log.info("%s: videos of another adapter or predict config moved to %s", label, moved)
    write_json_atomic(marker, made_by)
    path = _write_yaml(folder / "configs" / "predict.yaml", predict)
    log.info("%s: generating the evaluation set (pila predict --config %s)", label, path)
    start = time.perf_counter()
    run_pila(["predict", "--config", str(path)], threads)  # the writer keeps videos a killed run finished
    timings["predict"] = time.perf_counter() - start
    start = time.perf_counter()
    report = evaluate(folder / "videos", folder / "report")
    timings["evaluate"] = time.perf_counter() - start
    done = {
        "variant": variant.name,
        "seed": seed if variant.trained else None,
        "budget": plan.budget(),
        "predict": predict,
        "seconds": timings,
        "report": str(folder / "report" / "report.json"),
        "overall": report["overall"],
    }
    write_json_atomic(folder / "done.json", done)
    return done


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{path} is missing: --configs must hold stageA/B/C.yaml and predict.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


# ------------------------------------------------------------------- statistics
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(df: int) -> float:
    """Student's t 0.975 quantile for ``df`` degrees of freedom (table; the next lower listed df; 1.96 beyond 30)."""
    if df > 30:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and its 95 % Student-t interval (None for fewer than two values)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci95": None, "n": 1}
    half = t_quantile(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return {"mean": float(v.mean()), "ci95": [float(v.mean() - half), float(v.mean() + half)], "n": int(len(v))}


def _per_video(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(e["video"]).name: e for e in report["videos"]}


def _scene_means(videos: dict[str, dict[str, Any]], key: str) -> dict[str, float]:
    scenes: dict[str, list[float]] = {}
    for entry in videos.values():
        scenes.setdefault(entry["scene"], []).append(entry[key])
    return {scene: float(np.mean(v)) for scene, v in scenes.items()}


def _summary(videos: dict[str, dict[str, Any]], key: str) -> dict[str, float]:
    """Per scene mean of ``key``, and ``overall``: the mean over scenes (each scene weighs the same)."""
    means = _scene_means(videos, key)
    return {**means, "overall": float(np.mean(list(means.values()))) if means else float("nan")}


def aggregate(results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Summarise ``results[variant][seed] = report.json`` into the table's rows.

    With two or more training seeds, intervals are over the seeds (a seed's value is its
    mean over the evaluation set) and differences are paired by seed (the baseline's one
    generation pairs with every seed). With one seed, intervals are over the evaluation
    videos and differences are paired by video (the same prompt and sampling seed).
    """
    rows: dict[str, Any] = {}
    seeds = sorted({s for runs in results.values() for s in runs if s is not None})
    references = {"vs_baseline": (BASELINE, results.get(BASELINE, {})), "vs_plain": (PLAIN, results.get(PLAIN, {})), "vs_full": (FULL, results.get(FULL, {}))}

    def reference(runs: dict[int, dict[str, Any]], seed: int) -> dict[str, Any] | None:
        if not runs:
            return None
        return runs.get(seed) or (runs[next(iter(runs))] if len(runs) == 1 else None)

    for name, runs in results.items():
        by_seed = {s: _per_video(r) for s, r in runs.items()}
        row: dict[str, Any] = {"seeds": sorted(s for s in runs if s is not None), "violation": {}, "fidelity": {}, "vs_baseline": {}, "vs_plain": {}, "vs_full": {}}
        scene_names = sorted({e["scene"] for v in by_seed.values() for e in v.values()}) + ["overall"]
        over_seeds = len(by_seed) >= 2
        row["interval_over"] = "training seeds" if over_seeds else "evaluation videos"
        for key in ("violation", "fidelity"):
            for scene in scene_names:
                if over_seeds:
                    row[key][scene] = interval([_summary(v, key).get(scene) for v in by_seed.values()])
                else:
                    only = next(iter(by_seed.values()), {})
                    row[key][scene] = interval(_video_values(only, key, scene))
        for key, (ref_name, ref_runs) in references.items():
            if name == ref_name or not ref_runs:
                continue
            target = row[key]
            for scene in scene_names:
                if over_seeds or len(ref_runs) >= 2:
                    diffs = []
                    for s in seeds or [None]:
                        mine, ref = reference(runs, s), reference(ref_runs, s)
                        if mine is not None and ref is not None:
                            diffs.append(_summary(_per_video(mine), "violation").get(scene, float("nan")) - _summary(_per_video(ref), "violation").get(scene, float("nan")))
                    target[scene] = interval(diffs)
                else:
                    mine = next(iter(by_seed.values()), {})
                    ref = _per_video(next(iter(ref_runs.values())))
                    target[scene] = interval(_paired_video_diffs(mine, ref, scene))
        rows[name] = row
    return {"rows": rows, "seeds": seeds}


def _video_values(videos: dict[str, dict[str, Any]], key: str, scene: str) -> list[float]:
    if scene == "overall":
        return [e[key] for e in videos.values()]
    return [e[key] for e in videos.values() if e["scene"] == scene]


def _paired_video_diffs(mine: dict[str, dict[str, Any]], ref: dict[str, dict[str, Any]], scene: str) -> list[float]:
    shared = [k for k in mine if k in ref and (scene == "overall" or mine[k]["scene"] == scene)]
    return [mine[k]["violation"] - ref[k]["violation"] for k in shared]


# ---------------------------------------------------------------------- report
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
    lines = [
        "# The lab's Table 4",
        "",
        f"Variants trained on the lab world with one budget (configs `{plan.configs}`, steps × {plan.steps_scale:g}), "
        f"training seeds {', '.join(map(str, table['seeds'])) or '–'}; evaluation set: every scene's held-out prompt × "
        f"{plan.eval_seeds} sampling seeds"
        + (f", {plan.inference_steps} sampling steps" if plan.inference_steps else "")
        + ". Violation: the ruler's (0 = as lawful as the renderer's own clips; lower is better); "
        "fidelity: the ruler's scene fidelity. Overall values weigh every scene equally. "
        "Brackets: 95 % Student-t intervals (over training seeds; over evaluation videos where a row has one seed). "
        "Δ: violation minus the reference's, paired by seed (by video with one seed); negative is better.",
        "",
        "| variant | seeds | violation | fidelity | Δ vs baseline | Δ vs plain adapter | Δ vs full |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {len(row['seeds']) or '–'} | {_ci(row['violation'].get('overall'))} | {_ci(row['fidelity'].get('overall'))} "
            f"| {_ci(row['vs_baseline'].get('overall'))} | {_ci(row['vs_plain'].get('overall'))} | {_ci(row['vs_full'].get('overall'))} |"
        )
    scenes = sorted({s for row in rows.values() for s in row["violation"] if s != "overall"})
    lines += ["", "Violation per scene (mean [95 % interval]):", "", "| variant | " + " | ".join(scenes) + " |", "|---|" + "---|" * len(scenes)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_ci(row["violation"].get(s)) for s in scenes) + " |")
    lines += ["", "Δ violation vs baseline per scene:", "", "| variant | " + " | ".join(scenes) + " |", "|---|" + "---|" * len(scenes)]
    for name, row in rows.items():
        if row["vs_baseline"]:
            lines.append(f"| {name} | " + " | ".join(_ci(row["vs_baseline"].get(s)) for s in scenes) + " |")
    lines += ["", f"Wall time of this invocation: {wall_seconds / 60:.1f} min.", ""]
    return "\n".join(lines)


def write_figure(path: Path, table: dict[str, Any]) -> None:
    """Bars of mean violation (overall and per scene) with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pila.io import atomic_path

    rows = table["rows"]
    names = list(rows)
    scenes = sorted({s for row in rows.values() for s in row["violation"] if s != "overall"}) + ["overall"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(scenes) * max(1, len(names)) * 0.35 + 2), 3.6))
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


# ------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(message)

    p = _Parser(prog=PROG, description="Train adapter variants on the lab world with one budget and compare them with the ruler.")
    p.add_argument("--out", required=True, help="output folder (runs, the shared training data and the report)")
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated: baseline, full, plain (= plain_adapter), any lightning_configs/ablations/ stem, or a YAML path (default: %(default)s)",
    )
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0 … N−1 per trained variant (default: %(default)s; ours: the fewest that give an interval)")
    p.add_argument("--eval-seeds", type=int, default=8, help="sampling seeds per scene in the evaluation set (default: %(default)s; ours)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every step count of the stage configs (default: %(default)s)")
    p.add_argument("--inference-steps", type=int, default=None, help="sampling steps of the evaluation set (default: predict.yaml's)")
    p.add_argument("--configs", default=str(LAB_CONFIGS), help="folder with stageA/B/C.yaml and predict.yaml (default: the lab's)")
    p.add_argument("--scenes", default=None, help="comma-separated: restrict the evaluation set to these scenes (default: all eight)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pila lab ablate``; a bad command line is one line and exit status 2."""
    from pila import logs

    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        if not names:
            raise UsageError("--variants is empty; name at least one variant")
        variants = [resolve_variant(n) for n in names]
        if len({v.name for v in variants}) != len(variants):
            raise UsageError(f"--variants names a variant twice: {args.variants}")
        for flag, value in (("--seeds", args.seeds), ("--eval-seeds", args.eval_seeds)):
            if value < 1:
                raise UsageError(f"{flag} must be ≥ 1, got {value}")
        if not args.steps_scale > 0:
            raise UsageError(f"--steps-scale must be > 0, got {args.steps_scale}")
        if args.inference_steps is not None and args.inference_steps < 1:
            raise UsageError(f"--inference-steps must be ≥ 1, got {args.inference_steps}")
        configs = Path(args.configs).resolve()
        for name in (*STAGES, "predict"):
            _read_yaml(configs / f"{name}.yaml")
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be ≥ 1, got {args.threads}")
        scenes = None
        if args.scenes is not None:
            from pila.lab.scenes import SCENES

            scenes = tuple(s.strip() for s in args.scenes.split(",") if s.strip())
            unknown = [s for s in scenes if s not in SCENES]
            if unknown or not scenes:
                raise UsageError(f"--scenes {args.scenes!r}: unknown or none; valid: {', '.join(SCENES)}")
        check_stage_arguments(variants, configs)
    except UsageError as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    logs.configure(fmt="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    plan = Plan(tuple(v.name for v in variants), tuple(range(args.seeds)), args.eval_seeds, args.steps_scale, args.inference_steps, str(configs), scenes)
    out = Path(args.out).resolve()
    try:
        evaluation_prompts(out, plan)  # a scene without a prompt is a usage error, before any training
    except UsageError as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    try:
        table = ablate(out, variants, plan, threads=args.threads)
    except RunFailed as err:
        sys.stderr.write(f"{PROG}: {err}\n")
        return 1
    sys.stdout.write(table["markdown"])
    sys.stdout.write(f"\nwrote {out / 'report.md'}, {out / 'report.json'}, {out / FIGURE_NAME}\n")
    return 0


def ablate(out: Path, variants: Sequence[Variant], plan: Plan, threads: int | None = None) -> dict[str, Any]:
    """Run (or resume) every variant × seed, then write the report; returns report.json's object.

    ``threads``: torch CPU threads of the child processes (None: torch's choice).
    """
    prompt_file = evaluation_prompts(out, plan)  # written once for every run
    jobs = [(v, s) for v in variants for s in (plan.seeds if v.trained else plan.seeds[:1])]
    start = time.perf_counter()
    results: dict[str, dict[int, dict[str, Any]]] = {}
    timings: dict[str, Any] = {}
    for i, (variant, seed) in enumerate(jobs, 1):
        label = f"[{i}/{len(jobs)}] {variant.name}" + (f" seed {seed}" if variant.trained else "")
        t0 = time.perf_counter()
        done = execute_run(out, variant, seed, plan, label, threads, prompt_file)
        elapsed = time.perf_counter() - start
        log.info("%s: done in %.0f s (%.1f min so far; about %.1f min to go)", label, time.perf_counter() - t0, elapsed / 60, elapsed / i * (len(jobs) - i) / 60)
        report = json.loads(Path(done["report"]).read_text(encoding="utf-8"))
        results.setdefault(variant.name, {})[seed if variant.trained else None] = report
        timings[label.split("] ", 1)[1]] = done["seconds"]
    table = aggregate(results)
    wall = time.perf_counter() - start
    table.update(plan={"variants": list(plan.variants), "seeds": list(plan.seeds), **plan.budget()}, seconds=timings, wall_seconds=wall)
    table["markdown"] = report_markdown(table, plan, wall)
    write_json_atomic(out / "report.json", {k: v for k, v in table.items() if k != "markdown"})
    write_text_atomic(out / "report.md", table["markdown"])
    write_figure(out / FIGURE_NAME, table)
    return table


if __name__ == "__main__":
    raise SystemExit(main())

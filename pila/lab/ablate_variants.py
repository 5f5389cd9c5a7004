"""The rows of ``pila lab ablate`` and the configs they train and generate with.

A :class:`Variant` is a row of the table: ``baseline`` (no adapter), ``full`` (the lab
stage configs as they are) or an override file of ``lightning_configs/ablations/`` or
``lightning_configs/readings/``. A :class:`Plan` is the budget every row shares. From
them, :func:`stage_config` and :func:`predict_config` derive the YAML each stage and each
generation of one run is started with.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pila import configs as packaged_configs
from pila.io import write_text_atomic
from pila.lab.cli import UsageError

REPO_CONFIGS = packaged_configs.ROOT  # the shipped configs, found through the package
ABLATIONS = REPO_CONFIGS / "ablations"
READINGS = REPO_CONFIGS / "readings"
"""Override files of the method readings R1–R5 (``design/pila-method.md`` §7); variants too."""
STAGES = ("stageA", "stageB", "stageC")
BASELINE, PLAIN, FULL = "baseline", "plain_adapter", "full"
WORLD_FINETUNE = "world_finetune"  # the capacity control: the world's own LoRA
ALIASES = {"plain": PLAIN, "ours": FULL}
DEFAULT_VARIANTS = (BASELINE, PLAIN, FULL)
STEP_KEYS = (
    "max_steps",
    "val_check_interval",
    "every_n_train_steps",
    "steps_per_phase",
    "steps",
    "physical_mask_steps",
)
"""Config keys counted in optimiser steps, scaled together by ``--steps-scale``."""


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
    def retrains_world(self) -> bool:
        """It trains the world's transformer (``world_finetune``'s LoRA), not an adapter."""
        model = (self.override or {}).get("model", {})
        return model.get("class_path", "").endswith("WorldFinetune")

    @property
    def trains_as_full(self) -> bool:
        """It trains exactly as full PILA (a generation reading such as R3): its training is
        shared with ``full``'s."""

        def empty(node: Any) -> bool:
            return isinstance(node, dict) and all(empty(v) for v in node.values())

        plain_override = self.override is None or empty(self.override)
        return self.name != FULL and self.stages == STAGES and plain_override


def available_variants(ablations: Path = ABLATIONS) -> list[str]:
    """Every variant name ``--variants`` accepts: baseline, full and the override files
    (ablations, readings)."""
    files = sorted(p.stem for folder in (ablations, READINGS) for p in folder.glob("*.yaml"))
    return [BASELINE, FULL, *files]


def resolve_variant(name: str, ablations: Path = ABLATIONS) -> Variant:
    """A variant by name (``baseline``, ``full``, ``plain``, an override file's stem or a
    YAML path)."""
    name = ALIASES.get(name, name)
    if name == BASELINE:
        return Variant(BASELINE, None, ())
    if name == FULL:
        return Variant(FULL, None, STAGES)
    path = Path(name) if name.endswith((".yaml", ".yml")) else ablations / f"{name}.yaml"
    if not path.is_file() and (READINGS / f"{name}.yaml").is_file():
        path = READINGS / f"{name}.yaml"
    if not path.is_file():
        valid = ", ".join(available_variants(ablations))
        raise UsageError(f"unknown variant {name!r}: no {path}; valid: {valid}, or a YAML file")
    override = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(override, dict):
        raise UsageError(f"variant file {path} is not a YAML mapping")
    init_args = override.get("model", {}).get("init_args", {})
    sampling = init_args.pop("sampling", None)  # a predict setting, not a stage argument
    if sampling is not None and not isinstance(sampling, dict):
        raise UsageError(
            f"variant file {path}: model.init_args.sampling must be a mapping of generation "
            "settings"
        )
    from_scratch = "init_from" in init_args and init_args["init_from"] is None
    stages = ("stageC",) if from_scratch else STAGES
    return Variant(path.stem, override, stages, sampling)


@dataclass(frozen=True)
class Plan:
    """What one ablation trains and measures (recorded in report.json).

    ``eval_set`` names the evaluation set (:data:`pila.lab.evalset.EVAL_SETS`, or a JSONL
    path); ``eval_seeds`` is the number of its videos per scene, each its own noise draw.
    ``backbone`` is the world the runs train on and generate with (None: the configs',
    the lab world; ``lab-moe``: :mod:`pila.lab.world_moe`); ``adapters_from`` another
    ablation's folder whose trained runs are moved unchanged onto ``backbone`` (nothing
    trains: the paper's transfer).
    """

    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    eval_seeds: int
    steps_scale: float
    inference_steps: int | None
    configs: str
    scenes: tuple[str, ...] | None = None
    eval_set: str = "a"
    backbone: str | None = None
    adapters_from: str | None = None

    def budget(self) -> dict[str, Any]:
        budget = {
            "eval_set": self.eval_set,
            "eval_seeds": self.eval_seeds,
            "steps_scale": self.steps_scale,
            "inference_steps": self.inference_steps,
            "configs": self.configs,
            "scenes": list(self.scenes) if self.scenes else None,
        }
        # recorded only when set, so the budgets of runs on the configs' world stay as they were
        if self.backbone is not None:
            budget["backbone"] = self.backbone
        if self.adapters_from is not None:
            budget["adapters_from"] = self.adapters_from
        return budget

    def named(self, name: str) -> str:
        """An output's file or folder name under this plan's evaluation set: ``name`` for
        the default set (``videos``, ``report``, ``done.json``), ``videos_b``, ``done_b.json``
        for set ``b`` (a JSONL file: its stem), so one run folder keeps the videos of every
        set it was evaluated on, from the same trained adapter."""
        from pila.lab.evalset import DEFAULT_EVAL_SET

        if self.eval_set == DEFAULT_EVAL_SET:
            return name
        tag = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(self.eval_set).stem).strip("-") or "set"
        stem, dot, suffix = name.partition(".")
        return f"{stem}_{tag}{dot}{suffix}"


# ---------------------------------------------------------------- derived configs
def read_yaml(path: Path) -> dict[str, Any]:
    """One of the ``--configs`` folder's YAML files (a missing one is a usage error)."""
    if not path.is_file():
        raise UsageError(
            f"{path} is missing: --configs must hold stageA/B/C.yaml and predict.yaml"
        )
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def write_yaml(path: Path, cfg: dict[str, Any]) -> Path:
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


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
    """Every step count (:data:`STEP_KEYS`) in a config tree × ``scale``, at least 1 (a
    count of 0, such as a freeze of no steps, stays 0)."""

    def is_steps(key: str, value: Any) -> bool:
        return key in STEP_KEYS and isinstance(value, int) and not isinstance(value, bool)

    if isinstance(node, dict):
        return {
            k: (max(1, round(v * scale)) if v else 0) if is_steps(k, v) else scale_steps(v, scale)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [scale_steps(v, scale) for v in node]
    return node


def _callbacks(config: dict[str, Any]) -> list[dict[str, Any]]:
    callbacks = config.setdefault("trainer", {}).setdefault("callbacks", [])
    return callbacks if isinstance(callbacks, list) else [callbacks]


def stage_arguments(class_path: str) -> set[str]:
    """The named ``__init__`` arguments of a stage class and of its bases (e.g.
    ``pila.stages.StageB``)."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    names: set[str] = set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names |= {p.name for p in params if p.kind in kinds}
    return names - {"self"}


def check_stage_arguments(variants: Sequence[Variant], configs: Path) -> None:
    """A stage argument of an override that no stage takes (a typo) is a usage error, not
    silently dropped."""
    accepted: set[str] = set()
    for stage in STAGES:
        class_path = read_yaml(configs / f"{stage}.yaml").get("model", {}).get("class_path")
        if class_path:
            accepted |= stage_arguments(class_path)
    for variant in variants:
        model = (variant.override or {}).get("model", {})
        own = model.get("init_args", {})
        takes = stage_arguments(model["class_path"]) if model.get("class_path") else accepted
        unknown = sorted(set(own) - takes - {"init_from"})
        if unknown:
            raise UsageError(
                f"variant {variant.name!r} sets {', '.join(unknown)}, which no stage takes; "
                "check the override file's model.init_args"
            )


def stage_config(
    base: dict[str, Any],
    variant: Variant,
    stage: str,
    run: Path,
    data: Path,
    seed: int,
    scale: float,
    backbone: str | None = None,
) -> dict[str, Any]:
    """The config one stage of one run trains with: the lab stage config, the variant's
    override, the run's folders and seed, the step budget, and the world (``backbone``;
    None: the config's).

    A stage argument of the override that this stage's class does not take (such as stage
    B's ``physical_mask_steps``) is left out of this stage's config; a callback of the
    override updates the arguments of the stage's callback of the same class and is left
    out of a stage that has none (an override naming another model class replaces the
    callbacks).
    """
    override = copy.deepcopy(variant.override or {})
    model = override.get("model", {})
    # callbacks of an override of the stage's own model update the stage's callbacks of the
    # same class (a stage without that callback is left without it); an override of another
    # model (world_finetune) brings its own list
    callback_updates = []
    if not model.get("class_path"):
        callback_updates = override.get("trainer", {}).pop("callbacks", None) or []
    # an override of another model (world_finetune) is judged by its own class's arguments
    class_path = model.get("class_path") or base.get("model", {}).get("class_path")
    if class_path and model.get("init_args"):
        accepted = stage_arguments(class_path)
        model["init_args"] = {k: v for k, v in model["init_args"].items() if k in accepted}
    merged = deep_merge(base, override)
    for update in callback_updates:
        for callback in _callbacks(merged):
            if callback.get("class_path") == update.get("class_path"):
                callback["init_args"] = {
                    **callback.get("init_args", {}),
                    **update.get("init_args", {}),
                }
    cfg = scale_steps(merged, scale)
    if model.get("class_path"):  # the stage's own arguments that this model does not take go
        accepted = stage_arguments(model["class_path"])
        init_args = cfg["model"].get("init_args", {})
        cfg["model"]["init_args"] = {k: v for k, v in init_args.items() if k in accepted}
    cfg["seed_everything"] = seed
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run / stage)
    logger = trainer.get("logger")
    if isinstance(logger, dict) and "init_args" in logger:
        logger["init_args"].update(save_dir=str(run), name=stage, version="")
    for callback in _callbacks(cfg):
        if callback.get("class_path", "").endswith("ModelCheckpoint"):
            # one checkpoint at the stage's end, the one the next stage starts from
            callback.setdefault("init_args", {}).update(
                dirpath=str(run / stage / "checkpoints"),
                save_last=True,
                every_n_train_steps=trainer["max_steps"],
            )
    init_args = cfg.setdefault("model", {}).setdefault("init_args", {})
    previous = STAGES[STAGES.index(stage) - 1] if stage != STAGES[0] else None
    if previous in variant.stages:
        init_args["init_from"] = str(run / previous / "checkpoints" / "last.ckpt")
    cfg.setdefault("data", {}).setdefault("init_args", {})["root"] = str(data)
    if backbone is not None:  # the world trained on, and the cache's encoder
        init_args["backbone"] = backbone
        cfg["data"]["init_args"]["backbone"] = backbone
    return cfg


def predict_config(
    base: dict[str, Any],
    run: Path,
    adapter: Path | None,
    inference_steps: int | None,
    prompt_file: Path | None = None,
    sampling: dict[str, Any] | None = None,
    retrains_world: bool = False,
    videos: str = "videos",
    backbone: str | None = None,
) -> dict[str, Any]:
    """The fixed evaluation set's predict config for one run (the same prompts and seeds
    for every run): one video per prompt record, drawn with the record's own seed.

    ``retrains_world``: ``adapter`` is the folder of a fine-tuned transformer's LoRA
    (``world_finetune``), fused into the world before sampling as the baseline samples.

    ``prompt_file`` replaces the config's prompt file (the evaluation set's videos,
    :func:`pila.lab.ablate_runs.evaluation_prompts`); ``sampling`` (a variant's generation
    settings) is merged into the sampling settings. ``videos``: the run folder's subfolder
    the videos are written to (:meth:`Plan.named`); ``backbone`` the world generated with
    (None: the config's).
    """
    cfg = copy.deepcopy(base)
    cfg["seed_everything"] = 0  # the evaluation set does not depend on the training seed
    cfg.setdefault("trainer", {})["default_root_dir"] = str(run / videos)
    for callback in _callbacks(cfg):
        if callback.get("class_path", "").endswith("VideoPredictionWriter"):
            callback.setdefault("init_args", {})["output_dir"] = str(run / videos)
    init_args = cfg.setdefault("model", {}).setdefault("init_args", {})
    if adapter is not None and retrains_world:  # world_finetune: the world itself, retrained
        init_args["adapter"] = None
        init_args["transformer_lora"] = str(adapter)
    else:
        init_args["adapter"] = None if adapter is None else str(adapter)
    if backbone is not None:
        init_args["backbone"] = backbone
    if sampling:
        init_args["sampling"] = {**(init_args.get("sampling") or {}), **sampling}
    if inference_steps is not None:
        init_args.setdefault("sampling", {})["num_inference_steps"] = inference_steps
    data = cfg.setdefault("data", {}).setdefault("init_args", {})
    data["videos_per_prompt"] = 1  # every video its own record and noise seed
    if prompt_file is not None:
        data["prompt_file"] = str(prompt_file)
    elif data.get("prompt_file") and not Path(data["prompt_file"]).is_absolute():
        data["prompt_file"] = str((REPO_CONFIGS.parent / data["prompt_file"]).resolve())
    return cfg

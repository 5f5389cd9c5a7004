"""``pila demo``: the main job end to end on the lab world, measured by the lab's ruler.

Runs on a CPU with nothing downloaded and leaves everything in one output folder:

1. synthetic physics clips of the lab's eight scenes, written as mp4 with a WISA-80K
   annotation file, and their latent cache (``SyntheticPhysicsDataModule`` runs the same
   code as ``pila prepare``);
2. stage A → B → C on the lab world, the shipped small Wan trained on those scenes
   (``lightning_configs/lab/stage{A,B,C}.yaml``, each stage starting from the previous
   stage's ``last.ckpt``), with TensorBoard logs;
3. the stage C checkpoint exported as an adapter folder (``pila export``);
4. one video per scene from held-out prompts (``lightning_configs/lab/predict.yaml``),
   with the adapter and without it (the baseline), mp4 + JSON sidecars;
5. both sets measured by ``pila lab evaluate`` (violation of each scene's law, scene
   fidelity), a per-scene table printed, and a strip of frames of every video.

The configs are the ones shipped in the package (``lab/``, found through :mod:`pila.configs`,
so the demo runs from any directory). They write under ``outputs/demo``; with another
``--out`` the demo writes edited copies of them into ``<out>/configs`` (the files they name,
such as the prompts, by absolute path) and runs those, so every command it ran can be re-run
by hand. ``--configs`` runs another set: a folder, or a packaged one by name (``tiny``, the
random tiny Wan of the unit tests; its videos show no scene and the table stays empty).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from pila import configs as packaged_configs
from pila.io import write_text_atomic

log = logging.getLogger("pila.demo")

CONFIG_ROOT = packaged_configs.ROOT / "lab"
DEFAULT_OUT = "outputs/demo"
STAGES = ("stageA", "stageB", "stageC")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pila demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--configs",
        default=None,
        help="folder with stageA/B/C.yaml and predict.yaml, or a packaged one by name "
        "(default: lab)",
    )
    parser.add_argument(
        "--skip-training",
        action="store_true",
        help="only generate (needs a previous run's adapter)",
    )
    return parser


def config_folder(name: str | None) -> Path:
    """The folder ``--configs`` names: a folder here, else a packaged one (``tiny``)."""
    if name is None:
        return CONFIG_ROOT.resolve()
    folder = Path(name).expanduser()
    if not folder.is_dir():
        folder = packaged_configs.packaged(name) or folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--configs {name}: no such folder here or in the package (`pila configs`)"
        )
    return folder.resolve()


def _named_files_absolute(text: str, source: Path) -> str:
    """``text`` (the YAML ``source``) with each relative file it names as data (a prompt
    file) written as the absolute path it resolves to from ``source``."""
    from pila.cli import CONFIG_RELATIVE_DATA_ARGS

    data = (yaml.safe_load(text) or {}).get("data") or {}
    init_args = data.get("init_args") or {}
    for key in CONFIG_RELATIVE_DATA_ARGS:
        value = init_args.get(key)
        named = (
            packaged_configs.resolve_named_file(value, source) if isinstance(value, str) else None
        )
        if named is not None:
            path = str(named.resolve())
            line = re.compile(rf"^(\s*{key}:\s*){re.escape(value)}(\s*(#.*)?)$", re.MULTILINE)
            text = line.sub(lambda m, p=path: m.group(1) + p + m.group(2), text)
    return text


def _configs_for(out: Path, source: Path) -> dict[str, Path]:
    """The YAMLs to run: the shipped ones, or copies with ``outputs/demo`` replaced by ``out``."""
    names = [*STAGES, "predict"]
    missing = [n for n in names if not (source / f"{n}.yaml").exists()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(f'{n}.yaml' for n in missing)}")
    if out == Path(DEFAULT_OUT).resolve() and source == CONFIG_ROOT.resolve():
        return {n: source / f"{n}.yaml" for n in names}
    target = out / "configs"
    configs = {}
    for n in names:
        text = (source / f"{n}.yaml").read_text().replace(DEFAULT_OUT, str(out))
        text = _named_files_absolute(text, source / f"{n}.yaml")
        write_text_atomic(target / f"{n}.yaml", text)
        configs[n] = target / f"{n}.yaml"
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pila.cli import run_lightning
    from pila.lab.evaluate import comparison_markdown, evaluate, write_frame_strip
    from pila.stages.export import export_adapter

    out = Path(args.out).resolve()
    try:
        configs = _configs_for(out, config_folder(args.configs))
    except FileNotFoundError as err:
        sys.stderr.write(f"pila demo: error: {err}\n")
        return 2
    start = time.perf_counter()
    timings: dict[str, float] = {}
    if not args.skip_training:
        for stage in STAGES:
            t0 = time.perf_counter()
            log.info("── %s: pila fit --config %s", stage, configs[stage])
            run_lightning(["fit", "--config", str(configs[stage])])
            timings[stage] = time.perf_counter() - t0
        t0 = time.perf_counter()
        export_adapter(out / "stageC" / "checkpoints" / "last.ckpt", out / "adapter")
        timings["export"] = time.perf_counter() - t0
    reports = {}
    runs = (
        ("adapter", out / "adapter", out / "videos"),
        ("baseline", None, out / "videos_baseline"),
    )
    for label, adapter, videos in runs:
        t0 = time.perf_counter()
        predict_args = [
            "predict", "--config", str(configs["predict"]),
            "--model.init_args.adapter", str(adapter) if adapter else "null",
            "--trainer.callbacks.init_args.output_dir", str(videos),
            "--trainer.default_root_dir", str(videos),
        ]  # fmt: skip
        log.info("── predict (%s): pila %s", label, " ".join(predict_args))
        run_lightning(predict_args)
        timings[f"predict {label}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        log.info(
            "── evaluate (%s): pila lab evaluate --videos %s --out %s",
            label,
            videos,
            out / "report" / label,
        )
        reports[label] = evaluate(videos, out / "report" / label)
        timings[f"evaluate {label}"] = time.perf_counter() - t0
    table = comparison_markdown(reports, reference="baseline")
    write_text_atomic(out / "report" / "comparison.md", table)
    write_frame_strip(out / "report" / "frames.png", reports)

    log.info("")
    for line in table.splitlines():
        log.info("%s", line)
    log.info("")
    log.info(
        "demo finished in %.0f s (%s)",
        time.perf_counter() - start,
        ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
    )
    log.info("outputs in %s:", out)
    for name, what in (
        ("data", "synthetic clips, annotation and latent cache"),
        ("stageA", "stage A checkpoints and TensorBoard logs"),
        ("stageB", "stage B checkpoints and TensorBoard logs"),
        ("stageC", "stage C checkpoints and TensorBoard logs"),
        ("adapter", "the trained adapter (adapter_config.json + model.safetensors)"),
        ("videos", "videos generated with the adapter: mp4s with JSON sidecars"),
        ("videos_baseline", "the same prompts and seeds without the adapter"),
        ("report", "the ruler's reports (adapter/, baseline/), comparison.md, frames.png"),
    ):
        log.info("  %-16s %s", name + "/", what)
    log.info("TensorBoard: tensorboard --logdir %s", out)
    return 0

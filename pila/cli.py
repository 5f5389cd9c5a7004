"""The ``pila`` command.

``pila fit|validate|test|predict`` are Lightning's subcommands (:class:`PilaCLI`, a
``LightningCLI``: ``--config FILE.yaml``, ``--print_config``, dotted overrides). The
project's own subcommands (``prepare``, ``export``, ``demo``) are plain argparse programs,
each a ``main(argv) -> int`` in its own module, registered in :data:`PROJECT_COMMANDS`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a stage (e.g. pila fit --config lightning_configs/stageC.yaml)",
    "validate": "run one validation pass of a stage",
    "test": "run one test pass of a stage",
    "predict": "batch-generate videos (e.g. pila predict --config lightning_configs/predict.yaml)",
}

PROJECT_COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("pila.datamodules.prepare", "encode a dataset once into the training cache"),
    "export": ("pila.stages.export", "turn a training checkpoint into an adapter folder"),
    "demo": ("pila.demo", "run the main job end to end on the embedded tiny default"),
    "lab": ("pila.lab.cli", "the physics lab: pretrain the lab world, evaluate videos, ablate"),
}


class PilaCLI(LightningCLI):
    """LightningCLI whose model and data are chosen in YAML by ``class_path``.

    Any ``LightningModule``/``LightningDataModule`` can be named, so the three training
    stages, prediction and user subclasses all go through the same command.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)


def run_lightning(args: Sequence[str]) -> None:
    """Run a LightningCLI subcommand from Python as if it had been typed after ``pila``.

    ``sys.argv`` is set to the command for the duration: Lightning's DDP launcher starts the
    other ranks by re-running ``sys.argv``, so it must name this subcommand, not the caller's.
    """
    saved = sys.argv
    sys.argv = [saved[0] if saved else "pila", *args]
    try:
        PilaCLI()
    finally:
        sys.argv = saved


def _help() -> str:
    width = max(len(name) for name in [*LIGHTNING_COMMANDS, *PROJECT_COMMANDS])
    lines = [
        "usage: pila <command> [options]",
        "",
        "PILA: physics-informed latent alignment adapters for Wan video generators.",
        "",
        "training and generation (LightningCLI; `pila <command> --help` for options):",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "project commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in PROJECT_COMMANDS.items()]
    return "\n".join(lines) + "\n"


def _configure_logging() -> None:
    """Show the project's INFO messages (stage initialisation, exports, …) on stderr."""
    logger = logging.getLogger("pila")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pila`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_help())
        return 0
    command = args[0]
    if command in PROJECT_COMMANDS:
        module_name, _ = PROJECT_COMMANDS[command]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            sys.stderr.write(f"pila {command}: not available in this installation ({module_name} is missing)\n")
            return 2
        return int(module.main(args[1:]) or 0)
    if command not in LIGHTNING_COMMANDS:
        sys.stderr.write(f"pila: unknown command {command!r}\n\n{_help()}")
        return 2
    # With the real command line, let LightningCLI read sys.argv itself (it warns when given both).
    PilaCLI(args=None if argv is None else args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

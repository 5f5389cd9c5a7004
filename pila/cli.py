"""The ``pila`` command.

``pila fit|validate|test|predict`` are Lightning's subcommands (:class:`PilaCLI`, a
``LightningCLI``: ``--config FILE.yaml``, ``--print_config``, dotted overrides); ``--config``
also takes the name of a config shipped in the package (``lab/stageC.yaml``, see
:mod:`pila.configs`). The project's own subcommands are each a ``main(argv) -> int`` in its
own module, registered in :data:`PROJECT_COMMANDS`: ``prepare`` parses its typed settings
with jsonargparse (``--config``, ``--print_config``, ``--help`` from the dataclasses'
docstrings; :mod:`pila.datamodules.prepare_config`), ``export``, ``demo`` and ``configs``
are plain argparse programs, and ``lab`` dispatches to the lab's own.

A user mistake (a missing file, a value the project's validation refuses, a corrupt
cache, a file that is not a checkpoint) ends a Lightning subcommand with its one message
on stderr and exit status 2, as the project commands do (:func:`is_user_error`);
``--debug`` or ``PILA_DEBUG=1`` shows the traceback instead. Anything else is a bug and
raises as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse import ActionConfigFile
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from pila import configs, logs

log = logging.getLogger(__name__)

LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a stage (e.g. pila fit --config lab/stageC.yaml, a config shipped in pila)",
    "validate": "run one validation pass of a stage",
    "test": "run one test pass of a stage",
    "predict": "batch-generate videos (e.g. pila predict --config lab/predict.yaml)",
}

PROJECT_COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("pila.datamodules.prepare", "encode a dataset once into the training cache"),
    "export": ("pila.stages.export", "turn a training checkpoint into an adapter folder"),
    "demo": ("pila.demo", "run the main job end to end on the embedded tiny default"),
    "lab": ("pila.lab.cli", "the physics lab: pretrain the lab world, evaluate videos, ablate"),
    "configs": ("pila.configs", "list the configs shipped in the package, copy them out to edit"),
}


class PackagedConfigFile(ActionConfigFile):
    """``--config``: a YAML file, inline YAML, or the name of a config shipped in the package
    (``lab/stageC.yaml``) when no such file exists (:func:`pila.configs.config_path`)."""

    def __call__(self, parser, cfg, values, option_string=None):
        path = configs.config_path(values)
        if path.endswith((".yaml", ".yml")) and not Path(path).expanduser().is_file():
            raise TypeError(
                f"no file {path} here and no such config in the package "
                "(`pila configs` lists them)"
            )
        super().__call__(parser, cfg, path, option_string)


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

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Lightning's parser, with a ``--config`` that also finds the packaged configs."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={pl.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument(
            "-c", "--config", action=PackagedConfigFile, help=PackagedConfigFile.__doc__
        )
        return parser

    def parse_arguments(self, parser, args) -> None:
        """Parse, settle the data sources (:func:`settle_data_sources`), then check a
        ``ckpt_path`` file or folder before Lightning reads its hyperparameters."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        if isinstance(args, dict) or (args is not None and not isinstance(args, (list, tuple))):
            argv = None  # a parsed object: no order to read
        else:
            argv = list(sys.argv[1:] if args is None else args)
        data = config.get("data")
        init_args = data.get("init_args") if data is not None and hasattr(data, "get") else None
        if argv is not None and init_args is not None:
            settle_data_sources(init_args, argv)
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and str(ckpt_path) not in SPECIAL_CKPT_PATHS:
            from pila.stages.checkpoints import check_resume_checkpoint

            check_resume_checkpoint(ckpt_path)

    def instantiate_trainer(self, **kwargs):
        """The trainer, with every ``ckpt_path`` checked and loaded without unpickling code."""
        from pila.stages.checkpoints import guard_checkpoint_loading

        trainer = super().instantiate_trainer(**kwargs)
        guard_checkpoint_loading(trainer.strategy)
        return trainer


EXCLUSIVE_DATA_ARGS: tuple[str, ...] = ("prompt_file", "prompts")
"""Data init args of which one is given: when a config sets one and a later source the
other (``--data.init_args.prompt_file F`` after a YAML with inline ``prompts``), the later wins."""

CONFIG_RELATIVE_DATA_ARGS: tuple[str, ...] = ("prompt_file", "augmented_file")
"""Data init args holding files: a relative path written in a config file names the file
next to that config file when one is there, or a packaged file
(:func:`pila.configs.resolve_named_file`); else it stays relative to the current directory."""


def _yaml_mapping(text: str) -> dict[str, Any]:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return value if isinstance(value, dict) else {}


def _data_source(value: str | None, section: bool) -> tuple[dict[str, Any], Path | None]:
    """The data init args set by a ``--config`` (``section=True``: its ``data`` entry; a
    packaged config's name counts) or a ``--data`` value (a file or inline YAML), and its
    file (None: inline)."""
    if value is None:
        return {}, None
    path = Path(configs.config_path(value) if section else value).expanduser()
    source = None
    if path.is_file():
        source = path.resolve()
        mapping = _yaml_mapping(path.read_text(encoding="utf-8"))
    else:
        mapping = _yaml_mapping(value)
    data = mapping.get("data") if section else mapping
    if not isinstance(data, dict):
        return {}, source
    init_args = data.get("init_args", data)
    return (init_args if isinstance(init_args, dict) else {}), source


def data_sources(argv: Sequence[str]) -> list[tuple[dict[str, Any], Path | None]]:
    """For every source on a command line, in order: the data init args it sets and its
    config file (None for a value typed on the command line)."""
    sources = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            continue
        key, eq, value = arg.partition("=")
        if not eq:
            value = argv[i] if i < len(argv) and not argv[i].startswith("--") else None
            i += value is not None
        if key == "--config":
            sources.append(_data_source(value, section=True))
        elif key == "--data":
            sources.append(_data_source(value, section=False))
        elif key.startswith("--data.") and value is not None:
            name = key.removeprefix("--data.").removeprefix("init_args.").rstrip("+")
            parsed = _yaml_mapping(f"v: {value}") if value.strip() else {}
            sources.append(({name: parsed.get("v", value)}, None))
    return sources


def settle_data_sources(init_args: Any, argv: Sequence[str]) -> None:
    """Apply the two rules of the data module's file and prompt arguments, in place.

    1. Of :data:`EXCLUSIVE_DATA_ARGS`, the one set by the later source wins: the other is
       reset to None when both arrive from different sources (both in one source is a
       conflict left for the data module to report).
    2. A relative path of :data:`CONFIG_RELATIVE_DATA_ARGS` that comes from a config file
       becomes the file next to that config file when it exists there, or the packaged file
       it names (:func:`pila.configs.resolve_named_file`).

    Args:
        init_args: the parsed ``data.init_args`` (a jsonargparse Namespace or a dict).
        argv: the command line, in order (``--config``, ``--data`` and ``--data.*`` count).
    """
    winner = None
    origin: dict[str, tuple[Any, Path | None]] = {}
    for values, source in data_sources(argv):
        given = [k for k in EXCLUSIVE_DATA_ARGS if values.get(k) is not None]
        if len(given) == 1:
            winner = given[0]
        for key in CONFIG_RELATIVE_DATA_ARGS:
            if key in values:
                origin[key] = (values[key], source)
    if winner is not None and all(init_args.get(k) is not None for k in EXCLUSIVE_DATA_ARGS):
        for key in EXCLUSIVE_DATA_ARGS:
            if key != winner:
                log.info("data.init_args.%s given later wins over the config's %s", winner, key)
                init_args[key] = None
    for key, (value, source) in origin.items():
        final = init_args.get(key)
        if source is None or not isinstance(final, str) or final != value:
            continue
        named = configs.resolve_named_file(final, source)
        if named is not None:
            init_args[key] = str(named)


SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
"""``ckpt_path`` values Lightning resolves itself (checked when it loads them)."""


USER_ERROR_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)
"""Exception types the project's validation raises for a user's mistake (the project's own
named errors subclass them: ``PromptFileError``, ``CacheMissingError``,
``CheckpointReadError``…)."""


@cache
def _project_roots() -> tuple[str, ...]:
    """Folders of the project's code (``pila``, and ``pila.datamodules``/``pila.callbacks``,
    which install from elsewhere)."""
    roots = []
    for name in ("pila", "pila.datamodules", "pila.callbacks"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots += [str(Path(location).resolve()) for location in spec.submodule_search_locations]
    return tuple(roots)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is a user's mistake reported by the project's own checks.

    It is when it is one of :data:`USER_ERROR_TYPES` or a cache error
    (:class:`pila.datamodules.cache.CacheError`), raised by a line of the project's code: a
    ``ValueError`` from deep inside torch or a library is a bug, not a message for the user.
    """
    from pila.datamodules.cache import CacheError

    if not isinstance(err, (*USER_ERROR_TYPES, CacheError)):
        return False
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
    return any(filename.startswith(root + os.sep) for root in _project_roots())


def _debugging(args: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` (removed from ``args``) or ``PILA_DEBUG=1``: show tracebacks of user errors."""
    flag = "--debug" in args
    env = os.environ.get("PILA_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return flag or env, [a for a in args if a != "--debug"]


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
    lines += ["  (--debug, or PILA_DEBUG=1: show the traceback of an error instead of its message)"]
    lines += ["", "project commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in PROJECT_COMMANDS.items()]
    return "\n".join(lines) + "\n"


def _configure_logging() -> None:
    """Show the project's INFO messages (stage initialisation, exports, …) on stderr."""
    if not logging.getLogger("pila").handlers:
        logs.configure()


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
            sys.stderr.write(
                f"pila {command}: not available in this installation ({module_name} is missing)\n"
            )
            return 2
        return int(module.main(args[1:]) or 0)
    if command not in LIGHTNING_COMMANDS:
        sys.stderr.write(f"pila: unknown command {command!r}\n\n{_help()}")
        return 2
    debug, args = _debugging(args)
    try:
        if argv is None and debug:
            sys.argv = [sys.argv[0], *args]
        # With the real command line, let LightningCLI read sys.argv itself (it warns when
        # given both).
        PilaCLI(args=None if argv is None else args)
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        sys.stderr.write(f"pila {command}: {err} (--debug shows the traceback)\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

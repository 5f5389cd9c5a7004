"""``pila lab``: the physics lab's commands.

Each subcommand is a plain argparse program, a ``main(argv) -> int`` in its own module,
registered in :data:`LAB_COMMANDS` (as the project commands are in :mod:`pila.cli`). They
share one way of reporting a user's mistake: :class:`ArgumentParser` and the command's own
checks raise :class:`UsageError`, and :func:`run_command` prints it as one line
(``pila lab <command>: error: …``) and returns exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

LAB_COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("pila.lab.pretrain", "train the lab world (VAE, then transformer) on the scenes"),
    "evaluate": (
        "pila.lab.evaluate",
        "measure physical law from pixels: a predict folder or scene clips",
    ),
    "ablate": ("pila.lab.ablate", "train and compare adapter variants on the lab world"),
    "calibrate": ("pila.lab.calibrate", "rewrite the ruler's calibration from the renderer"),
}


class UsageError(ValueError):
    """A mistake on a lab command's command line (or in the files it names): reported by
    :func:`run_command` as one line and exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors raise :class:`UsageError` instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_command(prog: str, body: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Run a lab command: ``body`` on its arguments (``sys.argv[1:]`` when ``argv`` is None).

    A :class:`UsageError` becomes ``<prog>: error: <message>`` on stderr and exit status 2;
    ``--help`` returns 0. Any other exception is a bug and raises as usual.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(body(args) or 0)
    except UsageError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return 2
    except SystemExit as exit_:  # argparse's --help
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)


def _help() -> str:
    width = max(len(name) for name in LAB_COMMANDS)
    lines = ["usage: pila lab <command> [options]", "", "the physics lab:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in LAB_COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``pila lab <command> ...`` to the command's module."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_help())
        return 0
    command = args[0]
    if command not in LAB_COMMANDS:
        sys.stderr.write(f"pila lab: unknown command {command!r}\n\n{_help()}")
        return 2
    module_name, _ = LAB_COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        sys.stderr.write(
            f"pila lab {command}: not available in this installation ({module_name} is missing)\n"
        )
        return 2
    return int(module.main(args[1:]) or 0)

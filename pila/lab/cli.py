"""``pila lab``: the physics lab's commands.

Each subcommand is a plain argparse program, a ``main(argv) -> int`` in its own module,
registered in :data:`LAB_COMMANDS` (as the project commands are in :mod:`pila.cli`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

LAB_COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("pila.lab.pretrain", "train the lab world (VAE, then transformer) on the scenes"),
    "evaluate": ("pila.lab.evaluate", "measure physical law from pixels: a predict folder or scene clips"),
    "ablate": ("pila.lab.ablate", "train and compare adapter variants on the lab world"),
    "calibrate": ("pila.lab.calibrate", "rewrite the ruler's calibration from the renderer"),
}


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
        sys.stderr.write(f"pila lab {command}: not available in this installation ({module_name} is missing)\n")
        return 2
    return int(module.main(args[1:]) or 0)

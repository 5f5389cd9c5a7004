"""The configs shipped inside the package, found by name from any directory; ``pila configs``.

The repository's ``lightning_configs/`` installs inside the package as
``pila.lightning_configs`` (``setup.py``), in an editable install and in a wheel alike, and
this module is the one place that finds it (:data:`ROOT`, through the import system, never
through the source tree or the current directory). A packaged config is named by its path
inside that folder, with or without ``lightning_configs/`` in front: ``lab/stageC.yaml`` and
``lightning_configs/lab/stageC.yaml`` both name the lab's stage C config.

- ``pila fit --config lab/stageC.yaml`` reads the file of that name in the current directory
  when there is one, else the packaged config (:func:`config_path`, used by ``--config`` of
  every Lightning subcommand).
- A relative path written inside a config (a ``prompt_file``) names, in order: the file
  beside the config; for a ``lightning_configs/…`` path, the packaged file (always, when the
  config itself is packaged; for a copied config only when the current directory has no such
  file, so an edited copy reads its edited prompts) (:func:`resolve_named_file`).
- ``pila configs`` lists the packaged configs; ``pila configs copy lab`` copies a folder (or
  one file) out to edit, by default into ``./lightning_configs`` with the packaged layout, so
  the copies run with the same commands as in the repository.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "pila.lightning_configs"
"""The package holding the configs: the repository's ``lightning_configs/``, mapped by
``setup.py``."""
PREFIX = "lightning_configs"
"""The folder's name in the repository; a name may start with it (``lightning_configs/lab/…``)."""
SUFFIXES = (".yaml", ".jsonl")
"""What the folder ships: configs and the prompt files they name."""


def _root() -> Path:
    folder = importlib.resources.files(PACKAGE)
    if not isinstance(folder, Path):  # only a zipped installation gets here
        raise RuntimeError(f"{PACKAGE} is not a folder on disk ({folder}); install pila unzipped")
    return folder


ROOT: Path = _root()
"""The packaged configs' folder (the repository's ``lightning_configs/`` in an editable install)."""


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. inline YAML given to --config, too long for a file name
        return False


def packaged(name: str | os.PathLike) -> Path | None:
    """The packaged file or folder ``name`` names (``lab/stageC.yaml``,
    ``lightning_configs/lab``), or None."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        return None
    parts = path.parts[1:] if path.parts[:1] == (PREFIX,) else path.parts
    candidate = ROOT.joinpath(*parts)
    return candidate if _exists(candidate) else None


def is_packaged(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside the packaged configs' folder."""
    return Path(path).resolve().is_relative_to(ROOT.resolve())


def config_path(value: str) -> str:
    """What ``--config value`` reads: the file ``value`` when it exists, else the packaged
    config of that name, else ``value`` unchanged (inline YAML, or a missing file the parser
    reports)."""
    if _exists(Path(value).expanduser()):
        return value
    shipped = packaged(value)
    return str(shipped) if shipped is not None and shipped.is_file() else value


def resolve_named_file(value: str, config_file: str | os.PathLike) -> Path | None:
    """The file a relative path written in ``config_file`` names, or None to leave ``value``
    as written (relative to the current directory). See the module docstring for the order."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return None
    beside = Path(config_file).parent / path
    if _exists(beside):
        return beside
    shipped = packaged(path) if path.parts[:1] == (PREFIX,) else None
    if shipped is not None and (is_packaged(config_file) or not _exists(path)):
        return shipped
    return None


def available() -> list[str]:
    """Every packaged file's name (configs and the prompt files they name), sorted."""
    files = (p for p in ROOT.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    return sorted(p.relative_to(ROOT).as_posix() for p in files)


def summary(name: str) -> str:
    """The first comment line of a packaged config (its one-line description), or ''."""
    for line in ROOT.joinpath(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def copy(names: Sequence[str], to: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Copy packaged configs (files, or folders with everything in them) into ``to``, keeping
    their layout; returns the files written.

    Raises:
        FileNotFoundError: a name that is no packaged config.
        FileExistsError: a file already in ``to`` (unless ``overwrite``).
    """
    from pila.io import write_text_atomic

    target = Path(to)
    sources: list[Path] = []
    for name in names:
        shipped = packaged(name)
        if shipped is None:
            raise FileNotFoundError(f"no packaged config {name!r} (`pila configs` lists them)")
        files = [shipped] if shipped.is_file() else sorted(shipped.rglob("*"))
        sources += [f for f in files if f.is_file() and f.suffix in SUFFIXES]
    plan = {source: target / source.relative_to(ROOT) for source in dict.fromkeys(sources)}
    existing = [str(dest) for dest in plan.values() if dest.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); --overwrite replaces them")
    for source, dest in plan.items():
        write_text_atomic(dest, source.read_text(encoding="utf-8"))
    return list(plan.values())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pila configs",
        description="List the configs shipped with pila, or copy them out to edit.",
        epilog="A packaged config runs by name from anywhere: pila fit --config lab/stageC.yaml",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("list", help="list the packaged configs (the default)")
    cp = commands.add_parser("copy", help="copy configs or folders (e.g. lab, tiny/predict.yaml)")
    cp.add_argument("names", nargs="+", help="packaged names, as `pila configs` lists them")
    cp.add_argument("--to", default=PREFIX, help="destination folder (default: ./%(default)s)")
    cp.add_argument("--overwrite", action="store_true", help="replace files already there")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "copy":
        try:
            written = copy(args.names, args.to, overwrite=args.overwrite)
        except (FileNotFoundError, FileExistsError) as err:
            sys.stderr.write(f"pila configs: error: {err}\n")
            return 2
        for path in written:
            sys.stdout.write(f"{path}\n")
        log.info("%d file(s) copied; run them with pila fit --config %s/…", len(written), args.to)
        return 0
    names = available()
    width = max(len(n) for n in names)
    sys.stdout.write(f"configs shipped in {ROOT}:\n")
    for name in names:
        text = summary(name) if name.endswith(".yaml") else "prompts named by the configs beside it"
        sys.stdout.write(f"  {name:<{width}}  {text}\n")
    return 0

"""Imports between the package's rooms run one way: no folder-level import loop.

A room is a top-level subpackage or module of ``pila`` (``pila.generation``,
``pila.stages``, ``pila.parser``, ``pila.datamodules``, …). The walk reads every
``import`` of every file with :mod:`ast` (function-level and ``TYPE_CHECKING`` imports
included, relative imports resolved) and follows ``setup.py``'s ``package-dir`` mapping, so
``datamodules/`` counts as ``pila.datamodules`` and ``callbacks/`` as ``pila.callbacks``.
"""

from __future__ import annotations

import ast
import importlib.util
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    """One import statement: ``importer`` (a module, in ``file`` at ``line``) imports ``target``."""

    importer: str
    target: str
    file: str
    line: int


def package_files(root: Path, package_dir: dict[str, str], package: str) -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package ``__init__``), honouring the ``package-dir`` mapping."""
    mapped = {name: root / folder for name, folder in package_dir.items() if name == package or name.startswith(package + ".")}
    mapped.setdefault(package, root / package)
    modules: dict[str, tuple[Path, bool]] = {}
    # Longest names last, so a mapped subpackage wins over a folder of the same name.
    for name, folder in sorted(mapped.items(), key=lambda item: item[0].count(".")):
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join([name, *parts])] = (path, is_package)
    return modules


def imports_of(module: str, path: Path, is_package: bool, known: set[str]) -> list[Import]:
    """Every import in ``path`` (``from a import b`` also names ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known]
        else:
            continue
        found += [Import(module, target, str(path), node.lineno) for target in targets]
    return found


def room_of(module: str, package: str) -> str | None:
    """``pila.generation.sampling`` → ``pila.generation``; None outside the package."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    return ".".join(parts[:2])


def room_cycles(root: Path, package_dir: dict[str, str], package: str) -> list[list[Import]]:
    """The import loops between rooms, each as the chain of imports that closes it."""
    modules = package_files(root, package_dir, package)
    edges: dict[tuple[str, str], Import] = {}
    for module, (path, is_package) in modules.items():
        for imp in imports_of(module, path, is_package, set(modules)):
            a, b = room_of(module, package), room_of(imp.target, package)
            if a and b and a != b and b != package:
                edges.setdefault((a, b), imp)
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)

    def path_between(start: str, goal: str) -> list[str] | None:
        frontier, seen = [[start]], {start}
        while frontier:
            route = frontier.pop(0)
            if route[-1] == goal:
                return route
            for nxt in sorted(graph[route[-1]] - seen):
                seen.add(nxt)
                frontier.append([*route, nxt])
        return None

    cycles, reported = [], set()
    for a, b in sorted(edges):
        back = path_between(b, a)
        if back is None:
            continue
        rooms = [a, *back]  # a → b → … → a
        key = frozenset(rooms)
        if key not in reported:
            reported.add(key)
            cycles.append([edges[(x, y)] for x, y in zip(rooms, rooms[1:], strict=False)])
    return cycles


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def describe(cycle: list[Import], root: Path) -> str:
    """``a → b → a`` and, per step, the file and line of the import that makes it."""
    rooms = " → ".join([_room(cycle[0].importer)] + [_room(i.target) for i in cycle])
    lines = [f"  {Path(i.file).relative_to(root).as_posix()}:{i.line} ({i.importer}) imports {i.target}" for i in cycle]
    return rooms + "\n" + "\n".join(lines)


def assert_no_room_cycles(root: Path, package_dir: dict[str, str], package: str) -> None:
    """Fail with every loop between rooms and the imports that make it."""
    cycles = room_cycles(root, package_dir, package)
    assert not cycles, "import loops between rooms:\n" + "\n".join(describe(c, root) for c in cycles)


def _project_package_dir() -> dict[str, str]:
    """``setup.py``'s ``PACKAGE_DIR`` (read, not run: ``setup()`` is called only as a script)."""
    spec = importlib.util.spec_from_file_location("pila_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.PACKAGE_DIR)


def test_no_import_loop_between_rooms():
    package_dir = _project_package_dir()
    assert package_dir["pila.datamodules"] == "datamodules" and package_dir["pila.callbacks"] == "callbacks"
    assert_no_room_cycles(ROOT, package_dir, "pila")


def test_the_walk_sees_the_mapped_folders_and_relative_imports():
    modules = package_files(ROOT, _project_package_dir(), "pila")
    assert {"pila.datamodules.prepare", "pila.callbacks.schedules", "pila.generation.sampling"} <= set(modules)
    path, is_package = modules["pila.datamodules.wisa"]
    targets = {i.target for i in imports_of("pila.datamodules.wisa", path, is_package, set(modules))}
    assert "pila.datamodules.prepare" in targets  # `from .prepare import …`
    assert "pila.parser.category_map" in targets


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# A toy project laid out like this one: `extra/` installs as `toy.extra`.
TOY = {
    "toy/__init__.py": "",
    "toy/core/__init__.py": "from toy.core.maths import add\n",
    "toy/core/maths.py": "def add(a, b):\n    return a + b\n",
    "toy/api.py": "from toy.core import add\nfrom toy.extra import helpers\n",
    "extra/__init__.py": "",
    "extra/helpers.py": "from ..core.maths import add\n",
}
TOY_DIRS = {"toy": "toy", "toy.extra": "extra"}


def test_the_checker_passes_a_tree_without_loops(tmp_path):
    _write(tmp_path, TOY)
    assert room_cycles(tmp_path, TOY_DIRS, "toy") == []


def test_the_checker_finds_a_deliberately_reintroduced_loop(tmp_path):
    """The loops this test guards against, rebuilt in a toy tree: a function-level import
    back up (as stage C once imported the analysis kit) and a relative import in a mapped
    folder (as relabeling and the parser once imported each other)."""
    _write(tmp_path, TOY)
    _write(tmp_path, {"toy/core/maths.py": "def add(a, b):\n    from toy.extra.helpers import add as _\n    return a + b\n"})
    cycles = room_cycles(tmp_path, TOY_DIRS, "toy")
    assert len(cycles) == 1
    message = describe(cycles[0], tmp_path)
    assert "toy.core → toy.extra → toy.core" in message
    assert "toy/core/maths.py:2 (toy.core.maths) imports toy.extra.helpers" in message
    assert "extra/helpers.py:1 (toy.extra.helpers) imports toy.core.maths" in message
    with pytest.raises(AssertionError, match="import loops between rooms:(.|\n)*toy.core → toy.extra → toy.core"):
        assert_no_room_cycles(tmp_path, TOY_DIRS, "toy")

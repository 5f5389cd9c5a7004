"""Imports between the package's rooms run one way, floor by floor, and no two modules of
one room import each other in a loop.

A room is a top-level subpackage or module of ``pila`` (``pila.generation``,
``pila.stages``, ``pila.parser``, ``pila.datamodules``, …), except that the lab's folder
holds two (:data:`FLOOR_SPLITS`): ``pila.lab:low`` (scenes, corruptions, the ruler) below
the data and ``pila.lab:high`` (the world, its pretraining, evaluate, ablate) near the top.
:data:`FLOORS` orders the rooms; a room imports only rooms on lower floors. The walk reads
every ``import`` of every file with :mod:`ast` (function-level and ``TYPE_CHECKING``
imports included, relative imports resolved) and follows ``setup.py``'s ``package-dir``
mapping, so ``datamodules/`` counts as ``pila.datamodules`` and ``callbacks/`` as
``pila.callbacks``. Every failure names the files and lines of the imports at fault.
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


def package_files(
    root: Path, package_dir: dict[str, str], package: str
) -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package ``__init__``), honouring the ``package-dir`` mapping."""
    mapped = {
        name: root / folder
        for name, folder in package_dir.items()
        if name == package or name.startswith(package + ".")
    }
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
            submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known]
            # `from pkg import mod` imports pkg.mod (pkg's __init__ runs for any pkg.mod);
            # `from pkg import name` imports pkg itself
            targets = submodules if len(submodules) == len(node.names) else [source, *submodules]
        else:
            continue
        found += [Import(module, target, str(path), node.lineno) for target in targets]
    return found


FLOOR_SPLITS: dict[str, tuple[str, ...]] = {
    "pila.lab": ("pila.lab.scenes", "pila.lab.corruptions", "pila.lab.ruler"),
}
"""Folders that hold two rooms: the folder's package ``__init__`` and the listed modules
(and everything under them) form ``<folder>:low``, the rest ``<folder>:high``. The lab's
scenes, corruptions and ruler are pure functions of seeds and pixels that data imports; its
world, pretraining, evaluation and ablations are orchestration over stages and generation."""

FLOORS: tuple[tuple[str, ...], ...] = (
    ("pila.__main__", "pila.demo"),
    ("pila.cli",),
    ("pila.lab:high",),
    ("pila.analysis",),
    ("pila.generation",),
    ("pila.stages",),
    ("pila.datamodules", "pila.callbacks"),
    ("pila.lab:low",),
    ("pila.parser",),
    ("pila.adapter",),
    ("pila.physics", "pila.backbone", "pila.configs"),
    ("pila.flow", "pila.io", "pila.categories", "pila.logs", "pila.lazy"),
)
"""The rooms from the top floor down, as docs/ARCHITECTURE.md draws them: a room imports
only rooms on floors below its own (rooms on one floor never import each other). The
package's own ``__init__`` (the ``pila.generate`` facade) stands outside the floors."""


def room_of(
    module: str, package: str, splits: dict[str, tuple[str, ...]] | None = None
) -> str | None:
    """``pila.generation.sampling`` → ``pila.generation``; ``pila.lab.ruler.vision`` →
    ``pila.lab:low`` (``splits``, as :data:`FLOOR_SPLITS`); None outside the package."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    folder = ".".join(parts[:2])
    if folder not in (splits or {}):
        return folder
    low = module == folder or any(module == m or module.startswith(m + ".") for m in splits[folder])
    return f"{folder}:{'low' if low else 'high'}"


def import_graph(root: Path, package_dir: dict[str, str], package: str) -> list[Import]:
    """Every import between two modules of the package (one per importer, target, line)."""
    modules = package_files(root, package_dir, package)
    found = []
    for module, (path, is_package) in modules.items():
        found += [
            i
            for i in imports_of(module, path, is_package, set(modules))
            if i.target in modules and i.target != module
        ]
    return found


def find_cycles(edges: dict[tuple[str, str], Import]) -> list[list[Import]]:
    """The loops of a directed graph given as (a, b) → the import that makes the edge a → b,
    each once, as the chain of imports that closes it (shortest way back)."""
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
        nodes = [a, *back]  # a → b → … → a
        key = frozenset(nodes)
        if key not in reported:
            reported.add(key)
            cycles.append([edges[(x, y)] for x, y in zip(nodes, nodes[1:], strict=False)])
    return cycles


def room_edges(
    root: Path,
    package_dir: dict[str, str],
    package: str,
    splits: dict[str, tuple[str, ...]] | None = None,
) -> dict[tuple[str, str], Import]:
    """(room a, room b) → the first import by which room a imports room b (a ≠ b; the
    package's own ``__init__`` left out on both ends)."""
    edges: dict[tuple[str, str], Import] = {}
    for imp in import_graph(root, package_dir, package):
        a, b = room_of(imp.importer, package, splits), room_of(imp.target, package, splits)
        if a and b and a != b and package not in (a, b):
            edges.setdefault((a, b), imp)
    return edges


def room_cycles(
    root: Path,
    package_dir: dict[str, str],
    package: str,
    splits: dict[str, tuple[str, ...]] | None = None,
) -> list[list[Import]]:
    """The import loops between rooms, each as the chain of imports that closes it."""
    return find_cycles(room_edges(root, package_dir, package, splits))


def module_cycles(
    root: Path,
    package_dir: dict[str, str],
    package: str,
    splits: dict[str, tuple[str, ...]] | None = None,
) -> list[list[Import]]:
    """The import loops between modules of one room (``a.py`` imports ``b.py`` imports
    ``a.py``, in one folder), each as the chain of imports that closes it."""
    edges: dict[tuple[str, str], Import] = {}
    for imp in import_graph(root, package_dir, package):
        if room_of(imp.importer, package, splits) == room_of(imp.target, package, splits):
            edges.setdefault((imp.importer, imp.target), imp)
    return find_cycles(edges)


def floor_violations(
    edges: dict[tuple[str, str], Import], floors: tuple[tuple[str, ...], ...], root: Path
) -> list[str]:
    """Each import from a room to one on its own floor or above, and each room on no floor."""
    level = {room: i for i, floor in enumerate(floors) for room in floor}
    problems = []
    for room in sorted({r for edge in edges for r in edge} - set(level)):
        problems.append(f"room {room} is on no floor: add it to FLOORS and docs/ARCHITECTURE.md")
    for (a, b), imp in sorted(edges.items()):
        if a in level and b in level and level[b] <= level[a]:
            where = "its own floor" if level[a] == level[b] else "a floor above"
            problems.append(f"{a} imports {b}, on {where}\n  {_where(imp, root)}")
    return problems


def _where(imp: Import, root: Path | None = None) -> str:
    path = Path(imp.file)
    if root is not None:
        path = path.relative_to(root)
    return f"{path.as_posix()}:{imp.line} ({imp.importer}) imports {imp.target}"


def describe(
    cycle: list[Import],
    root: Path,
    splits: dict[str, tuple[str, ...]] | None = None,
    *,
    modules: bool = False,
) -> str:
    """``a → b → a`` (rooms, or modules) and, per step, the file and line of the import that
    makes it."""
    package = cycle[0].importer.split(".")[0]

    def name(module: str) -> str:
        return module if modules else room_of(module, package, splits)

    chain = " → ".join([name(cycle[0].importer)] + [name(i.target) for i in cycle])
    return chain + "\n" + "\n".join(f"  {_where(i, root)}" for i in cycle)


def assert_no_room_cycles(
    root: Path, package_dir: dict[str, str], package: str, splits=None
) -> None:
    """Fail with every loop between rooms and the imports that make it."""
    cycles = room_cycles(root, package_dir, package, splits)
    assert not cycles, "import loops between rooms:\n" + "\n".join(
        describe(c, root, splits) for c in cycles
    )


def assert_no_module_cycles(
    root: Path, package_dir: dict[str, str], package: str, splits=None
) -> None:
    """Fail with every loop between modules of one room and the imports that make it."""
    cycles = module_cycles(root, package_dir, package, splits)
    text = "\n".join(describe(c, root, splits, modules=True) for c in cycles)
    assert not cycles, "import loops inside a room:\n" + text


def _project_package_dir() -> dict[str, str]:
    """``setup.py``'s ``PACKAGE_DIR`` (read, not run: ``setup()`` is called only as a script)."""
    spec = importlib.util.spec_from_file_location("pila_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.PACKAGE_DIR)


def test_no_import_loop_between_rooms():
    package_dir = _project_package_dir()
    assert (
        package_dir["pila.datamodules"] == "datamodules"
        and package_dir["pila.callbacks"] == "callbacks"
    )
    assert_no_room_cycles(ROOT, package_dir, "pila", FLOOR_SPLITS)


def test_rooms_import_only_the_floors_below():
    edges = room_edges(ROOT, _project_package_dir(), "pila", FLOOR_SPLITS)
    problems = floor_violations(edges, FLOORS, ROOT)
    assert not problems, "imports against the floors:\n" + "\n".join(problems)


def test_no_import_loop_inside_a_room():
    assert_no_module_cycles(ROOT, _project_package_dir(), "pila", FLOOR_SPLITS)


def test_the_lab_has_two_floors_and_data_sits_on_the_low_one():
    assert room_of("pila.lab", "pila", FLOOR_SPLITS) == "pila.lab:low"
    assert room_of("pila.lab.ruler.vision", "pila", FLOOR_SPLITS) == "pila.lab:low"
    assert room_of("pila.lab.scenes", "pila", FLOOR_SPLITS) == "pila.lab:low"
    assert room_of("pila.lab.world", "pila", FLOOR_SPLITS) == "pila.lab:high"
    level = {room: i for i, floor in enumerate(FLOORS) for room in floor}
    assert level["pila.lab:high"] < level["pila.generation"] < level["pila.stages"]
    assert level["pila.stages"] < level["pila.datamodules"] < level["pila.lab:low"]
    edges = room_edges(ROOT, _project_package_dir(), "pila", FLOOR_SPLITS)
    assert ("pila.datamodules", "pila.lab:low") in edges  # the synthetic clips are the scenes
    assert not any(
        a == "pila.lab:low" and b.startswith("pila.") and b not in FLOORS[-1] for a, b in edges
    )


def test_the_walk_sees_the_mapped_folders_and_relative_imports():
    modules = package_files(ROOT, _project_package_dir(), "pila")
    assert {
        "pila.datamodules.prepare",
        "pila.callbacks.schedules",
        "pila.generation.sampling",
    } <= set(modules)
    path, is_package = modules["pila.datamodules.wisa"]
    targets = {
        i.target for i in imports_of("pila.datamodules.wisa", path, is_package, set(modules))
    }
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
    _write(
        tmp_path,
        {
            "toy/core/maths.py": (
                "def add(a, b):\n    from toy.extra.helpers import add as _\n    return a + b\n"
            )
        },
    )
    cycles = room_cycles(tmp_path, TOY_DIRS, "toy")
    assert len(cycles) == 1
    message = describe(cycles[0], tmp_path)
    assert "toy.core → toy.extra → toy.core" in message
    assert "toy/core/maths.py:2 (toy.core.maths) imports toy.extra.helpers" in message
    assert "extra/helpers.py:1 (toy.extra.helpers) imports toy.core.maths" in message
    with pytest.raises(
        AssertionError, match="import loops between rooms:(.|\n)*toy.core → toy.extra → toy.core"
    ):
        assert_no_room_cycles(tmp_path, TOY_DIRS, "toy")


def test_the_checker_finds_a_circle_inside_one_folder(tmp_path):
    """Two modules of one folder importing each other (as the records and their relabeling
    once did, one of them at function level) are a loop; `from pkg import mod` beside the
    package's own `__init__` is not."""
    _write(tmp_path, TOY)
    _write(tmp_path, {"toy/core/shapes.py": "from toy.core import maths\n"})
    assert module_cycles(tmp_path, TOY_DIRS, "toy") == []
    _write(
        tmp_path,
        {
            "toy/core/maths.py": "from toy.core.units import metre\n\nadd = sum\n",
            "toy/core/units.py": "metre = 1.0\n\ndef sq():\n    from .maths import add\n",
        },
    )
    assert room_cycles(tmp_path, TOY_DIRS, "toy") == []
    cycles = module_cycles(tmp_path, TOY_DIRS, "toy")
    assert len(cycles) == 1
    message = describe(cycles[0], tmp_path, modules=True)
    assert "toy.core.maths → toy.core.units → toy.core.maths" in message
    assert "toy/core/maths.py:1 (toy.core.maths) imports toy.core.units" in message
    assert "toy/core/units.py:4 (toy.core.units) imports toy.core.maths" in message
    with pytest.raises(
        AssertionError, match="import loops inside a room:(.|\n)*toy/core/units.py:4"
    ):
        assert_no_module_cycles(tmp_path, TOY_DIRS, "toy")


def test_the_floors_catch_an_import_sideways_or_up_and_a_room_on_no_floor(tmp_path):
    _write(tmp_path, TOY)
    edges = room_edges(tmp_path, TOY_DIRS, "toy")
    assert floor_violations(edges, (("toy.api",), ("toy.extra",), ("toy.core",)), tmp_path) == []
    same = floor_violations(edges, (("toy.api",), ("toy.extra", "toy.core")), tmp_path)
    assert same == [
        "toy.extra imports toy.core, on its own floor\n"
        "  extra/helpers.py:1 (toy.extra.helpers) imports toy.core.maths"
    ]
    up = floor_violations(edges, (("toy.api",), ("toy.core",), ("toy.extra",)), tmp_path)
    assert len(up) == 1 and up[0].startswith("toy.extra imports toy.core, on a floor above")
    missing = floor_violations(edges, (("toy.api",), ("toy.core",)), tmp_path)
    assert missing[0] == "room toy.extra is on no floor: add it to FLOORS and docs/ARCHITECTURE.md"


def test_a_folder_split_in_two_floors_lets_data_sit_between_them(tmp_path):
    """The lab's shape: data imports the scenes, the world imports the data. One room, that
    is a loop; the scenes on a low floor and the world on a high one, it is not."""
    _write(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/lab/__init__.py": "",
            "toy/lab/scenes.py": "SCENES = {}\n",
            "toy/lab/world.py": "from toy.data import clips\n",
            "toy/data.py": "from toy.lab.scenes import SCENES\n\nclips = SCENES\n",
        },
    )
    dirs = {"toy": "toy"}
    assert len(room_cycles(tmp_path, dirs, "toy")) == 1
    splits = {"toy.lab": ("toy.lab.scenes",)}
    assert room_cycles(tmp_path, dirs, "toy", splits) == []
    floors = (("toy.lab:high",), ("toy.data",), ("toy.lab:low",))
    assert floor_violations(room_edges(tmp_path, dirs, "toy", splits), floors, tmp_path) == []
    assert room_of("toy.lab", "toy", splits) == "toy.lab:low"
    assert room_of("toy.lab.world", "toy", splits) == "toy.lab:high"

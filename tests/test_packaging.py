"""Packaging: what installs where, every import declared, results that name no machine.

``datamodules/``, ``callbacks/`` and ``lightning_configs/`` install inside the package, never at
top level; the wheel holds every module, config and the lab world; every third-party module
the library imports is a declared dependency.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging import requirements

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = {"pila": "pila", "datamodules": "pila.datamodules", "callbacks": "pila.callbacks"}
"""The library's folders and the package each installs as."""
CONFIG_FOLDER, CONFIG_PACKAGE = "lightning_configs", "pila/lightning_configs"


def _load_ci_wheel():
    spec = importlib.util.spec_from_file_location("ci_wheel", ROOT / ".ci" / "wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folders_import_as_subpackages():
    for folder, name in LIBRARY.items():
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().parent == (ROOT / folder).resolve()
    from pila import configs

    assert configs.ROOT.resolve() == (ROOT / CONFIG_FOLDER).resolve()  # the editable install


# ------------------------------------------------------------------------ the wheel
@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    wheel = _load_ci_wheel().build_wheel(tmp_path_factory.mktemp("dist"))
    return zipfile.ZipFile(wheel).namelist()


def _shipped(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in suffixes and "__pycache__" not in p.parts]


@pytest.mark.slow
def test_wheel_holds_every_module_config_and_the_lab_world(wheel_names):
    names = set(wheel_names)
    for folder, package in LIBRARY.items():
        for path in _shipped(ROOT / folder, (".py",)):
            inside = "/".join([*package.split("."), *path.relative_to(ROOT / folder).parts])
            assert inside in names, f"{path.relative_to(ROOT)} is missing from the wheel"
    configs = _shipped(ROOT / CONFIG_FOLDER, (".yaml", ".jsonl"))
    assert len(configs) > 40
    for path in configs:
        assert f"{CONFIG_PACKAGE}/{path.relative_to(ROOT / CONFIG_FOLDER).as_posix()}" in names
    world = _shipped(ROOT / "pila" / "lab" / "world", (".json", ".safetensors", ".md"))
    assert sum(p.suffix == ".safetensors" for p in world) == 3  # transformer, VAE, text encoder
    for path in world:
        assert path.relative_to(ROOT).as_posix() in names
    assert "pila/parser/category_map.json" in names  # the vocabulary ships
    assert not any(
        n.startswith(("datamodules/", "callbacks/", "lightning_configs/")) for n in names
    )
    assert any(n.endswith("entry_points.txt") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


@pytest.mark.slow
def test_wheel_is_built_from_the_checkouts_files_only(tmp_path):
    """A stray file git ignores (an old build's output, a run's outputs) never gets in."""
    ci = _load_ci_wheel()
    copy = ci.source_copy(tmp_path / "src")
    assert (copy / "pyproject.toml").is_file() and (copy / "lightning_configs" / "lab").is_dir()
    assert not (copy / ".venv").exists() and not (copy / "build").exists()
    assert not any(p.name == "__pycache__" for p in copy.rglob("*"))


# ---------------------------------------------------------------- declared imports
def library_imports() -> dict[str, set[str]]:
    """Top-level third-party modules the library imports anywhere (module level, functions,
    ``try`` blocks), each with the files importing it."""
    found: dict[str, set[str]] = {}
    for folder in LIBRARY:
        for path in _shipped(ROOT / folder, (".py",)):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top not in sys.stdlib_module_names and top != "pila":
                        found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    """Distributions in ``dependencies`` and in every extra but ``dev`` (the tools of tests)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra, items in project.get("optional-dependencies", {}).items():
        specs += items if extra != "dev" else []
    return {_normal(requirements.Requirement(spec).name) for spec in specs}


def test_every_third_party_import_of_the_library_is_declared():
    imports = library_imports()
    assert {"torch", "lightning", "yaml", "huggingface_hub"} <= set(imports)  # the scan sees them
    distributions = packages_distributions()
    declared = declared_distributions()
    undeclared = {}
    for module, files in sorted(imports.items()):
        providers = {_normal(d) for d in distributions.get(module, [])}
        if not providers & declared:
            undeclared[module] = (sorted(providers) or ["not installed"], sorted(files)[:3])
    assert not undeclared, (
        f"declare in pyproject.toml (module: distribution, importers): {undeclared}"
    )


def test_the_import_scan_maps_import_names_to_distributions():
    """Import and distribution names differ: the check goes through the installed metadata."""
    distributions = packages_distributions()
    assert "pyyaml" in {_normal(d) for d in distributions["yaml"]}
    assert "opencv-python-headless" in {_normal(d) for d in distributions["cv2"]}
    assert {"pyyaml", "opencv-python-headless", "huggingface-hub"} <= declared_distributions()
    assert "pytest" not in declared_distributions()  # dev tools do not count for the library


# ------------------------------------------------------------------ licenses
def test_the_license_file_the_world_card_and_pyproject_agree():
    from pila.lab.world_card import WEIGHTS_LICENSE

    license_id = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "license"
    ]
    assert license_id == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
    card = (ROOT / "pila" / "lab" / "world" / "README.md").read_text(encoding="utf-8")
    assert "\n".join(WEIGHTS_LICENSE) in card and f"(`{license_id}`)" in card
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    citing = readme.split("## Citing", 1)[1].split("\n## ", 1)[0]
    title = "Physics-Informed Video Generation via Mixture-of-Experts Latent Alignment"
    assert "@misc{pila," in citing and f"title = {{{title}}}" in citing
    assert f"{license_id} ([LICENSE](LICENSE))" in readme


# ------------------------------------------------------------ recorded results
ABSOLUTE_PATH = re.compile(
    r"""(?:^|[\s"'`(=\[,])((?:/[\w.+-]+){2,}/?|[A-Za-z]:\\[\w\\. -]+|~/[\w./-]+)""", re.M
)
"""An absolute path (POSIX with two or more parts, Windows, or a home folder) standing alone."""


def test_recorded_results_name_no_machine():
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    results += sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    assert results
    found = {}
    for path in results:
        hits = [m.group(1) for m in ABSOLUTE_PATH.finditer(path.read_text(encoding="utf-8"))]
        if hits:
            found[path.name] = hits[:3]
    assert not found, f"record paths relative to the repository: {found}"


def test_the_absolute_path_scan_finds_paths_and_ignores_units():
    text = (
        'args: {"out": "/home/me/pila/x.md"} --figure C:\\runs\\a.png, ~/runs/b; 3 m/s, 1/2, a/b/c'
    )
    assert [m.group(1) for m in ABSOLUTE_PATH.finditer(text)] == [
        "/home/me/pila/x.md",
        "C:\\runs\\a.png",
        "~/runs/b",
    ]


def test_the_lab_world_benchmark_records_repository_relative_paths():
    spec = importlib.util.spec_from_file_location(
        "lab_world_bench", ROOT / "benchmarks" / "lab_world.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.portable(module.FIGURE) == "docs/figures/lab_vae_reconstructions.png"
    assert module.arg_text(module.RESULTS) == "benchmarks/results/lab_world.md"
    assert module.portable(Path("/elsewhere/w.md")) == "/elsewhere/w.md"  # outside: as given
    assert module.arg_text([1.0, 1.5]) == "1,1.5"

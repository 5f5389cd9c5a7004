"""Packaging: datamodules/ and callbacks/ install inside the package, never at top level."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def test_folders_import_as_subpackages():
    for name, folder in (("pila.datamodules", "datamodules"), ("pila.callbacks", "callbacks")):
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().parent == (ROOT / folder).resolve()


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    # subpackages of pila/ that live under a separately mapped folder are not double-counted
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"


@pytest.mark.slow
def test_wheel_maps_folders_into_the_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("pila-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pila/datamodules/__init__.py" in names and "pila/callbacks/__init__.py" in names
    assert not any(n.startswith(("datamodules/", "callbacks/")) for n in names)
    assert "pila/generation/sampling.py" in names and "pila/parser/category_map.json" in names  # the vocabulary ships
    assert any(n.endswith("entry_points.txt") for n in names)

"""Which packages the distribution holds (the rest of the metadata is in ``pyproject.toml``).

Three top-level folders of the repository install inside the package: ``datamodules/`` and
``callbacks/`` as ``pila.datamodules`` and ``pila.callbacks`` (so YAML says
``pila.datamodules.X`` and nothing named ``datamodules`` lands in anyone's site-packages), and
the data folder ``lightning_configs/`` as ``pila/lightning_configs`` (the configs travel with
the package; :mod:`pila.configs` finds them). Packages are found, not listed, so a new
subpackage or config folder needs no edit here.
"""

from setuptools import find_namespace_packages, find_packages, setup

PACKAGE_DIR = {
    "pila": "pila",
    "pila.datamodules": "datamodules",
    "pila.callbacks": "callbacks",
    "pila.lightning_configs": "lightning_configs",
}
DATA_PACKAGES = ("pila.lightning_configs",)
"""Folders of data, not code: every subfolder is a package of data (PEP 420, no ``__init__.py``)."""


def packages() -> list[str]:
    """Every package under each folder of :data:`PACKAGE_DIR`, named inside ``pila``."""
    found = []
    for package, folder in PACKAGE_DIR.items():
        find = find_namespace_packages if package in DATA_PACKAGES else find_packages
        found += [package, *(f"{package}.{sub}" for sub in find(folder, exclude=["*__pycache__*"]))]
    return found


if __name__ == "__main__":
    setup(package_dir=PACKAGE_DIR, packages=packages())

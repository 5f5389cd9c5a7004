"""PILA: physics-informed latent alignment adapters for Wan flow-matching video generators.

``import pila`` stays light: :func:`pila.generate` (``pila.generation.sampling.generate``) is
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pila.generation.sampling import generate

__all__ = ["generate"]

_LAZY = {"generate": ("pila.generation.sampling", "generate")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pila' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

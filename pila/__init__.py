"""PILA: physics-informed latent alignment adapters for Wan flow-matching video generators.

``import pila`` stays light: :func:`pila.generate` (``pila.generation.sampling.generate``) is
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pila.lazy import lazy_exports

if TYPE_CHECKING:
    from pila.generation.sampling import generate

__all__ = ["generate"]

__getattr__, __dir__ = lazy_exports(__name__, {"generate": "generation.sampling"})

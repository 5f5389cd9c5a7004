"""The frozen Wan generator (diffusers folders, hub ids, or the embedded tiny preset).

Names are imported on first use, so that reading a folder's name
(:data:`pila.backbone.folders.LAB_WORLD_FOLDER`) does not load diffusers.
"""

from __future__ import annotations

from pila.lazy import lazy_exports

_EXPORTS = {
    "WAN_FOLDER_LAYOUT": "folders",
    "PromptEmbedding": "wan",
    "WanBackbone": "wan",
    "build_tiny_pipeline": "tiny",
    "build_tiny_tokenizer": "tiny",
    "load_backbone": "wan",
    "resolve_dtype": "loading",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""The frozen Wan generator (diffusers folders, hub ids, or the embedded tiny preset)."""

from pila.backbone.tiny import build_tiny_pipeline, build_tiny_tokenizer
from pila.backbone.wan import (
    WAN_FOLDER_LAYOUT,
    PromptEmbedding,
    WanBackbone,
    load_backbone,
    resolve_dtype,
)

__all__ = [
    "WAN_FOLDER_LAYOUT",
    "PromptEmbedding",
    "WanBackbone",
    "build_tiny_pipeline",
    "build_tiny_tokenizer",
    "load_backbone",
    "resolve_dtype",
]

"""Backbone folders: the layout a diffusers Wan folder has, and the folders known by name.

Only paths here (no torch, no diffusers), so that naming a shipped folder costs nothing:
the lab reads :data:`LAB_WORLD_FOLDER` from here.
"""

from __future__ import annotations

from pathlib import Path

WAN_FOLDER_LAYOUT = (
    "model_index.json, scheduler/, text_encoder/, tokenizer/, transformer/, vae/ "
    "(Wan 2.2-A14B adds transformer_2/ and boundary_ratio in model_index.json)"
)

WAN22_REGIMES: dict[str, str] = {"transformer": "high_noise", "transformer_2": "low_noise"}
"""The regime each transformer of a Wan 2.2-A14B folder serves: ``transformer`` the steps at
timesteps ≥ ``boundary_ratio`` × 1000, ``transformer_2`` the rest (diffusers' ``WanPipeline``)."""

LAB_WORLD_FOLDER = Path(__file__).resolve().parents[1] / "lab" / "world"
"""The shipped lab world (a diffusers ``WanPipeline`` folder), loaded by the backbone name
``lab``; a path, not an import, so the backbone does not depend on the lab."""

NAMED_FOLDERS: dict[str, Path] = {"lab": LAB_WORLD_FOLDER}
"""Backbone names that stand for a folder shipped in the package."""

BUILT_FOLDERS: dict[str, str] = {"lab-moe": "pila.lab.world_moe:world_folder"}
"""Backbone names that stand for a folder built from shipped parts on first use and cached:
name → ``"module:function"`` returning the folder (imported only when the name is used)."""


def named_folder(name: str) -> Path | None:
    """The folder a backbone name stands for (:data:`NAMED_FOLDERS`, or built on first use
    for :data:`BUILT_FOLDERS`), else None."""
    if name in NAMED_FOLDERS:
        return NAMED_FOLDERS[name]
    if name in BUILT_FOLDERS:
        import importlib

        module, function = BUILT_FOLDERS[name].split(":")
        return getattr(importlib.import_module(module), function)()
    return None


def check_wan_folder(path: Path) -> None:
    """Raise a ``FileNotFoundError`` naming what a diffusers Wan folder lacks."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"folder not found: {str(path)!r} (the Wan backbone). Pass a diffusers-format Wan "
            f"folder ({WAN_FOLDER_LAYOUT}), a hub id such as "
            "'Wan-AI/Wan2.1-T2V-1.3B-Diffusers', 'tiny' for the embedded tiny preset, or "
            "'lab' for the shipped lab world ('lab-moe': its two-expert Wan 2.2 sibling)."
        )
    required = ["model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"]
    missing = [name for name in required if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{str(path)!r} is not a diffusers Wan folder: missing {', '.join(missing)}. "
            f"Expected layout: {WAN_FOLDER_LAYOUT}."
        )

"""The physics lab: scenes with closed-form physics, the lab world, the ruler, experiments."""

from pathlib import Path

WORLD_FOLDER = Path(__file__).resolve().parent / "world"
"""The shipped lab world (a diffusers ``WanPipeline`` folder), loaded by the backbone name ``lab``."""

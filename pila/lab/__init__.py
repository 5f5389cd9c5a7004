"""The physics lab: scenes with closed-form physics, the lab world, the ruler, experiments."""

from pila.backbone.folders import LAB_WORLD_FOLDER

WORLD_FOLDER = LAB_WORLD_FOLDER
"""The shipped lab world (a diffusers ``WanPipeline`` folder), loaded by the backbone name ``lab``."""

"""The physics lab: scenes with closed-form physics, the lab world, the ruler, experiments.

The shipped world's folder is named once, in :data:`pila.backbone.folders.LAB_WORLD_FOLDER`
(the backbone name ``lab``); :data:`pila.lab.world.WORLD_FOLDER` is the same path.
"""

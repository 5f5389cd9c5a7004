"""The physics lab: scenes with closed-form physics, the lab world, the ruler, experiments."""

"""``training train RECIPE``: recipes, data assembly, objectives, augmentation and the loop."""

from training.train.recipe import Recipe, RecipeError, load_recipe, write_effective_recipe

__all__ = ["Recipe", "RecipeError", "load_recipe", "write_effective_recipe"]

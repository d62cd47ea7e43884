"""Deployable configurations: one TOML file per endpoint, validated by :mod:`enginescope.recipes.schema`."""

from enginescope.recipes.schema import (
    RECIPES_DIR,
    SCHEMA_VERSION,
    Recipe,
    RecipeError,
    find_recipe_for_model,
    load_all,
    load_recipe,
    with_gpu,
)

__all__ = [
    "RECIPES_DIR",
    "SCHEMA_VERSION",
    "Recipe",
    "RecipeError",
    "find_recipe_for_model",
    "load_all",
    "load_recipe",
    "with_gpu",
]

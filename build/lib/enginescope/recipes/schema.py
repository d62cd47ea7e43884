"""Recipe files: one TOML per deployable configuration, validated on load.

A recipe says which model runs on which engine image and GPUs, how Modal scales it, what the
SLOs are, how the sidecar writes the store, and which simulator profile stands in for it
offline. ``recipes/README.md`` is the field reference. Every error names the file, the field
and what is allowed, e.g. ``recipes/x.toml: autoscaling.max_containers: must be >=
min_containers (got 0 < 1)``.

This module loads and finds recipe files; the dataclasses live in ``enginescope.recipes.specs`` and the
field checks in ``enginescope.recipes.validate``. Their public names are re-exported here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from enginescope.recipes.specs import (
    AutoscalingSpec,
    EngineSpec,
    GpuSpec,
    ModelSpec,
    ParallelSpec,
    Recipe,
    RecipeError,
    ServerSpec,
    SidecarSpec,
    SloSpec,
    SpeculativeSpec,
)
from enginescope.recipes.validate import (
    ENGINES,
    GPU_TYPES,
    MAX_EXIT_GRACE_S,
    MAX_GPUS,
    SCHEMA_VERSION,
    SPEC_METHODS,
    parse_recipe,
)

__all__ = [
    "ENGINES",
    "GPU_TYPES",
    "MAX_EXIT_GRACE_S",
    "MAX_GPUS",
    "RECIPES_DIR",
    "SCHEMA_VERSION",
    "SPEC_METHODS",
    "AutoscalingSpec",
    "EngineSpec",
    "GpuSpec",
    "ModelSpec",
    "ParallelSpec",
    "Recipe",
    "RecipeError",
    "ServerSpec",
    "SidecarSpec",
    "SloSpec",
    "SpeculativeSpec",
    "find_recipe_for_model",
    "load_all",
    "load_recipe",
    "parse_recipe",
    "with_gpu",
]

RECIPES_DIR = Path(__file__).resolve().parent


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate one recipe file. Raises :class:`RecipeError` naming the field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {exc}") from None
    return parse_recipe(raw, path)


# -- lookup ------------------------------------------------------------------------------------


def load_all(directory: str | Path = RECIPES_DIR) -> list[Recipe]:
    """Every ``*.toml`` in ``directory``, sorted by file name; the first bad file raises."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecipeError(f"{directory}: not a directory")
    return [load_recipe(p) for p in sorted(directory.glob("*.toml"))]


def find_recipe_for_model(model_id: str, directory: str | Path = RECIPES_DIR) -> Recipe:
    """The recipe serving ``model_id`` (Hugging Face id or served name, case-insensitive)."""
    recipes = load_all(directory)
    wanted = model_id.strip().lower()
    matches = [r for r in recipes if wanted in (r.model.hf_id.lower(), r.model.served_name.lower())]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(str(r.path.name) for r in matches)
        raise RecipeError(f"model {model_id!r} has several recipes ({names}); pick one with --recipe")
    known = ", ".join(sorted({r.model.hf_id for r in recipes})) or "none"
    raise RecipeError(f"no recipe for model {model_id!r} in {directory}; known models: {known}")


def with_gpu(recipe: Recipe, gpu: str) -> Recipe:
    """``recipe`` re-validated on other GPUs (``"H200"``, ``"H100:2"``): ``--gpu`` on the CLI.

    Parallelism left implicit follows the new count; an explicit ``parallel.tp`` that no
    longer fits raises the usual field error.
    """
    kind, _, count = gpu.partition(":")
    if count and not count.isdigit():
        raise RecipeError(f"--gpu: expected TYPE or TYPE:COUNT (got {gpu!r})")
    raw = tomllib.loads(recipe.path.read_text(encoding="utf-8"))
    raw["gpu"] = {"type": kind.upper() if kind.upper() in GPU_TYPES else kind, "count": int(count or 1)}
    return parse_recipe(raw, recipe.path)

"""The recipe classes of ``iocane.base.recipe_registry.RECIPES``, imported by name.

The table in the base layer holds import strings (the config may not import training); this
module turns an entry into its class, and says clearly when an entry does not.
"""

from __future__ import annotations

import importlib

from iocane.base.recipe_registry import RECIPES
from iocane.training.recipes.base import Recipe


def recipe_class(method: str) -> type[Recipe]:
    """The class ``RECIPES[method]`` names; a ValueError naming the method (and the known ones,
    or the entry that does not import) otherwise."""
    entry = RECIPES.get(method)
    if entry is None:
        raise ValueError(f"unknown training method {method!r}; known: {', '.join(RECIPES)}")
    module_name, _, class_name = entry.target.partition(":")
    try:
        chosen = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"training method {method!r}: {entry.target!r} in iocane/base/recipe_registry.py "
            f"does not import: {error}"
        ) from error
    if not (isinstance(chosen, type) and issubclass(chosen, Recipe)):
        raise ValueError(f"training method {method!r}: {entry.target!r} is not a Recipe class")
    return chosen


def make_recipe(method: str, /, **values: object) -> Recipe:
    """The recipe ``method`` with its config fields taken from ``values`` (which may hold the
    other recipes' fields too, as the ``train`` section does)."""
    return recipe_class(method).from_values(values)

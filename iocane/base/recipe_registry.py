"""The table of training recipes (``train.method``): the one place that names them.

Each entry maps a method name to the class that implements it, as an import string
(``"package.module:Class"``, like a setuptools entry point): the config sits in the base layer,
below training, so it may not import the classes, and must not import torch (bad params exit
before it loads). Everything that knows the list of methods reads it here:

- the config's ``train.method`` and ``sweep.method`` values (``iocane.base.config``), and so the
  JSON schema's enum;
- the training loop, which imports the class (``iocane.training.recipes.recipe_class``);
- the model card, which asks the class for its text (``card_text``);
- the docs, whose recipes page a test holds to this table.

Adding a recipe is one module under ``iocane/training/recipes/`` and one line here
(``docs/development.md``, "Adding a training recipe").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecipeEntry:
    """Where a recipe's class lives, and the one fact the config checks before torch loads."""

    target: str  # "package.module:Class", imported by iocane.training.recipes
    # The loss weighs its adversarial term by train.adv_weight, so 0 would be natural training
    # (the config refuses it). A test holds it to the class's own config fields.
    weighs_adversarial_loss: bool = False


_RECIPES = "iocane.training.recipes"

RECIPES: dict[str, RecipeEntry] = {
    "pgd": RecipeEntry(f"{_RECIPES}.pgd:PgdRecipe", weighs_adversarial_loss=True),
    "trades": RecipeEntry(f"{_RECIPES}.trades:TradesRecipe"),
    "fgsm": RecipeEntry(f"{_RECIPES}.fgsm:FgsmRecipe", weighs_adversarial_loss=True),
    "fgsm_rs": RecipeEntry(f"{_RECIPES}.fgsm_rs:FgsmRsRecipe", weighs_adversarial_loss=True),
    "nfgsm": RecipeEntry(f"{_RECIPES}.nfgsm:NfgsmRecipe", weighs_adversarial_loss=True),
    "free": RecipeEntry(f"{_RECIPES}.free:FreeRecipe"),
    "alp": RecipeEntry(f"{_RECIPES}.alp:AlpRecipe", weighs_adversarial_loss=True),
    "multi": RecipeEntry(f"{_RECIPES}.multi:MultiRecipe", weighs_adversarial_loss=True),
    "multi_threat": RecipeEntry(
        f"{_RECIPES}.multi_threat:MultiThreatRecipe", weighs_adversarial_loss=True
    ),
    "gaussian": RecipeEntry(f"{_RECIPES}.gaussian:GaussianRecipe"),
    "ibp": RecipeEntry(f"{_RECIPES}.ibp:IbpRecipe"),
    "crown_ibp": RecipeEntry(f"{_RECIPES}.crown_ibp:CrownIbpRecipe"),
}

# The method names in the table's order (the config's Literal and the schema's enum).
METHOD_NAMES: tuple[str, ...] = tuple(RECIPES)

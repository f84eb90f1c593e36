"""The recipe table (``iocane.base.recipe_registry.RECIPES``): every entry imports and describes
itself, the config and the docs follow it, and the docs' "Adding a training recipe" example,
registered from this test, trains."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import torch

from iocane.base.config import ConfigError, config_from_dict, load_config
from iocane.base.config.fields import Method
from iocane.base.config.training import TrainConfig
from iocane.base.recipe_registry import RECIPES, RecipeEntry
from iocane.training.recipes import Recipe, make_recipe, recipe_class
from iocane.training.recipes.pgd import PgdRecipe
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.tiny_training import fit_one_epoch

PARAMS = load_config(PROJECT_ROOT / "params.yaml")
# What the card test changes a key to where doubling its value does not apply (a section of
# budgets, a choice); other keys are doubled (or negated).
CHANGED_VALUES = {"threats": {"l0": 3}, "threat_mode": "worst", "beta_end": 0.5}  # 0 doubled is 0


def _train(method: str, **update: object) -> TrainConfig:
    """params.yaml's train section with ``method`` (a registered name outside the config's
    Literal, too, as a freshly registered one is) and ``update``."""
    return PARAMS.train.model_copy(update={"method": method, **update})


def _check_entry(method: str) -> type[Recipe]:
    recipe = recipe_class(method)
    assert issubclass(recipe, Recipe) and recipe is not Recipe
    assert recipe.name == method, f"{recipe.__name__}.name is {recipe.name!r}, its key {method!r}"
    assert dataclasses.is_dataclass(recipe) and recipe.__dataclass_params__.frozen
    unknown = set(recipe.config_fields()) - set(TrainConfig.model_fields)
    assert not unknown, f"{method}: fields {sorted(unknown)} are not train keys"
    reads_adv_weight = "adv_weight" in recipe.config_fields()
    assert RECIPES[method].weighs_adversarial_loss == reads_adv_weight, (
        f"{method}: weighs_adversarial_loss must say whether it reads train.adv_weight"
    )
    return recipe


@pytest.mark.parametrize("method", list(RECIPES))
def test_every_entry_imports_a_recipe_named_as_its_key(method: str) -> None:
    _check_entry(method)


@pytest.mark.parametrize("method", list(RECIPES))
def test_from_config_copies_exactly_the_fields_the_recipe_reads(method: str) -> None:
    train = _train(method)
    recipe = Recipe.from_config(train)
    assert type(recipe) is recipe_class(method)
    assert dataclasses.asdict(recipe) == {
        name: getattr(train, name) for name in type(recipe).config_fields()
    }


@pytest.mark.parametrize("method", list(RECIPES))
def test_the_card_names_the_values_of_the_recipes_own_keys(method: str) -> None:
    """Each key a recipe adds to its parent's changes its card (the card says its settings)."""
    recipe = recipe_class(method)
    parent_fields = {field.name for field in dataclasses.fields(recipe.__mro__[1])}
    card = recipe.card_text(_train(method))
    assert card and card not in [
        recipe_class(other).card_text(_train(other)) for other in RECIPES if other != method
    ]
    for name in set(recipe.config_fields()) - parent_fields:
        value = getattr(PARAMS.train, name)
        if name in CHANGED_VALUES:
            changed = CHANGED_VALUES[name]
        else:
            changed = not value if isinstance(value, bool) else value * 2
        assert recipe.card_text(_train(method, **{name: changed})) != card, name


def test_the_config_takes_the_tables_names_and_refuses_others() -> None:
    assert typing.get_args(Method) == tuple(RECIPES)
    schema = TrainConfig.model_json_schema()
    assert schema["properties"]["method"]["enum"] == list(RECIPES)
    document = PARAMS.to_dict()
    document["train"]["method"] = "pgd_typo"
    with pytest.raises(ConfigError, match=r"train\.method"):
        config_from_dict(document)


def test_an_unknown_or_broken_entry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown training method 'nope'; known: pgd, trades"):
        recipe_class("nope")
    monkeypatch.setitem(RECIPES, "broken", RecipeEntry("iocane.training.recipes.pgd:NoSuch"))
    with pytest.raises(ValueError, match=r"'broken'.*recipe_registry.py does not import"):
        recipe_class("broken")
    monkeypatch.setitem(RECIPES, "not_one", RecipeEntry("attacks.pgd:PGD"))
    with pytest.raises(ValueError, match="is not a Recipe class"):
        recipe_class("not_one")


def test_every_registered_recipe_has_a_row_on_the_recipes_page() -> None:
    page = (PROJECT_ROOT / "docs" / "training" / "recipes.md").read_text()
    rows = set(re.findall(r"^\| `(\w+)`", page, re.MULTILINE))
    missing = [method for method in RECIPES if method not in rows]
    assert not missing, f"docs/training/recipes.md has no row for {missing}"


def _docs_block(name: str) -> str:
    marked = re.compile(
        rf"^<!-- docs-test: {re.escape(name)} -->\n```\w*\n(.*?)^```$", re.DOTALL | re.MULTILINE
    )
    found = marked.findall((PROJECT_ROOT / "docs" / "development.md").read_text())
    assert len(found) == 1, f"docs/development.md has {len(found)} blocks {name!r}, not one"
    return found[0]


def test_the_documented_example_registers_and_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs' module, written where Python finds it, and the docs' line, in the table: the
    recipe passes the entry checks and trains a step exactly as the same attack built by hand."""
    (tmp_path / "docs_pgd2.py").write_text(_docs_block("training-recipe-module"))
    line = _docs_block("training-recipe-line").strip().rstrip(",")
    key, target, weighs = re.fullmatch(
        r'"(\w+)": RecipeEntry\(f"\{_RECIPES\}\.\w+:(\w+)", weighs_adversarial_loss=(\w+)\)', line
    ).groups()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(RECIPES, key, RecipeEntry(f"docs_pgd2:{target}", weighs == "True"))
    _check_entry(key)
    example = Recipe.from_config(_train(key))
    assert "two-step PGD" in example.card_text(_train(key))
    by_hand = PgdRecipe(
        norm=example.norm,
        eps=example.eps,
        eps_ramp_epochs=example.eps_ramp_epochs,
        adv_weight=example.adv_weight,
        step_size=example.eps / 2,
        steps=2,
        random_start=True,
    )
    trained = fit_one_epoch(example, tmp_path / "example")
    expected = fit_one_epoch(by_hand, tmp_path / "by_hand")
    natural = fit_one_epoch(None, tmp_path / "natural")
    assert all(torch.equal(trained[name], expected[name]) for name in trained)
    assert not all(torch.equal(trained[name], natural[name]) for name in trained)
    assert make_recipe(key, **_train(key).model_dump()) == example

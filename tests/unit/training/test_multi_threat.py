"""``multi_threat``: training against several threats (issue 31, item 7). Its examples stay in
each threat's budget, ``mixed`` cycles the threats batch by batch, ``worst`` keeps per sample the
highest-loss example, it trains on digits, and the config names its mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks import PGD
from attacks.spatial import affine_matrices, warp
from attacks.threat import threat_model
from iocane.base.config import ConfigError, config_from_dict, load_config
from iocane.base.layout import Layout
from iocane.training.loop import fit
from iocane.training.recipes import Recipe
from iocane.training.recipes.multi_threat import MultiThreatRecipe, WorstOfThreats
from models import build_model
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.tiny_training import SPEC, adversarial_recipe, constant_lr, digits_split

THREATS = {"linf": 0.1, "l2": 0.5, "l0": 2, "patch": 2, "spatial": {"rotate": 15, "translate": 1}}
NORMS = {"linf": "Linf", "l2": "L2", "l0": "L0", "patch": "patch"}
MEMBER_NAMES = ["pgd", "pgd", "pgd_l0", "patch_pgd", "spatial_pgd"]


def _recipe(mode: str = "mixed", threats: dict | None = None, **fields: object) -> Recipe:
    values = {"norm": "Linf", "eps": 0.1, "eps_ramp_epochs": 0, "adv_weight": 1.0, "steps": 3}
    values.update(threats=THREATS if threats is None else threats, threat_mode=mode, **fields)
    return adversarial_recipe("multi_threat", **values)


def test_mixed_mode_takes_the_threats_in_turn_batch_by_batch() -> None:
    recipe = _recipe("mixed")
    names = [recipe.attack(0.1, seed=0, batch=batch).name for batch in range(7)]
    assert names == [*MEMBER_NAMES, *MEMBER_NAMES[:2]]
    assert [recipe.attack(0.1, 0, batch).norm for batch in (0, 1, 5, 6)] == [
        "Linf",
        "L2",
        "Linf",
        "L2",
    ]


def test_every_example_stays_in_its_threats_budget(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    images, labels = images[:64], labels[:64]
    recipe = _recipe("mixed")
    for batch, name in enumerate(THREATS):
        attack = recipe.attack(0.1, seed=batch, batch=batch)
        adversarial = attack(model, images, labels)
        assert adversarial.shape == images.shape and not model.training
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        if name == "spatial":  # a warp inside the box: check the box the attack searches
            assert (attack.rotate, attack.translate) == (15, 1)
        else:
            distance = threat_model(NORMS[name]).norm(adversarial - images)
            assert distance.max() <= THREATS[name] * (1 + 1e-5), name
        fooled = (model(adversarial).argmax(1) != labels).float().mean()
        assert fooled > (model(images).argmax(1) != labels).float().mean(), f"{name} does nothing"


def test_the_eps_ramp_scales_every_budget_and_leaves_a_zero_pixel_threat_clean() -> None:
    recipe = _recipe("mixed")
    half = [recipe.attack(0.05, 0, batch) for batch in range(5)]
    assert [half[0].eps, half[1].eps, half[2].eps, half[3].eps] == [0.05, 0.25, 1, 1]
    assert (half[4].rotate, half[4].translate) == (7.5, 0.5)
    assert recipe.attack(0.01, 0, batch=2) is None  # 0.2 of a pixel: no L0 attack yet


class _Shift(nn.Module):
    """Logits linear in the mean pixel: a known loss per example."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean(dim=(1, 2, 3))
        return torch.stack([mean * 4, -mean * 4], dim=1)


def test_worst_mode_keeps_per_sample_the_highest_loss_example(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    images, labels = images[:48], labels[:48]
    members = (
        PGD(eps=0.1, norm="Linf", steps=2, step_size=0.05, seed=1),
        PGD(eps=0.5, norm="L2", steps=2, step_size=0.25, seed=1),
        None,  # a ramped-out pixel threat: the clean image is its candidate
    )
    worst = WorstOfThreats(members)(model, images, labels)
    candidates = [images if m is None else m(model, images, labels) for m in members]
    with torch.no_grad():
        losses = torch.stack(
            [F.cross_entropy(model(c), labels, reduction="none") for c in candidates]
        )
        chosen = F.cross_entropy(model(worst), labels, reduction="none")
    assert torch.equal(chosen, losses.max(dim=0).values)
    picks = losses.argmax(dim=0)
    assert len(set(picks.tolist())) > 1, "the test needs samples won by different threats"
    for index, pick in enumerate(picks.tolist()):
        assert torch.equal(worst[index], candidates[pick][index])


def test_worst_mode_by_a_known_loss() -> None:
    """On a model whose loss rises with the mean pixel for label 1 and falls with it for label 0,
    the darker (turned) image wins for label 0 and the clean one for label 1."""
    images = torch.full((2, 1, 8, 8), 0.5)
    labels = torch.tensor([1, 0])
    turned = SpatialTurn()
    worst = WorstOfThreats((turned, None))(_Shift(), images, labels)
    assert torch.equal(worst[0], images[0])
    assert torch.equal(worst[1], turned(None, images, labels)[1])


class SpatialTurn:
    """A fixed rotation (darkens the corners): an attack of the call shape, for the test above."""

    name = "turn"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        points = torch.tensor([[30.0, 0.0, 0.0]] * len(images))
        return warp(images, affine_matrices(points, 8, 8))


@pytest.mark.parametrize("mode", ["mixed", "worst"])
def test_it_trains_on_digits_against_every_threat(tmp_path: Path, mode: str) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = fit(
        stage="train",
        model=model,
        spec=SPEC,
        data=digits_split(n_train=80, n_val=16),
        optim=constant_lr(epochs=1, batch_size=16),  # 5 batches: each threat once when mixed
        recipe=_recipe(mode, steps=2),
        val_attack=PGD(eps=0.1, steps=2, seed=1),
        layout=Layout(tmp_path),
        seed=3,
        run_key="key",
        device=torch.device("cpu"),
    )
    assert result["train_adv_loss"] is not None and result["train_adv_loss"] > 0
    after = model.state_dict()
    assert all(torch.isfinite(value).all() for value in after.values())
    assert not all(torch.equal(before[name], after[name]) for name in before)


def _train_document(**train: object) -> dict:
    document = load_config(PROJECT_ROOT / "params.yaml").to_dict()
    document["train"].update(train)
    return document


@pytest.mark.parametrize(
    ("train", "key"),
    [
        ({"method": "multi_threat"}, "train.threats"),
        ({"method": "multi_threat", "threats": {}}, "train.threats"),
        ({"method": "multi_threat", "threats": {"corruptions": [1]}}, "train.threats.corruptions"),
        ({"method": "multi_threat", "threats": {"l0": 0}}, "train.threats.l0"),
        ({"method": "multi_threat", "threats": {"linf": 1.5}}, "train.threats.linf"),
        (
            {"method": "multi_threat", "threats": {"spatial": {"rotate": 15, "rotations": 3}}},
            "train.threats.spatial.rotations",
        ),
        (
            {"method": "multi_threat", "threats": {"l2": 0.5}, "threat_mode": "max"},
            "train.threat_mode",
        ),
    ],
)
def test_bad_threats_are_named(train: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict(_train_document(**train))
    assert error.value.key == key, str(error.value)


def test_without_the_new_keys_params_load_as_before_and_only_multi_threat_reads_them() -> None:
    document = _train_document(method="pgd")
    del document["train"]["threats"], document["train"]["threat_mode"]
    config = config_from_dict(document)
    assert config.train.threats.budgets() == {} and config.train.threat_mode == "mixed"
    assert "threats" not in type(Recipe.from_config(config.train)).config_fields()
    config = config_from_dict(_train_document(method="multi_threat", threats={"l0": 2}))
    recipe = Recipe.from_config(config.train)
    assert isinstance(recipe, MultiThreatRecipe) and recipe.attack(0.1, 0, 0).name == "pgd_l0"
    assert "l0 (2 pixels)" in MultiThreatRecipe.card_text(config.train)


def test_a_recipe_built_by_hand_names_its_mistakes() -> None:
    with pytest.raises(ValueError, match=r"train\.threats: corruptions has no gradient attack"):
        _recipe(threats={"corruptions": [1]})
    with pytest.raises(ValueError, match=r"train\.threat_mode must be mixed or worst"):
        _recipe("max")
    with pytest.raises(ValueError, match=r"train\.threats is empty"):
        _recipe(threats={}).attack(0.1, 0, 0)

"""``optimizer`` (warmup and train): SGD as always, Adam and AdamW with ``momentum`` as beta1;
a null ``train.lr`` has no default for the Adams; the model card names the optimiser."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iocane.base.config import ConfigError, OptimConfig, config_from_dict
from iocane.base.layout import Layout
from iocane.reports.model_card import optimizer_description
from iocane.training.loop import fit
from iocane.training.state import make_optimizer, make_scheduler
from models import build_model
from tests.helpers.tiny_training import SPEC, digits_split


def _optim(optimizer: str, lr: float = 0.01) -> OptimConfig:
    return OptimConfig(
        epochs=2,
        batch_size=32,
        optimizer=optimizer,
        lr=lr,
        momentum=0.8,
        weight_decay=1e-3,
        lr_schedule="cosine",
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_each_optimizer_takes_the_keys(name: str, kind: type) -> None:
    optimizer = make_optimizer(torch.nn.Linear(3, 2), _optim(name))
    group = optimizer.param_groups[0]
    assert type(optimizer) is kind
    assert (group["lr"], group["weight_decay"]) == (0.01, 1e-3)
    if name == "sgd":
        assert group["momentum"] == 0.8
    else:
        assert group["betas"] == (0.8, 0.999), "momentum is Adam's beta1"


def test_a_schedule_drives_adam_as_it_drives_sgd() -> None:
    optimizer = make_optimizer(torch.nn.Linear(3, 2), _optim("adam"))
    scheduler = make_scheduler(optimizer, _optim("adam"))
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005), "cosine over 2 epochs"


def test_params_files_without_the_key_train_with_sgd(params_document: dict) -> None:
    warmup = {k: v for k, v in params_document["warmup"].items() if k != "optimizer"}
    config = config_from_dict({**params_document, "warmup": warmup})
    assert config.warmup.optimizer == "sgd"


def test_a_null_train_lr_with_adam_is_an_error_naming_the_key(params_document: dict) -> None:
    train = {**params_document["train"], "optimizer": "adam", "lr": None}
    with pytest.raises(ConfigError) as error:
        config_from_dict({**params_document, "train": train})
    assert error.value.key == "train.lr"
    assert "set it for adam" in str(error.value)
    given = config_from_dict({**params_document, "train": {**train, "lr": 0.001}})
    assert (given.train.optimizer, given.train.lr) == ("adam", 0.001)


def test_an_unknown_optimizer_names_the_key(params_document: dict) -> None:
    train = {**params_document["train"], "optimizer": "rmsprop"}
    with pytest.raises(ConfigError) as error:
        config_from_dict({**params_document, "train": train})
    assert error.value.key == "train.optimizer"


def test_the_model_card_names_the_optimizer() -> None:
    assert optimizer_description(_optim("adamw")) == (
        "AdamW lr 0.01, beta1 0.8, weight decay 0.001"
    )
    assert optimizer_description(_optim("sgd")).startswith("SGD lr 0.01, momentum 0.8")


def test_adam_trains_through_the_loop(tmp_path: Path) -> None:
    """A natural epoch pair with Adam at 1e-3 learns digits (chance is 0.1), checkpoints and
    all: the optimiser's state goes through the same train state as SGD's."""
    torch.manual_seed(0)
    result = fit(
        stage="warmup",
        model=build_model(SPEC),
        spec=SPEC,
        data=digits_split(n_train=256, n_val=128),
        optim=_optim("adam", lr=1e-3),
        recipe=None,
        val_attack=None,
        layout=Layout(tmp_path),
        seed=0,
        run_key="key",
        device=torch.device("cpu"),
    )
    assert result["val_clean_accuracy"] > 0.3, "chance is 0.1"

"""The params loader: the project's params.yaml loads, and bad documents name their key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from iocane.base.config import ConfigError, config_from_dict, load_config
from tests.helpers.paths import PROJECT_ROOT


def test_project_params_load_with_real_types() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml")
    assert config.data.dataset == "digits"
    assert isinstance(config.train.eps, float) and config.train.eps == pytest.approx(0.1)
    assert isinstance(config.train.weight_decay, float)
    assert config.train.random_start is True


def test_the_shipped_dataset_params_files_load() -> None:
    files = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))
    assert files, "configs/ holds the per-dataset params files"
    # the user's own model and folder (README); certified training on Fashion-MNIST
    datasets = {"own_model": "folder", "fashion_mnist_certified": "fashion_mnist"}
    for path in files:
        config = load_config(path)
        expected = datasets.get(path.stem, path.stem)
        assert config.data.dataset == expected, f"{path.name} is for {config.data.dataset}"
    fashion = load_config(PROJECT_ROOT / "configs" / "fashion_mnist.yaml")
    # The configuration benchmarks/budget.py measured best at ten minutes (issue 19).
    assert (fashion.model.name, fashion.model.width) == ("compact_cnn", 8)
    assert (fashion.train.method, fashion.train.steps, fashion.train.optimizer) == (
        "pgd",
        5,
        "adam",
    )
    assert fashion.train.budget_minutes == 10


def test_overrides_are_typed_yaml_values() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml", ["train.eps=0.2", "train.random_start=false", "seed=3"]
    )
    assert config.train.eps == pytest.approx(0.2)
    assert config.train.random_start is False
    assert config.seed == 3


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("train", "eps", -0.1, "train.eps"),
        ("train", "eps", 1.5, "train.eps"),  # Linf eps above 1
        ("train", "steps", 0, "train.steps"),
        ("train", "step_size", 0.0, "train.step_size"),
        ("train", "adv_weight", 1.5, "train.adv_weight"),
        ("train", "norm", "L1", "train.norm"),
        ("train", "eps", "0.1", "train.eps"),  # a string is not a number
        ("train", "random_start", "yes", "train.random_start"),
        ("train", "steps", 2.5, "train.steps"),
        ("train", "eps_ramp_epochs", 99, "train.eps_ramp_epochs"),
        ("data", "dataset", "imagenet", "data.dataset"),
        ("data", "val_fraction", 0.9, "data.val_fraction"),
        ("warmup", "epochs", 0, "warmup.epochs"),
        ("gate", "min_clean_accuracy", 1.2, "gate.min_clean_accuracy"),
        ("model", "name", "vgg", "model.name"),
        ("registry", "model_name", "", "registry.model_name"),
        ("runtime", "precision", "fp16", "runtime.precision"),
        ("runtime", "compile", "yes", "runtime.compile"),
        ("train", "nproc", 0, "train.nproc"),
    ],
)
def test_bad_values_name_the_key(
    params_document: dict, section: str, key: str, value: object, named: str
) -> None:
    params_document[section][key] = value
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config_from_dict(params_document)


def test_every_process_needs_two_images_of_a_batch(params_document: dict) -> None:
    params_document["train"].update(nproc=4, batch_size=7)
    with pytest.raises(ConfigError, match=r"train\.batch_size: must be at least 2 per process"):
        config_from_dict(params_document)
    params_document["train"]["batch_size"] = 8
    assert config_from_dict(params_document).train.nproc == 4


def test_params_files_without_nproc_train_in_one_process(params_document: dict) -> None:
    del params_document["train"]["nproc"]
    assert config_from_dict(params_document).train.nproc == 1


def test_unknown_key_is_refused(params_document: dict) -> None:
    params_document["train"]["epsilon"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown key train\.epsilon"):
        config_from_dict(params_document)


def test_missing_key_is_refused(params_document: dict) -> None:
    del params_document["gate"]["min_robust_accuracy"]
    with pytest.raises(ConfigError, match=r"missing key gate\.min_robust_accuracy"):
        config_from_dict(params_document)


def test_yaml_exponent_without_dot_gets_a_hint(tmp_path: Path, params_document: dict) -> None:
    text = yaml.safe_dump(params_document).replace("weight_decay: 0.0005", "weight_decay: 5e-4")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"weight_decay.*5\.0e-4"):
        load_config(path)


def test_torchvision_dataset_needs_a_root(params_document: dict) -> None:
    params_document["data"]["dataset"] = "fashion_mnist"
    params_document["data"]["root"] = None
    with pytest.raises(ConfigError, match=r"data\.root"):
        config_from_dict(params_document)


def test_bad_override_syntax(params_document: dict) -> None:
    with pytest.raises(ConfigError, match=r"SECTION\.KEY=VALUE"):
        load_config(PROJECT_ROOT / "params.yaml", ["train.eps"])
    with pytest.raises(ConfigError, match="nosuch"):
        load_config(PROJECT_ROOT / "params.yaml", ["nosuch.eps=1"])


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ((), "iocane-digits"),
        (("data.dataset=fashion_mnist", "data.root=/x"), "iocane-fashion-mnist"),
        (("data.dataset=folder", "data.root=data/images"), "iocane-images"),
        (("data.dataset=folder", "data.root=/srv/My Photos (2026)/"), "iocane-my-photos-2026"),
        (("data.dataset=folder", "data.root=data/images", "registry.model_name=mine"), "mine"),
    ],
)
def test_registered_name_follows_the_data(overrides: tuple[str, ...], name: str) -> None:
    """params.yaml's ``registry.model_name: null`` names the data the version was trained on,
    never another dataset's; a name given anywhere wins."""
    config = load_config(PROJECT_ROOT / "params.yaml", list(overrides))
    assert config.registry.model_name == name
    assert config.to_dict()["registry"]["model_name"] == name

"""Models that are not iocane's own (models/sources.py): torchvision builders, timm, a user's
``module:factory``; each built behind iocane's normalisation, trained a step, saved and reloaded
with weights_only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from iocane.base.config import ConfigError, replace
from iocane.base.errors import ModelSourceError
from iocane.model_files import load_model, save_model
from models import ModelSpec, build_model
from models.sources import check_source
from tests.helpers.pipeline_params import write_tiny_params

HAS_TIMM = importlib.util.find_spec("timm") is not None


def _spec(name: str, channels: int = 3, size: int = 16, classes: int = 3) -> ModelSpec:
    return ModelSpec(
        name=name,
        in_channels=channels,
        image_size=size,
        num_classes=classes,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


def _train_step_and_round_trip(spec: ModelSpec, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(spec)
    images = torch.rand(4, spec.in_channels, spec.image_size, spec.image_size)
    labels = torch.tensor([0, 1, 2, 0]) % spec.num_classes
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model.eval()
    path = tmp_path / "model.pt"
    save_model(path, model, spec)
    loaded, loaded_spec = load_model(path)
    assert loaded_spec == spec
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
        assert loaded(images).shape == (4, spec.num_classes)


def test_torchvision_resnet18_trains_and_round_trips(tmp_path: Path) -> None:
    _train_step_and_round_trip(_spec("torchvision:resnet18"), tmp_path)


def test_user_factory_trains_and_round_trips(tmp_path: Path) -> None:
    _train_step_and_round_trip(_spec("tests.helpers.user_models:tiny_net", channels=1), tmp_path)


def test_a_grey_image_is_repeated_for_a_torchvision_network() -> None:
    model = build_model(_spec("torchvision:resnet18", channels=1, classes=4))
    reference = torchvision.models.resnet18(num_classes=4).state_dict()
    # The network is exactly the builder's: its state_dict is the builder's under "net.".
    net_keys = {k[4:] for k in model.state_dict() if k.startswith("net.")}
    assert net_keys == set(reference)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 4)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("torchvision:no_such_net", "no_such_net"),
        ("no_such_module_xyz:factory", "no_such_module_xyz"),
        ("tests.helpers.user_models:missing", "missing"),
        ("tests.helpers.user_models:not_a_network", "not an nn.Module"),
    ],
)
def test_names_that_build_nothing_are_refused(name: str, named: str) -> None:
    with pytest.raises(ModelSourceError, match=r"model\.name") as caught:
        build_model(_spec(name))
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("torchvision:no_such_net", "no_such_net"),
        ("no_such_module_xyz:factory", "no_such_module_xyz"),
        ("tests.helpers.user_models:missing", "missing"),
        ("math:sqrt", "must accept channels="),
    ],
)
def test_the_check_before_a_run_refuses_what_cannot_be_built(name: str, named: str) -> None:
    """``iocane run`` calls it before any work; the same messages as the build's."""
    with pytest.raises(ModelSourceError, match=r"model\.name") as caught:
        check_source(name)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "name", ["small_cnn", "torchvision:resnet18", "tests.helpers.user_models:tiny_net"]
)
def test_the_check_before_a_run_passes_what_builds(name: str) -> None:
    check_source(name)
    build_model(_spec(name, channels=1))  # and it does build


def test_timm_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # as if the extra were not installed
    with pytest.raises(ModelSourceError, match=r"pip install 'iocane\[timm\]'"):
        build_model(_spec("timm:resnet18"))


@pytest.mark.skipif(not HAS_TIMM, reason="the timm extra is not installed")
def test_timm_model_trains_and_round_trips(tmp_path: Path) -> None:
    _train_step_and_round_trip(_spec("timm:resnet18"), tmp_path)


def test_own_architectures_unchanged_in_form() -> None:
    """No adapter layer, no new spec keys: their files stay what they were."""
    spec = _spec("small_cnn", channels=1, size=8, classes=10)
    assert list(dict(build_model(spec).named_children())) == ["normalize", "net"]
    assert set(spec.to_dict()) == {
        "name",
        "in_channels",
        "image_size",
        "num_classes",
        "mean",
        "std",
        "width",
        "depth",
    }


def test_config_accepts_the_source_forms(tmp_path: Path) -> None:
    from iocane.base.config import load_config

    config = load_config(write_tiny_params(tmp_path / "params.yaml"))
    for name in ("torchvision:resnet18", "timm:vit_tiny_patch16_224", "my.models:build"):
        assert replace(config.model, name=name).name == name
    for name, key in (
        ("vgg", "name"),
        ("torchvision:", "name"),
        ("a-b:c", "name"),
        (":resnet18", "name"),
    ):
        with pytest.raises(ConfigError, match=key):
            replace(config.model, name=name)
    with pytest.raises(ConfigError, match="width"):
        replace(config.model, name="torchvision:resnet18", width=2)
    with pytest.raises(ConfigError, match="std"):
        replace(config.model, std=[0.0])
    with pytest.raises(ConfigError, match=r"warmup\.epochs"):
        load_config(tmp_path / "params.yaml", ["warmup.epochs=0"])
    given = load_config(
        tmp_path / "params.yaml", ["warmup.epochs=0", "model.weights=w.pt", "model.mean=[0.5]"]
    )
    assert given.warmup.epochs == 0 and given.model.mean == (0.5,)

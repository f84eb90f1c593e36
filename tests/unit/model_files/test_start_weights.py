"""Starting from the user's weights (``model.weights``): the warmup stage on real digits data,
the given model as the natural baseline, its lineage, the head check and ``reset_head``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from iocane.base.config import ConfigError, load_config
from iocane.base.errors import ModelSourceError
from iocane.base.files import read_json, sha256_file
from iocane.base.layout import Layout
from iocane.data.prepared import load_prepared, prepare_data
from iocane.model_files import load_model, model_spec_for, read_state_dict
from models import build_model
from tasks.warmup import run_warmup
from tests.helpers.pipeline_params import write_tiny_params

FACTORY = "tests.helpers.user_models:tiny_net"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits, prepared once (a few seconds); each test copies the project."""
    root = tmp_path_factory.mktemp("prepared")
    config = load_config(write_tiny_params(root / "params.yaml", data={"limit_train": 200}))
    prepare_data(config, Layout(root))
    return root


def _project(prepared: Path, tmp_path: Path, *overrides: str):
    import shutil

    shutil.copytree(prepared, tmp_path, dirs_exist_ok=True)
    config = load_config(tmp_path / "params.yaml", [f"model.name={FACTORY}", *overrides])
    return config, Layout(tmp_path)


def _user_weights(tmp_path: Path, classes: int, wrapped: bool = False) -> tuple[Path, dict]:
    """A state_dict the user trained elsewhere (here: a seeded random net for ``classes``)."""
    from tests.helpers.user_models import tiny_net

    torch.manual_seed(123)
    state = tiny_net(channels=1, image_size=8, num_classes=classes).state_dict()
    if wrapped:
        state = {f"net.{k}": v for k, v in state.items()}
    path = tmp_path / "user.pt"
    torch.save(state, path)
    return path, state


def test_given_weights_are_the_natural_baseline(prepared: Path, tmp_path: Path) -> None:
    weights, state = _user_weights(tmp_path, classes=10)
    config, layout = _project(prepared, tmp_path, "warmup.epochs=0", f"model.weights={weights}")
    run_warmup(config, layout)
    model, spec = load_model(layout.model_file("warmup"))
    expected = build_model(spec)
    expected.get_submodule("net").load_state_dict(state)
    images = load_prepared(layout).test.images[:32]
    with torch.no_grad():
        assert torch.equal(model(images), expected.eval()(images))
    metrics = read_json(layout.metrics_file("warmup"))
    assert metrics["epochs"] == 0
    assert metrics["base_model"] == {"path": str(weights), "sha256": sha256_file(weights)}
    assert 0 <= metrics["val_clean_accuracy"] <= 1


def test_given_weights_fine_tuned_keep_their_lineage(prepared: Path, tmp_path: Path) -> None:
    weights, state = _user_weights(tmp_path, classes=10, wrapped=True)
    config, layout = _project(prepared, tmp_path, "warmup.epochs=1", f"model.weights={weights}")
    run_warmup(config, layout)
    model, _ = load_model(layout.model_file("warmup"))
    # Trained on from the given weights: moved, but from them (same shapes, different values).
    assert not torch.equal(model.state_dict()["net.0.weight"], state["net.0.weight"])
    assert read_json(layout.metrics_file("warmup"))["base_model"]["sha256"] == sha256_file(weights)


def test_a_head_for_other_classes_is_refused_naming_both(prepared: Path, tmp_path: Path) -> None:
    weights, _ = _user_weights(tmp_path, classes=5)
    config, layout = _project(prepared, tmp_path, f"model.weights={weights}")
    with pytest.raises(ModelSourceError, match="has 5 classes but the data has 10"):
        run_warmup(config, layout)


def test_reset_head_replaces_the_last_linear_layer(prepared: Path, tmp_path: Path) -> None:
    weights, state = _user_weights(tmp_path, classes=5)
    config, layout = _project(
        prepared, tmp_path, "warmup.epochs=0", f"model.weights={weights}", "model.reset_head=true"
    )
    run_warmup(config, layout)
    loaded = load_model(layout.model_file("warmup"))[0].state_dict()
    assert torch.equal(loaded["net.0.weight"], state["0.weight"])  # the body is the user's
    assert loaded["net.4.weight"].shape == (10, 32)  # a fresh head for the data's 10 classes


def test_mean_with_the_wrong_channel_count_is_named(prepared: Path, tmp_path: Path) -> None:
    config, layout = _project(prepared, tmp_path, "model.mean=[0.5, 0.5, 0.5]")
    with pytest.raises(ConfigError, match=r"model\.mean: 3 value"):
        model_spec_for(config.model, load_prepared(layout).model_spec(config.model))
    config, layout = _project(prepared, tmp_path, "model.mean=[0.25]", "model.std=[0.5]")
    spec = model_spec_for(config.model, load_prepared(layout).model_spec(config.model))
    assert (spec.mean, spec.std) == ((0.25,), (0.5,))


def test_safetensors_without_the_package_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"{}")
    with pytest.raises(ModelSourceError, match="pip install safetensors"):
        read_state_dict(path)


def test_a_safetensors_state_dict_is_read(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {"layer.weight": torch.randn(3, 2), "layer.bias": torch.zeros(3)}
    save_file(state, tmp_path / "w.safetensors")
    read = read_state_dict(tmp_path / "w.safetensors")
    assert read.keys() == state.keys()
    assert all(torch.equal(read[key], state[key]) for key in state)


def test_weights_that_are_not_a_state_dict_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ModelSourceError, match="holds no state_dict"):
        read_state_dict(path)
    with pytest.raises(ModelSourceError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pt")

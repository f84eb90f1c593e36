"""Tests for the model zoo: shapes, gradients, normalisation, (de)serialisation, export."""

import json

import pytest
import torch
from torch import nn

from models import MODEL_NAMES, ModelSpec, build_model
from models.normalize import Normalize

GRAY = {"mean": (0.5,), "std": (0.25,)}
RGB = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}

# Small widths keep every architecture fast on CPU while exercising the same code.
SPECS = {
    "small_cnn_digits": ModelSpec("small_cnn", 1, 8, 10, width=8, **GRAY),
    "small_cnn_cifar": ModelSpec("small_cnn", 3, 32, 10, width=8, **RGB),
    "madry_cnn_mnist": ModelSpec("madry_cnn", 1, 28, 10, width=2, **GRAY),
    "madry_cnn_digits": ModelSpec("madry_cnn", 1, 8, 10, width=2, **GRAY),
    "compact_cnn_fashion": ModelSpec("compact_cnn", 1, 28, 10, width=2, **GRAY),
    "preact_resnet18_cifar": ModelSpec("preact_resnet18", 3, 32, 10, width=8, **RGB),
    "preact_resnet18_gray": ModelSpec("preact_resnet18", 1, 28, 7, width=4, **GRAY),
    "wide_resnet_cifar": ModelSpec("wide_resnet", 3, 32, 10, width=1, depth=10, **RGB),
    "ibp_cnn_fashion": ModelSpec("ibp_cnn", 1, 28, 10, width=2, **GRAY),
    "ibp_cnn_digits": ModelSpec("ibp_cnn", 1, 8, 10, width=2, **GRAY),
}


def _images(spec: ModelSpec, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, spec.in_channels, spec.image_size, spec.image_size, generator=g)


def test_model_names_covered() -> None:
    assert set(MODEL_NAMES) == {
        "small_cnn",
        "madry_cnn",
        "compact_cnn",
        "preact_resnet18",
        "wide_resnet",
        "ibp_cnn",
    }
    assert {s.name for s in SPECS.values()} == set(MODEL_NAMES)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_output_shape(key: str) -> None:
    spec = SPECS[key]
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(_images(spec, n=5))
    assert out.shape == (5, spec.num_classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("key", sorted(SPECS))
def test_input_gradient_finite_and_nonzero(key: str) -> None:
    spec = SPECS[key]
    torch.manual_seed(0)
    model = build_model(spec).train()
    x = _images(spec).requires_grad_(True)
    y = torch.arange(x.shape[0]) % spec.num_classes
    loss = nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("key", sorted(SPECS))
def test_state_dict_round_trip(key: str) -> None:
    spec = SPECS[key]
    torch.manual_seed(1)
    model = build_model(spec)
    # A train-mode step moves batch-norm running statistics away from their
    # defaults, so the round trip has to carry buffers as well as parameters.
    model.train()
    model(_images(spec, n=8, seed=2))
    model.eval()

    spec2 = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert spec2 == spec
    torch.manual_seed(2)
    fresh = build_model(spec2).eval()
    x = _images(spec, seed=3)
    with torch.no_grad():
        assert not torch.equal(fresh(x), model(x))  # otherwise the check below is vacuous
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("key", ["small_cnn_digits", "preact_resnet18_cifar"])
def test_mean_std_in_state_dict(key: str) -> None:
    spec = SPECS[key]
    state = build_model(spec).state_dict()
    assert state["normalize.mean"].flatten().tolist() == pytest.approx(spec.mean)
    assert state["normalize.std"].flatten().tolist() == pytest.approx(spec.std)


def test_normalize_maps_mean_to_zero_and_scales_by_std() -> None:
    spec = SPECS["small_cnn_cifar"]
    model = build_model(spec)
    norm = model[0]
    assert isinstance(norm, Normalize)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = mean.expand(2, 3, 5, 5).clone()
    assert torch.allclose(norm(x), torch.zeros_like(x), atol=1e-7)
    assert torch.allclose(norm(x + std), torch.ones_like(x), atol=1e-6)


def test_normalize_buffers_follow_dtype_moves() -> None:
    norm = Normalize((0.1, 0.2), (0.3, 0.4)).to(torch.float64)
    assert norm.mean.dtype == torch.float64
    assert {name for name, _ in norm.named_buffers()} == {"mean", "std"}


def test_unknown_name_raises() -> None:
    spec = ModelSpec("resnet9000", 1, 8, 10, **GRAY)
    with pytest.raises(ValueError, match="resnet9000") as info:
        build_model(spec)
    for name in MODEL_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("depth", [27, 4])
def test_bad_wide_resnet_depth_raises(depth: int) -> None:
    spec = ModelSpec("wide_resnet", 3, 32, 10, width=1, depth=depth, **RGB)
    with pytest.raises(ValueError, match=rf"depth.*{depth}"):
        build_model(spec)


def test_depth_on_other_architecture_raises() -> None:
    with pytest.raises(ValueError, match="depth"):
        build_model(ModelSpec("small_cnn", 1, 8, 10, depth=20, **GRAY))


def test_from_dict_unknown_key_raises() -> None:
    d = SPECS["small_cnn_digits"].to_dict() | {"colour": "blue"}
    with pytest.raises(ValueError, match="colour"):
        ModelSpec.from_dict(d)


def test_from_dict_missing_key_raises() -> None:
    d = SPECS["small_cnn_digits"].to_dict()
    del d["num_classes"]
    with pytest.raises(ValueError, match="num_classes"):
        ModelSpec.from_dict(d)


def test_spec_channel_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        ModelSpec("small_cnn", 3, 8, 10, **GRAY)


def test_to_dict_is_json_with_lists() -> None:
    d = SPECS["wide_resnet_cifar"].to_dict()
    assert d["mean"] == list(RGB["mean"]) and isinstance(d["std"], list)
    assert json.loads(json.dumps(d)) == d
    assert d["depth"] == 10 and d["width"] == 1


def test_madry_cnn_standard_widths() -> None:
    spec = ModelSpec("madry_cnn", 1, 28, 10, width=16, **GRAY)
    net = build_model(spec)[1]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(7 * 7 * 64, 1024), (1024, 10)]


def test_madry_cnn_default_width_is_16() -> None:
    net = build_model(ModelSpec("madry_cnn", 1, 28, 10, **GRAY))[1]
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] == [32, 64]


def test_wide_resnet_depth_and_width() -> None:
    spec = ModelSpec("wide_resnet", 3, 32, 10, width=2, depth=16, **RGB)
    net = build_model(spec)[1]
    convs3 = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    # depth = 6n + 4 -> n = 2 blocks per group, 2 convs per block, plus the stem.
    assert len(convs3) == 3 * 2 * 2 + 1
    assert max(c.out_channels for c in convs3) == 64 * 2
    assert all(m.p == 0 for m in net.modules() if isinstance(m, nn.Dropout))


def test_preact_resnet18_structure() -> None:
    spec = ModelSpec("preact_resnet18", 3, 32, 10, width=8, **RGB)
    net = build_model(spec)[1]
    convs3 = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 1 + 4 * 2 * 2  # stem + 4 stages x 2 blocks x 2 convs
    assert sorted({c.out_channels for c in convs3}) == [8, 16, 32, 64]


def test_small_cnn_has_no_batch_norm() -> None:
    net = build_model(SPECS["small_cnn_digits"])[1]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@pytest.mark.parametrize("key", ["small_cnn_digits", "madry_cnn_mnist"])
def test_torch_export(key: str) -> None:
    spec = SPECS[key]
    model = build_model(spec).eval()
    example = _images(spec, n=2)
    exported = torch.export.export(model, (example,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(example), model(example), atol=1e-6)


def test_compact_cnn_at_its_default_width_is_the_plain_loops_network() -> None:
    """compact_cnn width 8 is benchmarks/plain_loop.py's network, layer for layer (the budget
    benchmark compares training on it, not architectures)."""
    from benchmarks.plain_loop import design_note_cnn

    ours = build_model(ModelSpec("compact_cnn", 1, 28, 10, **GRAY)).net
    shapes = [p.shape for p in ours.parameters()]
    assert shapes == [p.shape for p in design_note_cnn(1, 28, 10).parameters()]


def test_compact_cnn_starts_from_the_plain_loops_initial_weights() -> None:
    """compact_cnn keeps PyTorch's default initialisation (measured better than He init behind
    the input normalisation; issue 19): from one seed, its weights are the plain loop's."""
    from benchmarks.plain_loop import design_note_cnn

    torch.manual_seed(3)
    ours = build_model(ModelSpec("compact_cnn", 1, 28, 10, **GRAY)).net
    torch.manual_seed(3)
    theirs = design_note_cnn(1, 28, 10)
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(mine, reference)

"""Bound propagation is sound: no input inside the threat ball, however found (random points,
corners, PGD), has a margin below the bound; CROWN is never looser than IBP; the API keeps its
promises (batching, modes, gradients, messages). Exact verification on tiny networks is in
``test_bounds_exact.py``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import PGD
from iocane.certify import (
    MARGIN_METHODS,
    UnsupportedModel,
    certify_bounds,
    check_certifiable,
    crown,
    margin_lower_bounds,
)
from models import ModelSpec, build_model
from models.normalize import Normalize

TOLERANCE = 1e-4  # float32 rounding of the bound arithmetic


def sample_points(images: torch.Tensor, norm: str, eps: float, seed: int = 0) -> list[torch.Tensor]:
    """Random points of the ball, its corners (Linf) or its sphere (L2), clipped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    points = []
    for _ in range(8):
        noise = torch.rand(images.shape, generator=generator) * 2 - 1
        if norm == "Linf":
            deltas = [noise * eps, noise.sign() * eps]
        else:
            direction = noise / noise.flatten(1).norm(dim=1).view(-1, *[1] * (images.dim() - 1))
            radius = torch.rand(len(images), generator=generator).view(
                direction.shape[:1] + (1,) * (images.dim() - 1)
            )
            deltas = [direction * eps * radius, direction * eps]
        points += [(images + delta).clamp(0, 1) for delta in deltas]
    return points


def margins(model: nn.Module, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(points)
    return logits.gather(1, labels[:, None]) - logits


def assert_sound(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    eps: float,
    methods: tuple[str, ...] = MARGIN_METHODS,
) -> dict[str, torch.Tensor]:
    """Every sampled and attacked point keeps every margin above every method's bound."""
    with torch.no_grad():
        bounds = {
            m: margin_lower_bounds(model, images, labels, norm=norm, eps=eps, method=m)
            for m in methods
        }
    points = sample_points(images, norm, eps)
    if images.dim() == 4:
        points.append(PGD(eps=eps, norm=norm, steps=10, loss="margin")(model, images, labels))
    for point in points:
        actual = margins(model, point, labels)
        for method, bound in bounds.items():
            slack = (actual - bound).min().item()
            assert slack >= -TOLERANCE * (1 + bound.abs().max().item()), (method, slack)
    return bounds


class Residual(nn.Module):
    """A residual block with functional ReLU and a shape-driven view, as user models write it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 4 * 4, 4)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.conv2(torch.relu(self.conv1(x)))
        out = self.pool(nn.functional.relu(out))
        return self.head(out.view(out.size(0), -1))


def _with_statistics(model: nn.Module) -> nn.Module:
    """Batch norm with non-trivial running statistics (negative weights too), in eval mode."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            size = module.num_features
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(size, generator=generator))
    return model.eval()


def layer_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "linear": nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 4)),
        "conv_avgpool": nn.Sequential(
            Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.25)),
            nn.Conv2d(3, 6, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(6, 4),
        ),
        "batchnorm_maxpool": nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 8),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Identity(),
            nn.Linear(8, 4),
        ),
        "residual_functional": Residual(),
    }


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.3)])
@pytest.mark.parametrize("name", list(layer_models()))
def test_every_layer_type_is_bounded_soundly(name: str, norm: str, eps: float) -> None:
    model = _with_statistics(layer_models()[name])
    images = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(6) % 4
    bounds = assert_sound(model, images, labels, norm, eps)
    assert (bounds["crown"] >= bounds["ibp"] - 1e-5).all()
    # The bounds are informative (not -inf) and not trivially zero.
    assert torch.isfinite(bounds["crown"]).all() and (bounds["crown"] != 0).any()


ARCHITECTURES = {
    "small_cnn": dict(image_size=8, width=2),
    "madry_cnn": dict(image_size=8, width=1),
    "compact_cnn": dict(image_size=8, width=1),
    "ibp_cnn": dict(image_size=8, width=1),
    "preact_resnet18": dict(image_size=8, width=2),
    "wide_resnet": dict(image_size=8, width=1, depth=10),
}


def iocane_model(name: str, channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec(
        name=name,
        in_channels=channels,
        num_classes=10,
        mean=(0.4,) * channels,
        std=(0.3,) * channels,
        **ARCHITECTURES[name],
    )
    return _with_statistics(build_model(spec))


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_iocane_architectures_are_bounded_soundly(name: str, monkeypatch) -> None:
    # A small refinement limit keeps full CROWN fast here; the limit only decides tightness.
    monkeypatch.setattr(crown, "REFINE_MAX_ELEMENTS", 1 << 16)
    model = iocane_model(name)
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 3, 5, 9])
    for norm, eps in (("Linf", 0.01), ("L2", 0.05)):
        bounds = assert_sound(model, images, labels, norm, eps)
        assert (bounds["crown"] >= bounds["ibp"] - 1e-5).all()


def test_torchvision_resnet18_with_maxpool_batchnorm_and_residuals() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = _with_statistics(torchvision.models.resnet18(num_classes=3))
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 2])
    assert_sound(model, images, labels, "Linf", 0.001, methods=("ibp", "crown_ibp"))


def test_a_planted_bug_in_the_relu_relaxation_is_caught_by_sampling(monkeypatch) -> None:
    model = _with_statistics(layer_models()["linear"])
    images = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(6) % 4
    assert_sound(model, images, labels, "Linf", 0.2, methods=("crown_ibp",))

    def too_tight(box):  # claims an unstable ReLU is always off: an upper bound of 0
        lower_slope, upper_slope, upper_intercept = real(box)
        unstable = (box.lower < 0) & (box.upper > 0)
        return (
            lower_slope,
            upper_slope.masked_fill(unstable, 0.0),
            upper_intercept.masked_fill(unstable, 0.0),
        )

    real = crown.relu_relaxation
    monkeypatch.setattr(crown, "relu_relaxation", too_tight)
    with pytest.raises(AssertionError):
        assert_sound(model, images, labels, "Linf", 0.2, methods=("crown_ibp",))


def test_crown_is_tighter_and_certifies_more_than_ibp() -> None:
    model = iocane_model("small_cnn")
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        labels = model(images).argmax(1)
    result = certify_bounds(model, images, labels, norm="Linf", eps=0.002)
    assert set(result) == {"ibp", "crown", "best"}
    assert result["crown"].accuracy >= result["ibp"].accuracy
    assert result["crown"].accuracy > 0  # the check can see a certificate at all
    assert torch.equal(
        result["best"].certified, result["ibp"].certified | result["crown"].certified
    )
    # A certified point is one no attack can break: PGD inside the ball keeps its prediction.
    certified = result["best"].certified
    attacked = PGD(eps=0.002, steps=20, loss="margin")(model, images[certified], labels[certified])
    with torch.no_grad():
        assert (model(attacked).argmax(1) == labels[certified]).all()
    zero = certify_bounds(model, images, labels, norm="L2", eps=0.0, methods=("ibp",))
    assert zero["ibp"].accuracy == 1.0  # eps 0: exactly the correctly classified points


@pytest.mark.parametrize("method", MARGIN_METHODS)
def test_same_answer_for_batch_sizes_one_and_many(method: str) -> None:
    model = iocane_model("compact_cnn")
    images = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        labels = model(images).argmax(1)
        together = margin_lower_bounds(model, images, labels, norm="Linf", eps=0.01, method=method)
        alone = torch.cat(
            [
                margin_lower_bounds(
                    model,
                    images[i : i + 1],
                    labels[i : i + 1],
                    norm="Linf",
                    eps=0.01,
                    method=method,
                )
                for i in range(12)
            ]
        )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    one = certify_bounds(
        model, images, labels, norm="Linf", eps=0.01, methods=(method,), batch_size=1
    )
    many = certify_bounds(
        model, images, labels, norm="Linf", eps=0.01, methods=(method,), batch_size=256
    )
    assert torch.equal(one[method].certified, many[method].certified)


@pytest.mark.parametrize("method", MARGIN_METHODS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_gradients_flow_to_every_parameter(method: str, norm: str) -> None:
    model = nn.Sequential(
        Normalize((0.5,), (0.5,)),
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )
    images = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([0, 1, 2, 0, 1])
    bounds = margin_lower_bounds(model, images, labels, norm=norm, eps=0.05, method=method)
    (-bounds).logsumexp(dim=1).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_unsupported_layers_are_named() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    check_certifiable(model)
    model[2] = nn.GELU()  # replaced after a trace: the new layer is what gets checked
    with pytest.raises(
        UnsupportedModel, match=r"cannot bound layer '2' \(GELU\): supported: Linear"
    ):
        check_certifiable(model)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.inner(x)

    with pytest.raises(UnsupportedModel, match=r"'inner\.1' \(Softmax\)"):
        margin_lower_bounds(
            Attention(), torch.rand(2, 4), torch.tensor([0, 1]), norm="Linf", eps=0.1, method="ibp"
        )

    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.fc(x))

    with pytest.raises(UnsupportedModel, match=r"\(sigmoid\)"):
        check_certifiable(Gate())


def test_batchnorm_in_train_mode_is_refused_and_modes_are_kept() -> None:
    model = iocane_model("preact_resnet18").train()
    images, labels = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    check_certifiable(model)  # structure alone is fine
    with pytest.raises(UnsupportedModel, match=r"BatchNorm2d\) in train mode"):
        margin_lower_bounds(model, images, labels, norm="Linf", eps=0.01, method="ibp")
    assert model.training
    result = certify_bounds(model, images, labels, norm="Linf", eps=0.01, methods=("ibp",))
    assert model.training and result["ibp"].certified.shape == (2,)
    plain = iocane_model("small_cnn").train()
    margin_lower_bounds(plain, images, labels, norm="L2", eps=0.01, method="crown")
    assert plain.training
    plain.eval()
    margin_lower_bounds(plain, images, labels, norm="L2", eps=0.01, method="crown")
    assert not plain.training


def test_bad_arguments_name_what_is_wrong() -> None:
    model = iocane_model("small_cnn")
    images, labels = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="unknown norm 'L1'"):
        margin_lower_bounds(model, images, labels, norm="L1", eps=0.1, method="ibp")
    with pytest.raises(ValueError, match="unknown bound method 'deeppoly'"):
        certify_bounds(model, images, labels, norm="Linf", eps=0.1, methods=("deeppoly",))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        margin_lower_bounds(model, images, labels, norm="Linf", eps=-1.0, method="ibp")

"""Adaptive attacks (Athalye et al. 2018, "Obfuscated Gradients Give a False Sense of Security";
Tramer et al. 2020, "On Adaptive Attacks to Adversarial Example Defenses"): PGD with the gradient
a defence hides from it put back.

- ``EOTPGD``, expectation over transformation: for a model whose forward pass is randomised
  (random resizing, noise, dropout at test time), each step follows the gradient averaged over
  ``samples`` forward passes, the gradient of the expected loss, instead of one random draw's.
- ``BPDA``, backward-pass differentiable approximation: for a model with a preprocessing step
  whose gradient is zero or missing (rounding, quantisation, thresholding, a step outside
  autograd), the backward pass treats that step as the identity (a straight-through estimator)
  while the forward pass still runs it.

BPDA finds the steps to bypass itself, on a probe batch: every submodule that maps a tensor to
one of the same shape and passes back no gradient at all (zero or none), and the model's own code
before its first submodule when no gradient gets through it (a rounding written inline in
``forward``). A module holding such a step is bypassed only where none of its own submodules is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from attacks.pgd import PGD, per_sample_loss

PROBE_IMAGES = 8  # images of the batch used to find the steps BPDA bypasses


@dataclass(frozen=True)
class EOTPGD(PGD):
    """PGD on the expected loss of a randomised model: ``samples`` passes per step."""

    samples: int = 16
    name: str = "eot_pgd"

    def input_gradient(
        self, model: nn.Module, images: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        total = torch.zeros_like(delta)
        with torch.enable_grad():
            for _ in range(self.samples):  # one pass at a time: a model may draw per batch
                point = delta.detach().requires_grad_(True)
                loss = per_sample_loss(model(images + point), labels, self.loss)
                (grad,) = torch.autograd.grad(loss.sum(), point)
                total += grad
        return total / self.samples


@dataclass
class Shattering:
    """Where a model's input gradient breaks: ``modules`` that map a tensor to one of the same
    shape and pass back no gradient (innermost first), and ``entry``, the first submodule
    called, when the model's own code between the image and it passes back none (a rounding
    written inline in ``forward``)."""

    modules: list[nn.Module]
    entry: nn.Module | None


def _no_gradient(output: torch.Tensor, inputs: torch.Tensor) -> bool:
    if not output.requires_grad:
        return True  # computed outside autograd
    probe = torch.randn_like(output)
    (grad,) = torch.autograd.grad(
        (output * probe).sum(), inputs, retain_graph=True, allow_unused=True
    )
    return grad is None or not grad.any()


def find_shattering(model: nn.Module, images: torch.Tensor) -> Shattering:
    """Probe one forward pass of ``model`` on ``images`` for the steps BPDA bypasses."""
    records: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    first_call: list[tuple[nn.Module, torch.Tensor]] = []

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            if (
                isinstance(output, torch.Tensor)
                and args[0].is_floating_point()
                and args[0].requires_grad
                and output.shape == args[0].shape
            ):
                records.append((name, module, args[0], output))

        return hook

    def note_first(module: nn.Module, args: tuple) -> None:
        if not first_call and args and isinstance(args[0], torch.Tensor):
            first_call.append((module, args[0]))

    named = [(name, module) for name, module in model.named_modules() if name]
    handles = [module.register_forward_hook(record(name)) for name, module in named]
    handles += [module.register_forward_pre_hook(note_first) for _, module in named]
    inputs = images.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    found = [(name, module) for name, module, x, y in records if _no_gradient(y, x)]
    names = [name for name, _ in found]
    # A container of a shattering step is shattering too; bypass the step, not the container.
    modules = [
        module for name, module in found if not any(other.startswith(name + ".") for other in names)
    ]
    entry = None
    if first_call:
        module, entry_input = first_call[0]
        if entry_input.shape == inputs.shape and _no_gradient(entry_input, inputs):
            entry = module
    return Shattering(modules, entry)


@contextmanager
def straight_through(model: nn.Module, shattering: Shattering) -> Iterator[None]:
    """Within the block the forward pass is unchanged and the backward pass treats each
    shattering step as the identity: ``output = input + (step(input) - input).detach()``."""

    def bypass(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return args[0] + (output - args[0]).detach()

    handles = [module.register_forward_hook(bypass) for module in shattering.modules]
    if shattering.entry is not None:
        image: list[torch.Tensor] = []

        def keep_image(module: nn.Module, args: tuple) -> None:
            image[:] = [args[0]]

        def bypass_entry(module: nn.Module, args: tuple) -> tuple | None:
            if not image or args[0].shape != image[0].shape:
                return None
            x = image.pop()  # the first call after the image came in
            return (x + (args[0] - x).detach(), *args[1:])

        handles.append(model.register_forward_pre_hook(keep_image))
        handles.append(shattering.entry.register_forward_pre_hook(bypass_entry))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class BPDA(PGD):
    """PGD through the model with its gradient-shattering steps bypassed in the backward pass."""

    name: str = "bpda_pgd"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        shattering = find_shattering(model, images[:PROBE_IMAGES])
        with straight_through(model, shattering):
            return super().__call__(model, images, labels)

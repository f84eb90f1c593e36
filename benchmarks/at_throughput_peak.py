"""The work of one PGD adversarial-training step in floating-point operations, and this machine's
measured peak for the same kind of work, for ``benchmarks/at_throughput.py``.

- The work: ``torch.utils.flop_counter.FlopCounterMode`` around one step of the plain loop, the
  reference algorithm: ``steps`` attack passes (forward, and the backward pass to the input
  only) and the weight update's forward and backward pass. The counter counts the matrix
  products and convolutions (the elementwise operations are not counted, and are a small part).
  Every trainer does at least this work per image, so images/s times it is the useful rate each
  reaches. iocane's step is counted too (``flops_per_image_iocane_step``): it adds a clean
  forward pass that is reported, not trained on.
- The peaks: a large float32 matrix product, and the model's own convolutions (each layer's
  shape at the training batch, forward and both backward products, in the faster of the two
  memory formats), on the same threads under the same subnormal mode. Each is the best of
  several timings: load from elsewhere only ever slows a timing down.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from iocane.base.config import Config
from iocane.data.prepared import PreparedData
from iocane.training.hardware import resolve_hardware
from iocane.training.recipes import Recipe, TrainingPasses, train_step


def counted_flops(work: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        work()
    return counter.get_total_flops()


def best_seconds(work: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        work()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def plain_step_flops(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, train) -> int:
    """One step of the reference loop: the attack's passes and the weight update's."""
    from at_throughput_worker import plain_pgd

    def step() -> None:
        adversarial = plain_pgd(model, images, labels, train.eps, train.step_size, train.steps)
        F.cross_entropy(model(adversarial), labels).backward()
        model.zero_grad()

    return counted_flops(step)


def iocane_step_flops(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: Config
) -> int:
    """One step of iocane's training step as ``fit`` runs it (the optimiser's update itself
    does no counted work)."""
    hardware = resolve_hardware(torch.device("cpu"), config.runtime)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    recipe = Recipe.from_config(config.train)
    return counted_flops(
        lambda: train_step(
            model,
            optimizer,
            hardware.batch(images),
            labels,
            recipe=recipe,
            eps=recipe.eps,
            seed=0,
            batch=0,
            free_delta=torch.zeros(0),
            autocast=hardware.autocast,
            passes=TrainingPasses(model),
        )
    )


def conv_shapes(model: nn.Module, images: torch.Tensor) -> list[tuple[nn.Conv2d, tuple]]:
    """Each convolution of the model with the shape of its input at this batch."""
    found: list[tuple[nn.Conv2d, tuple]] = []
    hooks = [
        module.register_forward_hook(lambda m, args, out: found.append((m, tuple(args[0].shape))))
        for module in model.modules()
        if isinstance(module, nn.Conv2d)
    ]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return found


def conv_peak(model: nn.Module, images: torch.Tensor, repeats: int) -> dict:
    """The model's convolutions alone, forward and backward (input and weight gradients):
    FLOPs over the summed best times, in the faster memory format."""
    by_format = {}
    for label, memory_format in (
        ("channels_last", torch.channels_last),
        ("contiguous", torch.contiguous_format),
    ):
        flops, seconds = 0, 0.0
        for conv, shape in conv_shapes(model, images):
            x = torch.rand(shape).contiguous(memory_format=memory_format).requires_grad_(True)
            weight = conv.weight.detach().clone().contiguous(memory_format=memory_format)
            weight.requires_grad_(True)

            def work(x=x, weight=weight, conv=conv) -> None:
                out = F.conv2d(x, weight, None, conv.stride, conv.padding)
                out.backward(torch.ones_like(out))

            flops += counted_flops(work)
            seconds += best_seconds(work, repeats)
        by_format[label] = flops / seconds / 1e9
    best = max(by_format, key=by_format.get)
    return {"gflops": by_format[best], "memory_format": best, "gflops_by_format": by_format}


def matmul_peak(size: int, repeats: int) -> float:
    a, b = torch.rand(size, size), torch.rand(size, size)
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def flops_and_peaks(model: nn.Module, data: PreparedData, config: Config, quick: bool) -> dict:
    batch = config.train.batch_size
    images, labels = data.train.batch(slice(0, batch)), data.train.labels[:batch]
    repeats = 3 if quick else 10
    plain = plain_step_flops(model, images, labels, config.train)
    iocane = iocane_step_flops(model, images, labels, config)
    matmul_size = 1024 if quick else 2048
    return {
        "flops_per_image": plain / batch,
        "flops_per_image_iocane_step": iocane / batch,
        "matmul_size": matmul_size,
        "matmul_peak_gflops": matmul_peak(matmul_size, repeats),
        "conv_peak": conv_peak(model, images, repeats),
        "torch_threads": torch.get_num_threads(),
    }

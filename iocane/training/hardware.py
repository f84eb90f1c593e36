"""How training uses the hardware it runs on (params.yaml ``runtime``), chosen at run time.

- Precision: ``auto`` is bf16 autocast on a CUDA device that supports it and float32 elsewhere;
  ``bf16`` asks for it on any device (CPU autocast included), ``fp32`` never uses it. bf16 keeps
  float32's range, so no loss scaling is needed; batch norm and the losses run in float32 under
  autocast. Only training uses it: evaluation, and the per-epoch validation attack that selects
  the checkpoint, always run in float32 so that no reported figure depends on rounding.
- Memory format: the model and each batch are channels-last, which the convolution kernels of
  recent GPUs (cuDNN) and of x86 CPUs (oneDNN) prefer: measured on this project's CPU, one
  attack step (forward and input gradient, batch 128) is 1.27x faster for small_cnn on 28x28,
  1.03x for madry_cnn and 1.29x for preact_resnet18 than in the default layout. The evaluation
  suite puts the model in channels-last too (``iocane.robustness.suite``).
- ``compile``: the training forward passes go through ``torch.compile``. Compiling costs a
  minute or more up front, so it pays off on long runs on a GPU. The weights are shared with
  the eager module, which is what checkpoints and the validation pass use.
- Subnormal floats: the CPU flushes them to zero while training (``fit``) and evaluation
  (``evaluate_robustness``, ``evaluate_models``) run, and not after (``subnormals_flushed``).
  A confident network's saturated softmax makes some gradients subnormal, and x86 CPUs take a
  slow path for every operation on one: measured on the Fashion-MNIST default, epochs 5 and 6
  took 2x the first four, and 1.0x with flushing, with the same validation figures to the last
  digit (docs/training/recipes.md). GPUs take no slow path on them. The mode belongs to a
  thread, and torch's intra-op worker threads keep the mode they were started with: measured
  here, a parallel op flushes only the calling thread's share when they were started before.
  With one thread everything flushes; with more, the calling thread's share and every op too
  small to split (most of a small model's) do. A process that is iocane's own (the ``iocane``
  command's ``run``, ``sweep`` and ``evaluate``, the torch stages of ``python -m
  iocane.stages``, a DDP rank) therefore sets the mode first thing, before torch or Prefect
  start a thread (``flush_subnormals_in_this_process``): every thread started after inherits it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from iocane.base.config import RuntimeConfig


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def place_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` (in place) to the device and memory format."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def training_model(self, model: nn.Module) -> nn.Module:
        """What the training steps call: ``model`` itself, or its compiled form."""
        return torch.compile(model) if self.compile else model

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def describe(self) -> dict[str, object]:
        """What changes a trained model's numbers; part of a checkpoint's run key."""
        return {"bf16": self.bf16, "compile": self.compile}


def _flushing_subnormals() -> bool:
    """Whether the CPU flushes subnormal floats now: 1e-40 is one in float32 (below 1.2e-38)."""
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """The CPU treats subnormal floats as zero inside, and as it found them after; a context
    manager or a decorator. Scoped, not set once: the mode belongs to the thread, Python's own
    float arithmetic included, so a notebook (or a test run) that calls iocane keeps its IEEE
    floats afterwards. Never at import. A float32 value below 1.2e-38 weighs nothing in a
    loss or a gradient step, so the figures do not move; on a CPU without the mode (not x86
    with SSE3) this does nothing."""
    was_flushing = _flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)


def flush_subnormals_in_this_process() -> None:
    """Flush subnormal floats in this thread and every thread started after it, for good. Only
    for a process that is iocane's own, called before anything starts a thread: a new thread
    (torch's intra-op workers, Prefect's task threads) inherits the mode of the thread that
    starts it, and keeps it. Not for a caller's process: ``subnormals_flushed`` is."""
    torch.set_flush_denormal(True)


def resolve_hardware(device: torch.device, runtime: RuntimeConfig) -> Hardware:
    on_cuda = device.type == "cuda"
    if runtime.precision == "auto":
        bf16 = on_cuda and torch.cuda.is_bf16_supported()
    else:
        bf16 = runtime.precision == "bf16"
    return Hardware(device=device, bf16=bf16, channels_last=True, compile=runtime.compile)

"""Interval bound propagation (Gowal et al. 2018, "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models", arXiv:1810.12715).

Every node of the traced graph gets an elementwise interval ``[lower, upper]`` holding its value
for every input in the threat set ``{x : ||x - x0|| <= eps} ∩ [0, 1]^d``. Affine layers map the
interval's centre and radius (``W c + b``, ``|W| r``); monotone layers (ReLU, pooling) map the
two ends. The final linear layer is folded into the margin specification (Gowal et al.'s
"elision"): ``(W_y - W_j) h`` is bounded directly, which is tighter than subtracting two logit
intervals.

For an L2 ball the input is kept symbolic up to the first affine layer that mixes coordinates:
there neuron ``i`` is bounded by the dual norm, ``w_i x0 ± eps ||w_i||_2`` (scaled by any
per-channel affine layers before it, such as Normalize), intersected with the interval bound of
the ``[0, 1]`` box. All of it is plain torch: differentiable in the parameters, on the inputs'
device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from iocane.certify import graph as g


@dataclass
class Interval:
    lower: torch.Tensor
    upper: torch.Tensor


@dataclass
class L2Input:
    """The L2 ball before the first coordinate-mixing layer: ``center + scale * delta`` with
    ``||delta||_2 <= eps``, plus the box interval that also holds (the [0, 1] clip)."""

    center: torch.Tensor
    scale: torch.Tensor  # |per-element multiplier| so far, broadcastable to center
    eps: float
    box: Interval


Value = Any  # Interval | L2Input | a Python value of a meta node
# Called on a node that feeds a ReLU with its interval and the intervals so far; returns a
# tighter interval (full CROWN tightens the pre-activation bounds this way).
Refine = Callable[[str, Interval, dict[str, Any]], Interval]


def input_set(images: torch.Tensor, norm: str, eps: float) -> Interval | L2Input:
    """The threat set around ``images``: a box for Linf, symbolic for L2."""
    box = Interval((images - eps).clamp(0, 1), (images + eps).clamp(0, 1))
    if norm == "Linf":
        return box
    return L2Input(images, torch.ones_like(images[:1]), eps, box)


def interval_of(value: Interval | L2Input) -> Interval:
    return value.box if isinstance(value, L2Input) else value


def channel_scale_shift(
    module: nn.Module, qualname: str, ndim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = scale * x + shift`` per channel for Normalize and eval-mode batch norm, shaped to
    broadcast over a (N, C, ...) tensor of ``ndim`` dimensions."""
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        if module.training:
            raise g.UnsupportedModel(
                f"cannot bound layer {qualname!r} ({type(module).__name__}) in train mode: it "
                f"normalises by the batch; call model.eval() first"
            )
        assert module.running_var is not None and module.running_mean is not None
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -module.running_mean * scale
        if module.bias is not None:
            shift = shift + module.bias
    else:
        scale = 1.0 / module.std.flatten()
        shift = -module.mean.flatten() * scale
    shape = (1, -1) + (1,) * (ndim - 2)
    return scale.view(shape), shift.view(shape)


def affine_interval(op: g.Op, box: Interval) -> Interval:
    """Centre and radius through Linear / Conv2d: exact per neuron for a box input."""
    module = op.module
    center = (box.upper + box.lower) / 2
    radius = (box.upper - box.lower) / 2
    if op.kind == g.LINEAR:
        assert isinstance(module, nn.Linear)
        return _from_center(
            F.linear(center, module.weight, module.bias), F.linear(radius, module.weight.abs())
        )
    assert isinstance(module, nn.Conv2d)
    return _from_center(
        module._conv_forward(center, module.weight, module.bias),
        module._conv_forward(radius, module.weight.abs(), None),
    )


def _from_center(center: torch.Tensor, radius: torch.Tensor) -> Interval:
    return Interval(center - radius, center + radius)


def affine_l2(op: g.Op, value: L2Input) -> Interval:
    """Dual-norm bound of a coordinate-mixing affine layer on the L2 ball, met with the box."""
    module = op.module
    squared_scale = (value.scale**2).expand_as(value.center[:1])
    if op.kind == g.LINEAR:
        assert isinstance(module, nn.Linear)
        center = F.linear(value.center, module.weight, module.bias)
        row_norm_sq = F.linear(squared_scale, module.weight**2)
    else:
        assert isinstance(module, nn.Conv2d)
        center = module._conv_forward(value.center, module.weight, module.bias)
        row_norm_sq = module._conv_forward(squared_scale, module.weight**2, None)
    # The clamp keeps sqrt's gradient finite where a row is all zero.
    radius = value.eps * row_norm_sq.clamp_min(1e-30).sqrt()
    ball = _from_center(center, radius)
    box = affine_interval(op, value.box)
    return Interval(torch.maximum(ball.lower, box.lower), torch.minimum(ball.upper, box.upper))


def _channel_affine(op: g.Op, value: Interval | L2Input) -> Interval | L2Input:
    assert op.module is not None
    box = interval_of(value)
    scale, shift = channel_scale_shift(op.module, op.qualname, box.lower.dim())
    center = (box.upper + box.lower) / 2 * scale + shift
    radius = (box.upper - box.lower) / 2 * scale.abs()
    new_box = _from_center(center, radius)
    if isinstance(value, L2Input):
        return L2Input(value.center * scale + shift, value.scale * scale.abs(), value.eps, new_box)
    return new_box


def _reshape(op: g.Op, value: Interval | L2Input, env: dict[str, Value]) -> Interval | L2Input:
    def apply(tensor: torch.Tensor) -> torch.Tensor:
        return _call(op, tensor, env)

    box = interval_of(value)
    new_box = Interval(apply(box.lower), apply(box.upper))
    if new_box.lower.shape[0] != box.lower.shape[0]:
        raise g.UnsupportedModel(
            f"cannot bound layer {op.qualname!r}: the reshape mixes samples of the batch"
        )
    if isinstance(value, L2Input):
        scale = value.scale.expand_as(value.center[:1])
        return L2Input(apply(value.center), apply(scale), value.eps, new_box)
    return new_box


def _call(op: g.Op, first: torch.Tensor, env: dict[str, Value]) -> Any:
    """Run the node's own function with its bounded input replaced by ``first`` and its meta
    inputs by their values (``x.view(x.size(0), -1)``)."""
    node = op.node

    def substitute(arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            value = env[arg.name]
            return first if isinstance(value, Interval | L2Input) else value
        return arg

    args = fx.node.map_aggregate(node.args, substitute)
    kwargs = fx.node.map_aggregate(node.kwargs, substitute)
    if node.op == "call_module":
        assert op.module is not None
        return op.module(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    return node.target(*args, **kwargs)  # type: ignore[operator]


def _monotone(op: g.Op, box: Interval, env: dict[str, Value]) -> Interval:
    """ReLU and pooling are monotone (pooling: non-negative weights): map both ends."""
    return Interval(_call(op, box.lower, env), _call(op, box.upper, env))


def _step(op: g.Op, env: dict[str, Value]) -> Value:
    if op.kind == g.META:
        return _meta(op, env)
    value = env[op.inputs[0]]
    if op.kind in (g.LINEAR, g.CONV):
        if isinstance(value, L2Input):
            return affine_l2(op, value)
        return affine_interval(op, value)
    if op.kind == g.CHANNEL_AFFINE:
        return _channel_affine(op, value)
    if op.kind == g.RESHAPE:
        return _reshape(op, value, env)
    if op.kind == g.IDENTITY:
        return value
    if op.kind == g.ADD:
        left, right = interval_of(value), interval_of(env[op.inputs[1]])
        return Interval(left.lower + right.lower, left.upper + right.upper)
    box = interval_of(value)
    if op.kind == g.RELU:
        # Not the layer's own call: an in-place ReLU would overwrite the pre-activation
        # interval that CROWN's relaxation reads later.
        return Interval(torch.relu(box.lower), torch.relu(box.upper))
    return _monotone(op, box, env)  # MAX_POOL, AVG_POOL


def _meta(op: g.Op, env: dict[str, Value]) -> Any:
    def substitute(arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            value = env[arg.name]
            return interval_of(value).lower if isinstance(value, Interval | L2Input) else value
        return arg

    node = op.node
    args = fx.node.map_aggregate(node.args, substitute)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:])
    return node.target(*args)  # type: ignore[operator]


def propagate(
    graph: g.BoundGraph,
    images: torch.Tensor,
    norm: str,
    eps: float,
    refine: Refine | None = None,
) -> dict[str, Value]:
    """Interval of every node; ``refine`` may tighten the inputs of ReLUs as they are met."""
    env: dict[str, Value] = {graph.input_name: input_set(images, norm, eps)}
    relu_inputs = {op.inputs[0] for op in graph.ops if op.kind == g.RELU}
    for op in graph.ops[1:]:
        env[op.node.name] = _step(op, env)
        if refine is not None and op.node.name in relu_inputs:
            env[op.node.name] = refine(op.node.name, interval_of(env[op.node.name]), env)
    return env


def num_classes(graph: g.BoundGraph, env: dict[str, Value]) -> int:
    logits = interval_of(env[graph.output_name]).lower
    if logits.dim() != 2:
        raise g.UnsupportedModel(
            f"cannot bound a model whose output has shape {tuple(logits.shape)}"
        )
    return int(logits.shape[1])


def margin_from_logits(
    graph: g.BoundGraph, env: dict[str, Value], labels: torch.Tensor
) -> torch.Tensor:
    """Lower bounds of ``logit[y] - logit[j]`` (N, K), the last Linear folded into the margin."""
    last = graph.op(graph.output_name)
    spec = margin_spec(
        labels, num_classes(graph, env), dtype=interval_of(env[last.node.name]).lower.dtype
    )
    if last.kind == g.LINEAR and interval_of(env[last.inputs[0]]).lower.dim() == 2:
        module = last.module
        assert isinstance(module, nn.Linear)
        weight = spec @ module.weight  # (N, K, in)
        bias = spec @ module.bias if module.bias is not None else 0.0
        value = env[last.inputs[0]]
        box = interval_of(value)
        center = (box.upper + box.lower) / 2
        radius = (box.upper - box.lower) / 2
        bound = _batched_matvec(weight, center) - _batched_matvec(weight.abs(), radius)
        if isinstance(value, L2Input):  # a network that is one linear layer
            scaled = weight * value.scale.reshape(1, 1, -1)
            ball = _batched_matvec(weight, value.center) - value.eps * scaled.norm(dim=2)
            bound = torch.maximum(bound, ball)
        return bound + bias
    logits = interval_of(env[graph.output_name])
    true_lower = logits.lower.gather(1, labels[:, None])
    bound = true_lower - logits.upper
    return bound.scatter(1, labels[:, None], 0.0)


def _batched_matvec(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """(N, K, D) @ (N, D) -> (N, K)."""
    return (matrix @ vector[:, :, None]).squeeze(2)


def margin_spec(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, K, K): row j is ``e_y - e_j`` (the zero row at j == y)."""
    eye = torch.eye(num_classes, dtype=dtype, device=labels.device)
    return eye[labels][:, None, :] - eye[None, :, :]

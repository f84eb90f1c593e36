"""CROWN: backward linear bounds (Zhang et al. 2018, "Efficient Neural Network Robustness
Certification with General Activation Functions", arXiv:1811.00866).

A bound of ``spec · f(x)`` is carried backwards through the graph as ``Λ · z + bias`` for the
node ``z`` reached so far: affine layers are transposed exactly (convolutions by
``conv_transpose2d``, never a dense matrix, so it is batched over samples and specification
rows); each ReLU is replaced by linear lower and upper bounds built from its input's interval
(upper: the chord ``u (x - l) / (u - l)``; lower: slope 1 if ``u >= -l`` else 0, CROWN's
adaptive choice), picked per coefficient sign; max pooling by ``x_{i*} <= max <= max(u)`` with
``i*`` the largest lower bound (exact when ``x_{i*}`` dominates its window). At the input the
linear bound is minimised over the threat set: the box for Linf, the dual norm
``Λ x0 - eps ||Λ||_2`` met with the box for L2.

``crown_ibp`` takes every intermediate interval from IBP (Zhang et al. 2020, "Towards Stable
and Efficient Training of Verifiably Robust Neural Networks", arXiv:1906.06316) and runs one
backward pass from the margin. ``crown`` first tightens the input interval of each ReLU that
sits behind a nonlinearity by a backward pass from it (for the neurons IBP leaves unstable, the
only ones whose relaxation the bounds change; where affordable, see ``REFINE_MAX_ELEMENTS``),
then takes the per-sample better of the CROWN margin bound and interval propagation through
the tightened intervals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iocane.certify import graph as g
from iocane.certify import ibp

# Largest specification tensor (elements) one backward pass may hold while tightening the
# intermediate bounds; the unstable neurons are processed in chunks below it.
LAMBDA_ELEMENTS = 1 << 24
# Full CROWN tightens a ReLU's input only when its backward pass is affordable: the layer's
# neurons times the largest per-sample tensor before it (the size of the specification the
# pass carries per point) at most this many elements. One pass per neuron of a convolutional
# map costs minutes per few hundred points on a CPU; such layers keep their interval bounds.
# In iocane's CNNs on digits and in ibp_cnn the dense hidden layer qualifies; on 28x28 inputs
# compact_cnn's and madry_cnn's do not. A structural limit (not per batch), so a point's
# certificate does not depend on its batch.
REFINE_MAX_ELEMENTS = 1 << 20


def margin_lower_bounds(
    graph: g.BoundGraph,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    eps: float,
    method: str,
) -> torch.Tensor:
    """(N, K) lower bounds of the margins by ``crown_ibp`` or ``crown``."""
    refine = _Tightener(graph, images, norm, eps) if method == "crown" else None
    env = ibp.propagate(graph, images, norm, eps, refine=refine)
    spec = ibp.margin_spec(labels, ibp.num_classes(graph, env), images.dtype)
    bound = backward(graph, env, graph.output_name, spec, images, norm, eps)
    if method == "crown":
        bound = torch.maximum(bound, ibp.margin_from_logits(graph, env, labels))
    return bound


def backward(
    graph: g.BoundGraph,
    env: dict[str, ibp.Value],
    start: str,
    spec: torch.Tensor,
    images: torch.Tensor,
    norm: str,
    eps: float,
) -> torch.Tensor:
    """(N, S) lower bounds of ``spec · value(start)``; spec is (N, S, *shape of start)."""
    lambdas: dict[str, torch.Tensor] = {start: spec}
    bias = spec.new_zeros(spec.shape[:2])
    for op in reversed(graph.ops):
        lam = lambdas.pop(op.node.name, None)
        if lam is None:
            continue
        if op.kind == g.INPUT:
            return bias + _concretize(lam, images, norm, eps)
        passed, extra = _transpose(op, lam, env)
        if extra is not None:
            bias = bias + extra
        for name, contribution in zip(op.inputs, passed, strict=True):
            lambdas[name] = lambdas[name] + contribution if name in lambdas else contribution
    raise g.UnsupportedModel("the bound never reached the model's input")  # unreachable


def _flat_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum all but the (N, S) dimensions."""
    return tensor.reshape(*tensor.shape[:2], -1).sum(dim=2)


def _shape(env: dict[str, ibp.Value], name: str) -> torch.Size:
    return ibp.interval_of(env[name]).lower.shape[1:]


def _transpose(
    op: g.Op, lam: torch.Tensor, env: dict[str, ibp.Value]
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Λ for each bounded input of ``op`` and the bias the step adds."""
    kind, module = op.kind, op.module
    if kind in (g.IDENTITY, g.OUTPUT):
        return [lam], None
    if kind == g.ADD:
        return [lam, lam], None
    if kind == g.RESHAPE:
        return [lam.reshape(*lam.shape[:2], *_shape(env, op.inputs[0]))], None
    if kind == g.LINEAR:
        assert isinstance(module, nn.Linear)
        extra = _flat_sum(lam @ module.bias) if module.bias is not None else None
        return [lam @ module.weight], extra
    if kind == g.CONV:
        assert isinstance(module, nn.Conv2d)
        return [_conv_transpose(module, lam, _shape(env, op.inputs[0]))], _conv_bias(module, lam)
    if kind == g.CHANNEL_AFFINE:
        assert module is not None
        scale, shift = ibp.channel_scale_shift(module, op.qualname, lam.dim() - 1)
        return [lam * scale[None]], _flat_sum(lam * shift[None])
    if kind == g.AVG_POOL:
        in_shape = _shape(env, op.inputs[0])
        if lam.shape[2:] == in_shape:  # an adaptive pool to the size it is given: the identity
            return [lam], None
        return [_linear_vjp(op, lam, in_shape)], None
    box = ibp.interval_of(env[op.inputs[0]])
    if kind == g.RELU:
        return _relu_transpose(lam, box)
    return _max_pool_transpose(op, lam, box)


def _conv_transpose(module: nn.Conv2d, lam: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    n, s = lam.shape[:2]
    rows = lam.reshape(n * s, *lam.shape[2:])
    stride, padding, dilation = module.stride, module.padding, module.dilation
    if isinstance(padding, str):  # "same" / "valid": the generic transpose handles it
        return _vjp(lambda z: module._conv_forward(z, module.weight, None), lam, in_shape)
    kernel = module.weight.shape[2:]
    # output_padding recovers the input size that strided convolution rounded away.
    output_padding = [
        in_shape[1 + i]
        - ((rows.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
        for i in range(2)
    ]
    out = F.conv_transpose2d(
        rows,
        module.weight,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=module.groups,
        dilation=dilation,
    )
    return out.reshape(n, s, *in_shape)


def _conv_bias(module: nn.Conv2d, lam: torch.Tensor) -> torch.Tensor | None:
    if module.bias is None:
        return None
    return (lam.sum(dim=(3, 4)) * module.bias).sum(dim=2)


def _linear_vjp(op: g.Op, lam: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    """Transpose of a parameter-free linear layer (average pooling), by autograd."""
    assert op.module is not None
    return _vjp(op.module, lam, in_shape)


def _vjp(function: object, lam: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    n, s = lam.shape[:2]
    rows = lam.reshape(n * s, *lam.shape[2:])
    with torch.enable_grad():
        probe = rows.new_zeros((n * s, *in_shape), requires_grad=True)
        output = function(probe)  # type: ignore[operator]
        (transposed,) = torch.autograd.grad(
            output, probe, grad_outputs=rows, create_graph=rows.requires_grad
        )
    return transposed.reshape(n, s, *in_shape)


def relu_relaxation(
    box: ibp.Interval,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower slope, upper slope, upper intercept) of CROWN's ReLU bounds; lower intercept 0."""
    lower, upper = box.lower, box.upper
    active = lower >= 0
    unstable = (upper > 0) & ~active
    chord = upper / (upper - lower).clamp_min(1e-12)
    zero = torch.zeros_like(lower)
    upper_slope = torch.where(active, torch.ones_like(lower), torch.where(unstable, chord, zero))
    upper_intercept = torch.where(unstable, -lower * chord, zero)
    adaptive = (upper > -lower).to(lower.dtype)
    lower_slope = torch.where(active, torch.ones_like(lower), torch.where(unstable, adaptive, zero))
    return lower_slope, upper_slope, upper_intercept


def _relu_transpose(
    lam: torch.Tensor, box: ibp.Interval
) -> tuple[list[torch.Tensor], torch.Tensor]:
    lower_slope, upper_slope, upper_intercept = relu_relaxation(box)
    # Few full-size temporaries: these tensors are the largest of the pass, and elementwise
    # work on them, not the convolutions, dominates its time on a CPU.
    slope = torch.where(lam >= 0, lower_slope[:, None], upper_slope[:, None])
    return [lam * slope], _contract(lam.clamp(max=0), upper_intercept)


def _max_pool_windows(
    pool: nn.MaxPool2d, box: ibp.Interval
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per window: the input index of the largest lower bound (N, C, L), whether that input
    dominates the window (its lower bound >= every other upper bound), and the largest upper."""
    n, c, h, w = box.lower.shape
    kernel, stride = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    padding, dilation = _pair(pool.padding), _pair(pool.dilation)

    def windows(tensor: torch.Tensor, fill: float) -> torch.Tensor:
        padded = F.pad(tensor, (padding[1], padding[1], padding[0], padding[0]), value=fill)
        rows = padded.reshape(-1, 1, *padded.shape[2:])
        return F.unfold(rows, kernel, dilation=dilation, stride=stride)  # (rows, k*k, L)

    lower = windows(box.lower, float("-inf"))
    upper = windows(box.upper, float("-inf"))
    positions = torch.arange(h * w, device=box.lower.device, dtype=box.lower.dtype)
    index = windows(positions.view(1, 1, h, w), -1.0)
    best = lower.argmax(dim=1, keepdim=True)
    best_lower = lower.gather(1, best).squeeze(1)
    other_upper = upper.scatter(1, best, float("-inf")).amax(dim=1)
    chosen = index.expand(lower.shape[0], -1, -1).gather(1, best).squeeze(1).long()
    shape = (n, c, -1)
    return (
        chosen.view(shape),
        (best_lower >= other_upper).view(shape),
        upper.amax(dim=1).view(shape),
    )


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _max_pool_transpose(
    op: g.Op, lam: torch.Tensor, box: ibp.Interval
) -> tuple[list[torch.Tensor], torch.Tensor]:
    assert isinstance(op.module, nn.MaxPool2d)
    chosen, dominant, upper_max = _max_pool_windows(op.module, box)
    n, s, c = lam.shape[:3]
    flat = lam.reshape(n, s, c, -1)
    # Lower bound max >= x_{i*}; upper bound x_{i*} when it dominates, else the constant max(u).
    coefficient = torch.where((flat >= 0) | dominant[:, None], flat, 0.0)
    extra = _contract(flat.clamp(max=0), torch.where(dominant, 0.0, upper_max))
    index = chosen[:, None].expand(n, s, c, -1)
    passed = flat.new_zeros(n, s, c, box.lower[0, 0].numel()).scatter_add(3, index, coefficient)
    return [passed.reshape(n, s, *box.lower.shape[1:])], extra


def _concretize(lam: torch.Tensor, images: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """min over the threat set of ``Λ · x``: the box, and for L2 also the dual norm."""
    lower, upper = (images - eps).clamp(0, 1), (images + eps).clamp(0, 1)
    box = _contract(lam, (upper + lower) / 2) - _contract(lam.abs(), (upper - lower) / 2)
    if norm == "Linf":
        return box
    return torch.maximum(box, _contract(lam, images) - eps * lam.flatten(2).norm(dim=2))


def _contract(lam: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
    """(N, S) = sum over the value's elements of ``lam * per_sample``, per row, without
    materialising the product."""
    return (lam.flatten(2) @ per_sample.reshape(len(per_sample), -1, 1)).squeeze(2)


class _Tightener:
    """Full CROWN's intermediate bounds: a backward pass from each ReLU input that sits behind
    a nonlinearity (before it, interval or dual-norm bounds are already exact per neuron)."""

    def __init__(self, graph: g.BoundGraph, images: torch.Tensor, norm: str, eps: float):
        self.graph, self.images, self.norm, self.eps = graph, images, norm, eps
        self.behind_nonlinear = _behind_nonlinear(graph)

    def __call__(self, name: str, box: ibp.Interval, env: dict[str, ibp.Value]) -> ibp.Interval:
        if name not in self.behind_nonlinear:
            return box
        n = box.lower.shape[0]
        lower, upper = box.lower.flatten(1), box.upper.flatten(1)
        widest = max(ibp.interval_of(v).lower[0].numel() for v in env.values() if _bounded(v))
        if lower.shape[1] * widest > REFINE_MAX_ELEMENTS:
            return box
        unstable = (lower < 0) & (upper > 0)
        count = int(unstable.sum(dim=1).max()) if unstable.numel() else 0
        if count == 0:
            return box
        # Per sample, its unstable neurons first, padded to the batch's largest count; padding
        # rows are computed but not used, so a sample's bound does not depend on its batch.
        order = unstable.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :count]
        valid = unstable.gather(1, order)
        chunk = max(1, LAMBDA_ELEMENTS // (2 * n * widest))
        for begin in range(0, count, chunk):
            neurons, used = order[:, begin : begin + chunk], valid[:, begin : begin + chunk]
            lower, upper = self._tighten(name, env, neurons, used, lower, upper, box.lower.shape)
        return ibp.Interval(lower.view(box.lower.shape), upper.view(box.lower.shape))

    def _tighten(
        self,
        name: str,
        env: dict[str, ibp.Value],
        neurons: torch.Tensor,
        used: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        shape: torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = neurons.shape
        ones = lower.new_ones(n, k, 1)
        # Rows +e_i bound the neuron from below, rows -e_i from above.
        spec = lower.new_zeros(n, 2 * k, lower.shape[1])
        spec = spec.scatter(
            2, torch.cat([neurons, neurons], 1)[:, :, None], torch.cat([ones, -ones], 1)
        )
        bound = backward(
            self.graph, env, name, spec.view(n, 2 * k, *shape[1:]), self.images, self.norm, self.eps
        )
        old_lower, old_upper = lower.gather(1, neurons), upper.gather(1, neurons)
        new_lower = torch.where(used, torch.maximum(old_lower, bound[:, :k]), old_lower)
        new_upper = torch.where(used, torch.minimum(old_upper, -bound[:, k:]), old_upper)
        return lower.scatter(1, neurons, new_lower), upper.scatter(1, neurons, new_upper)


def _bounded(value: object) -> bool:
    return isinstance(value, ibp.Interval | ibp.L2Input)


def _behind_nonlinear(graph: g.BoundGraph) -> set[str]:
    kinds = {op.node.name: op.kind for op in graph.ops}
    behind: set[str] = set()
    for op in graph.ops:
        if any(name in behind or kinds[name] in g.NONLINEAR for name in op.inputs):
            behind.add(op.node.name)
    return behind

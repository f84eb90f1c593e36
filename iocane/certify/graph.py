"""Trace a model into the operations that bound propagation understands.

``torch.fx`` symbolic tracing turns a model into a graph of module calls and functions; each
node is classified into one of a few kinds (affine, ReLU, max pooling, reshape, residual add,
...). A node of any other kind raises :class:`UnsupportedModel` naming the layer by its
qualified name in the model and its type, so a model the verifier cannot bound gets a message,
never a wrong number. The classification is structural (it does not look at the train/eval
mode); the mode-dependent check (batch norm must be in eval mode) happens when bounding.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from models.normalize import Normalize

SUPPORTED = (
    "Linear, Conv2d, ReLU (module, F.relu, torch.relu), BatchNorm1d/2d in eval mode, AvgPool2d, "
    "AdaptiveAvgPool2d, MaxPool2d, Flatten/flatten/view/reshape, Normalize, Identity, Dropout, "
    "residual addition of two tensors, nn.Sequential nesting"
)

# Kinds of operation. The input and output are kinds too, so every bounded node has one.
INPUT, OUTPUT = "input", "output"
LINEAR, CONV, CHANNEL_AFFINE, AVG_POOL = "linear", "conv", "channel_affine", "avg_pool"
RELU, MAX_POOL = "relu", "max_pool"
RESHAPE, ADD, IDENTITY = "reshape", "add", "identity"
# Computes a Python value from a tensor's shape (``x.size(0)``), used by reshapes.
META = "meta"

NONLINEAR = (RELU, MAX_POOL)

_MODULE_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, LINEAR),
    (nn.Conv2d, CONV),
    (nn.BatchNorm1d, CHANNEL_AFFINE),
    (nn.BatchNorm2d, CHANNEL_AFFINE),
    (Normalize, CHANNEL_AFFINE),
    (nn.AvgPool2d, AVG_POOL),
    (nn.AdaptiveAvgPool2d, AVG_POOL),
    (nn.ReLU, RELU),
    (nn.MaxPool2d, MAX_POOL),
    (nn.Flatten, RESHAPE),
    (nn.Identity, IDENTITY),
    # Dropout is bounded as the identity, its eval-mode function: the bound is of the
    # deterministic network (training with IBP bounds the network without its noise).
    (nn.Dropout, IDENTITY),
)
_RELU_FUNCTIONS = (F.relu, torch.relu)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape)
_RESHAPE_METHODS = ("view", "reshape", "flatten")
_IDENTITY_METHODS = ("contiguous",)


class UnsupportedModel(ValueError):
    """The model has a layer (or a structure) that the verifier cannot bound."""


@dataclass(frozen=True)
class Op:
    """One node of the traced graph, classified."""

    node: fx.Node
    kind: str
    qualname: str  # the layer's name in the model ("features.3"), for messages
    module: nn.Module | None
    inputs: tuple[str, ...]  # the bounded (tensor-valued) inputs, by node name


@dataclass(frozen=True)
class BoundGraph:
    """The model as a topologically ordered list of classified operations."""

    ops: tuple[Op, ...]
    input_name: str
    output_name: str  # the node whose value is the logits

    def op(self, name: str) -> Op:
        return next(op for op in self.ops if op.node.name == name)


class _LeafTracer(fx.Tracer):
    """fx's tracer, keeping iocane's Normalize whole (it is one affine layer)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Normalize) or super().is_leaf_module(m, module_qualified_name)


# Tracing costs ~10 ms (small_cnn) to ~30 ms (a ResNet), as much as an IBP training step on
# digits, and training bounds every batch: the trace is kept per model object, keyed weakly so
# it dies with the model, and checked against the model's current submodules (by identity), so
# a layer replaced after tracing is traced afresh rather than bounded as the old one.
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, BoundGraph]] = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    return tuple((name, id(module)) for name, module in model.named_modules())


def trace(model: nn.Module) -> BoundGraph:
    """Trace and classify ``model``; raises UnsupportedModel."""
    fingerprint = _fingerprint(model)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    try:
        graph = _LeafTracer().trace(model)
    except Exception as error:  # fx raises many types for data-dependent control flow
        raise UnsupportedModel(
            f"cannot bound {type(model).__name__}: torch.fx could not trace it ({error}); "
            f"supported: {SUPPORTED}"
        ) from error
    bound_graph = _classify(model, graph)
    _CACHE[model] = (fingerprint, bound_graph)
    return bound_graph


def _classify(model: nn.Module, graph: fx.Graph) -> BoundGraph:
    ops: list[Op] = []
    bounded: set[str] = set()  # nodes whose value depends on the input tensor
    meta: set[str] = set()  # nodes holding shape values
    input_name = output_name = ""
    for node in graph.nodes:
        if node.op == "placeholder":
            if input_name:
                raise UnsupportedModel(f"cannot bound a model with several inputs ({node.name})")
            input_name = node.name
            bounded.add(node.name)
            ops.append(Op(node, INPUT, "input", None, ()))
            continue
        if node.op == "get_attr":
            continue  # a constant: only an error if a bounded operation consumes it
        if node.op == "output":
            output_name = _output_source(node, bounded)
            continue
        op = _classify_node(model, node, bounded, meta)
        if op is None:
            continue
        (meta if op.kind == META else bounded).add(node.name)
        ops.append(op)
    return BoundGraph(tuple(ops), input_name, output_name)


def _output_source(node: fx.Node, bounded: set[str]) -> str:
    result = node.args[0]
    if not isinstance(result, fx.Node) or result.name not in bounded:
        raise UnsupportedModel(
            f"cannot bound a model whose output is {type(result).__name__}, not one logits tensor"
        )
    return result.name


def _qualname(model: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    # A function call is named after the module whose forward made it, when fx recorded it.
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack), None) if stack else None
    return f"{owner}.{node.name}" if owner else node.name


def _type_name(model: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(model.get_submodule(str(node.target))).__name__
    target = node.target
    return getattr(target, "__name__", str(target))


def _unsupported(model: nn.Module, node: fx.Node, why: str = "") -> UnsupportedModel:
    detail = f" ({why})" if why else ""
    return UnsupportedModel(
        f"cannot bound layer {_qualname(model, node)!r} ({_type_name(model, node)}){detail}: "
        f"supported: {SUPPORTED}"
    )


def _classify_node(model: nn.Module, node: fx.Node, bounded: set[str], meta: set[str]) -> Op | None:
    inputs = list(node.all_input_nodes)
    tensor_inputs = tuple(n.name for n in inputs if n.name in bounded)
    if not tensor_inputs:
        if any(n.name in meta for n in inputs):
            return Op(node, META, _qualname(model, node), None, ())
        return None  # constant folding territory: not part of the bounded computation
    kind, module = _kind_of(model, node)
    if kind is None:
        raise _unsupported(model, node)
    if kind == META:
        return Op(node, META, _qualname(model, node), None, ())
    others = [n for n in inputs if n.name not in bounded and n.name not in meta]
    if others or (kind != ADD and len(tensor_inputs) != 1):
        raise _unsupported(model, node, "it mixes the input with a constant tensor")
    if kind == ADD and (len(tensor_inputs) != 2 or len(node.args) != 2 or node.kwargs):
        raise _unsupported(model, node, "only the sum of two tensors is supported")
    _check_module(model, node, module)
    return Op(node, kind, _qualname(model, node), module, tensor_inputs)


def _kind_of(model: nn.Module, node: fx.Node) -> tuple[str | None, nn.Module | None]:
    if node.op == "call_module":
        module = model.get_submodule(str(node.target))
        for module_type, kind in _MODULE_KINDS:
            if type(module) is module_type:
                return kind, module
        return None, module
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            return RELU, None
        if node.target in _ADD_FUNCTIONS:
            return ADD, None
        if node.target in _RESHAPE_FUNCTIONS:
            return RESHAPE, None
        if node.target is getattr and node.args[1] == "shape":
            return META, None
        return None, None
    if node.op == "call_method":
        if node.target in _RESHAPE_METHODS:
            return RESHAPE, None
        if node.target == "relu":
            return RELU, None
        if node.target == "size":
            return META, None
        if node.target in _IDENTITY_METHODS:
            return IDENTITY, None
        if node.target == "add":
            return ADD, None
    return None, None


def _check_module(model: nn.Module, node: fx.Node, module: nn.Module | None) -> None:
    """Refuse module settings the bound code does not model."""
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise _unsupported(model, node, f"padding_mode={module.padding_mode!r}")
    if isinstance(module, nn.MaxPool2d) and (module.ceil_mode or module.return_indices):
        raise _unsupported(model, node, "ceil_mode or return_indices")
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and not module.track_running_stats:
        raise _unsupported(model, node, "no running statistics: it normalises by the batch")
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS and len(node.args) > 1:
        raise _unsupported(model, node, "unexpected arguments")

"""Tracing and operator classes: what every node of the torch.fx graph does to channels.

Channels live on dim 1 of every tensor simplify tracks: [N, C, H, W] maps and [N, F] feature
vectors. Each node is put in one operator class:

    CONV, LINEAR        mix channels; their weights decide which input channels they read
    BATCHNORM, BIAS_MAP per-channel affine layers with parameters (sliced with the channels)
    CHANNELWISE         channel c of the output depends on channel c of the one tensor input only
                        (activations, pooling, dropout, identity, arithmetic with a scalar)
    ELEMENTWISE         two or more tensors of the same channel layout combined per channel
                        (residual add, mul): a channel is removed from all of them or none
    CONCAT              torch.cat on dim 1: output channels are the inputs' at offsets
    FLATTEN             [N, C, H, W] -> [N, C*H*W]: each channel owns H*W consecutive features
    OPAQUE              anything else: its inputs are kept whole, its outputs are taken as live
    PLACEHOLDER, OUTPUT the model's inputs and outputs (never changed)
    UNTRACKED           values that are not channel tensors (sizes, shapes, scalars)

Layers with parameters other than Conv2d, Linear, BatchNorm1d/2d and BiasMap are refused with
their name; parameter-free operators potatura does not know are OPAQUE (exact, not shrunk).
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from potatura.errors import UnsupportedError
from potatura.simplify.layers import BiasMap


class OpClass(enum.Enum):
    PLACEHOLDER = "placeholder"
    OUTPUT = "output"
    CONV = "conv"
    LINEAR = "linear"
    BATCHNORM = "batchnorm"
    BIAS_MAP = "bias_map"
    CHANNELWISE = "channelwise"
    ELEMENTWISE = "elementwise"
    CONCAT = "concat"
    FLATTEN = "flatten"
    OPAQUE = "opaque"
    UNTRACKED = "untracked"


SUPPORTED_PARAMETRIC = "Conv2d, Linear, BatchNorm1d, BatchNorm2d"

# Parameter-free modules whose output channel c depends only on input channel c.
_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample,
    nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)
_CHANNELWISE_FUNCTIONS = {
    F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus,
    F.dropout, F.dropout2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.interpolate, torch.clamp, torch.clip, torch.neg, operator.neg, torch.abs, torch.exp,
}
_CHANNELWISE_METHODS = {
    "relu", "sigmoid", "tanh", "clamp", "clip", "neg", "abs", "exp", "contiguous", "clone", "float", "double",
    "detach",
}
# Arithmetic: ELEMENTWISE between tensors of one layout, CHANNELWISE with a Python scalar.
_ARITHMETIC_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                         operator.isub, operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
                         torch.minimum}
_ARITHMETIC_METHODS = {"add", "sub", "mul", "div", "maximum", "minimum"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}


class SimplifyTracer(fx.Tracer):
    """torch.fx tracer that keeps potatura's BiasMap as one leaf node (it is re-simplified as such)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, BiasMap):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace `model`; refuse clearly when torch.fx cannot."""
    try:
        graph = SimplifyTracer().trace(model)
    except Exception as exc:  # torch.fx raises many types (TraceError, TypeError, NotImplementedError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedError(
            f"simplify: model {type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}: {first}); "
            "simplify needs a forward without data-dependent control flow (torch.fx.symbolic_trace must succeed)"
        ) from None
    for node in graph.nodes:
        # Annotations written under `from __future__ import annotations` are strings; a string
        # type in the generated code makes the GraphModule impossible to pickle.
        if isinstance(node.type, str):
            node.type = None
    name = model.__class__.__name__ if not isinstance(model, fx.GraphModule) else model._get_name()
    return fx.GraphModule(model, graph, class_name=name)


def tensor_shape(node: Any) -> Optional[tuple[int, ...]]:
    """The shape recorded (inplace.functionalize, as ShapeProp) for a node whose value is one
    floating-point tensor, else None."""
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape") or not getattr(meta, "dtype", torch.int64).is_floating_point:
        return None
    return tuple(meta.shape)


def is_channel_tensor(node: Any) -> bool:
    shape = tensor_shape(node)
    return shape is not None and len(shape) in (2, 4)


@dataclass(frozen=True)
class NodeOp:
    """The operator class of one node and the inputs that carry channels (in order)."""

    op_class: OpClass
    inputs: tuple[fx.Node, ...] = ()
    module: Optional[nn.Module] = None


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _layer_name(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _arithmetic(node: fx.Node, operands: list[Any]) -> NodeOp:
    tensors = [a for a in operands if isinstance(a, fx.Node)]
    others = [a for a in operands if not isinstance(a, fx.Node)]
    if any(not isinstance(o, (int, float, bool)) for o in others):
        return NodeOp(OpClass.OPAQUE, tuple(_tensor_inputs(node)))
    if not all(is_channel_tensor(t) for t in tensors):
        return NodeOp(OpClass.OPAQUE, tuple(_tensor_inputs(node)))
    out_shape = tensor_shape(node)
    if out_shape is None:
        return NodeOp(OpClass.OPAQUE, tuple(_tensor_inputs(node)))
    if len(tensors) == 1:
        if tensor_shape(tensors[0])[:2] != out_shape[:2]:
            return NodeOp(OpClass.OPAQUE, tuple(tensors))
        return NodeOp(OpClass.CHANNELWISE, (tensors[0],))
    # Every operand must hold the output's channels one to one (same rank and channel count);
    # broadcasting along the channel dim would tie one channel to all others.
    if all(len(tensor_shape(t)) == len(out_shape) and tensor_shape(t)[1] == out_shape[1] for t in tensors):
        return NodeOp(OpClass.ELEMENTWISE, tuple(tensors))
    return NodeOp(OpClass.OPAQUE, tuple(tensors))


def _is_flatten_to_features(node: fx.Node, source: Any) -> bool:
    in_shape, out_shape = tensor_shape(source), tensor_shape(node)
    return (in_shape is not None and out_shape is not None and len(in_shape) == 4 and len(out_shape) == 2
            and out_shape[0] == in_shape[0] and out_shape[1] == in_shape[1] * in_shape[2] * in_shape[3])


_PARAMETRIC = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, BiasMap)


def _refuse_unknown_parametric(node: fx.Node, module: nn.Module) -> None:
    kind = type(module)
    if kind in _PARAMETRIC:
        return
    if any(True for _ in module.parameters()) or any(b is not None for b in module.buffers()):
        raise UnsupportedError(
            f"simplify: layer {node.target!r} ({kind.__module__}.{kind.__name__}) is not supported; "
            f"supported layers with parameters: {SUPPORTED_PARAMETRIC} (exact types: quantized or "
            "custom subclasses are refused, simplify runs on the float model before quantization); "
            "parameter-free layers pass through")


def layers_sharing_parameters(gm: fx.GraphModule) -> dict[str, str]:
    """Called layers whose parameter (same storage) another layer also holds: {layer: the other layer}.

    Tied weights: slicing each layer on its own would make two copies of one tensor, so these
    layers are kept whole (not sliced, no BatchNorm folded into them) and stay tied.
    """
    owner: dict[int, str] = {}
    shared: dict[str, str] = {}
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    for name, module in gm.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            if p.numel() == 0:
                continue
            first = owner.setdefault(p.untyped_storage().data_ptr(), name)
            if first != name:
                for a, b in ((name, first), (first, name)):
                    if a in called:
                        shared.setdefault(a, b)
    return shared


def classify(gm: fx.GraphModule, node: fx.Node, keep_whole: frozenset[str] = frozenset()) -> NodeOp:
    """The operator class of `node`; raises UnsupportedError for layers with unknown parameters.

    keep_whole: names of layers analysed as OPAQUE (kept whole): layers sharing parameters.
    """
    if node.op == "placeholder":
        return NodeOp(OpClass.PLACEHOLDER)
    if node.op == "output":
        return NodeOp(OpClass.OUTPUT, tuple(_tensor_inputs(node)))
    if node.op == "get_attr":
        return NodeOp(OpClass.UNTRACKED)
    inputs = _tensor_inputs(node)
    first = node.args[0] if node.args else None
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if module is not None:
        _refuse_unknown_parametric(node, module)
        if str(node.target) in keep_whole:
            return NodeOp(OpClass.OPAQUE, tuple(inputs), module)
    if not is_channel_tensor(node):
        # Sizes, shapes, tuples, tensors of other ranks: whatever they read is kept whole.
        return NodeOp(OpClass.OPAQUE if module is not None else OpClass.UNTRACKED, tuple(inputs), module)

    if module is not None:
        kind = type(module)
        if kind is nn.Conv2d:
            if not is_channel_tensor(first) or len(tensor_shape(first)) != 4:
                return NodeOp(OpClass.OPAQUE, tuple(inputs), module)
            return NodeOp(OpClass.CONV, (first,), module)
        if kind is nn.Linear:
            if not is_channel_tensor(first) or len(tensor_shape(first)) != 2:
                return NodeOp(OpClass.OPAQUE, tuple(inputs), module)
            return NodeOp(OpClass.LINEAR, (first,), module)
        if kind in (nn.BatchNorm1d, nn.BatchNorm2d):
            if module.running_mean is None or module.running_var is None:
                raise UnsupportedError(
                    f"simplify: layer {node.target!r} ({kind.__name__}) has no running statistics "
                    "(track_running_stats=False), so it cannot be folded or sliced in eval mode")
            if is_channel_tensor(first):
                return NodeOp(OpClass.BATCHNORM, (first,), module)
            return NodeOp(OpClass.OPAQUE, tuple(inputs), module)
        if kind is BiasMap:
            return NodeOp(OpClass.BIAS_MAP, (first,), module)
        if kind is nn.Flatten:
            if module.start_dim == 1 and module.end_dim == -1 and _is_flatten_to_features(node, first):
                return NodeOp(OpClass.FLATTEN, (first,), module)
            if tensor_shape(first) == tensor_shape(node):
                return NodeOp(OpClass.CHANNELWISE, (first,), module)
            return NodeOp(OpClass.OPAQUE, tuple(inputs), module)
        if isinstance(module, _CHANNELWISE_MODULES) and is_channel_tensor(first) \
                and tensor_shape(first)[:2] == tensor_shape(node)[:2] and len(inputs) == 1:
            return NodeOp(OpClass.CHANNELWISE, (first,), module)
        return NodeOp(OpClass.OPAQUE, tuple(inputs), module)

    if node.op == "call_function":
        target = node.target
        if target in _ARITHMETIC_FUNCTIONS and not node.kwargs.keys() - {"alpha"}:
            return _arithmetic(node, list(node.args[:2]))
        if target in _CAT_FUNCTIONS:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors")
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            ok = isinstance(tensors, (list, tuple)) and all(is_channel_tensor(t) for t in tensors)
            if ok and tensor_shape(node) is not None:
                rank = len(tensor_shape(node))
                if dim in (1, 1 - rank):
                    return NodeOp(OpClass.CONCAT, tuple(tensors))
            return NodeOp(OpClass.OPAQUE, tuple(inputs))
        if target is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start == 1 and end == -1 and _is_flatten_to_features(node, first):
                return NodeOp(OpClass.FLATTEN, (first,))
            if tensor_shape(first) == tensor_shape(node):
                return NodeOp(OpClass.CHANNELWISE, (first,))
            return NodeOp(OpClass.OPAQUE, tuple(inputs))
        if target in _CHANNELWISE_FUNCTIONS and is_channel_tensor(first) and len(inputs) == 1 \
                and tensor_shape(first)[:2] == tensor_shape(node)[:2]:
            return NodeOp(OpClass.CHANNELWISE, (first,))
        return NodeOp(OpClass.OPAQUE, tuple(inputs))

    if node.op == "call_method":
        method = str(node.target)
        base = method[:-1] if method.endswith("_") and not method.startswith("_") else method
        if base in _ARITHMETIC_METHODS and not node.kwargs.keys() - {"alpha"}:
            return _arithmetic(node, list(node.args[:2]))
        if base == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start == 1 and end == -1 and _is_flatten_to_features(node, first):
                return NodeOp(OpClass.FLATTEN, (first,))
        if base in ("view", "reshape") and _is_flatten_to_features(node, first):
            # x.view(x.size(0), -1): rewritten as torch.flatten(x, 1) so it follows the new width.
            return NodeOp(OpClass.FLATTEN, (first,))
        if base in _CHANNELWISE_METHODS and is_channel_tensor(first) and len(inputs) == 1 \
                and tensor_shape(first)[:2] == tensor_shape(node)[:2]:
            return NodeOp(OpClass.CHANNELWISE, (first,))
        return NodeOp(OpClass.OPAQUE, tuple(inputs))

    return NodeOp(OpClass.OPAQUE, tuple(inputs))


def check_single_use(gm: fx.GraphModule) -> None:
    """A layer with parameters called from two places cannot be sliced two ways: refuse it."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and type(gm.get_submodule(node.target)) in (nn.Conv2d, nn.Linear,
                                                                                nn.BatchNorm1d, nn.BatchNorm2d):
            calls[node.target] = calls.get(node.target, 0) + 1
    shared = [name for name, n in calls.items() if n > 1]
    if shared:
        raise UnsupportedError(
            f"simplify: layer {shared[0]!r} is called {calls[shared[0]]} times in forward (shared weights); "
            "simplify needs every Conv2d/Linear/BatchNorm called once")

"""Float model -> Brevitas model: walk the torch.fx graph and rebuild it with quantized layers.

The rebuilt model is an fx GraphModule whose every tensor entering a Conv2d/Linear is an
IntQuantTensor, so each bias can be quantized with the accumulator's scale:

    input          -> QuantIdentity "input_quant" (signed)
    Conv2d/Linear  -> QuantConv2d/QuantLinear (weights copied; a BatchNorm right after is folded)
    ReLU           -> QuantReLU (unsigned)
    MaxPool2d, Flatten, view/reshape   pass the quantized tensor through unchanged
    AvgPool2d, AdaptiveAvgPool2d       followed by a QuantIdentity "<node>_quant": an average is
                                       not on the input's grid (its scale divides by the window)
    a + b, torch.cat                   every input goes through one shared QuantIdentity
                                       "<node>_quant", so all inputs have the same scale and the
                                       add/concat is exact integer arithmetic

The model's output (the last layer's accumulator, integer x scale) is returned as a plain tensor.
Anything else is refused with UnsupportedError naming the layer.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from potatura.errors import ConfigError, UnsupportedError
from potatura.quant import recipes
from potatura.quant.config import QuantConfig
from potatura.simplify.fold import fold_batchnorm_parameters

SUPPORTED = (
    "Conv2d and Linear (with or without bias; padding_mode 'zeros'), ReLU, MaxPool2d, AvgPool2d, "
    "AdaptiveAvgPool2d, Flatten, Identity, Dropout (removed), BatchNorm directly after a Conv2d/Linear "
    "(folded), residual add (+ / torch.add), torch.cat, flatten/view/reshape"
)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)
_AVG_POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_RELU_FUNCTIONS = (F.relu, torch.relu)
_SHAPE_METHODS = ("flatten", "view", "reshape", "contiguous")


def as_plain_tensor(x: Any) -> torch.Tensor:
    """The dequantized value of a QuantTensor (integer x scale); a plain tensor is returned as is."""
    return x.value if hasattr(x, "value") and hasattr(x, "scale") else x


@dataclass
class QuantLayerInfo:
    """What the converter made of one layer (for quant.json and the per-layer overrides)."""

    name: str
    kind: str  # conv | linear | relu | input | requant | shared
    source: str  # the float layer(s) it came from
    signed: Optional[bool] = None
    bias_bits: Optional[int] = None  # conv/linear: bit width of its (integer) bias; None: float bias


@dataclass
class BrevitasConversion:
    model: fx.GraphModule
    layers: list[QuantLayerInfo] = field(default_factory=list)
    folded_batchnorms: list[str] = field(default_factory=list)

    def weight_layers(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kind in ("conv", "linear")]


class _LayerTracer(fx.Tracer):
    """fx tracer that keeps any module holding its own parameters or buffers as one opaque call
    (e.g. simplify's BiasMap), so the converter can name it instead of failing inside it."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        own_state = next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None) is not None
        return super().is_leaf_module(m, module_qualified_name) or own_state


def trace(model: nn.Module) -> fx.GraphModule:
    """The fx graph of `model` (a GraphModule is used as it is)."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        tracer = _LayerTracer()
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises many kinds for data-dependent control flow
        raise UnsupportedError(
            f"quant: cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); "
            "the model must be traceable (no data-dependent control flow)"
        ) from None


def _fold_bn(layer: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of `layer` with the eval-mode BatchNorm `bn` folded in (computed in float64 by
    simplify's fold, the one implementation), as float32."""
    weight, bias = fold_batchnorm_parameters(layer, bn)
    return weight.float(), bias.float()


class _Builder:
    def __init__(self, gm: fx.GraphModule, cfg: QuantConfig):
        self.gm = gm
        self.cfg = cfg
        self.modules = dict(gm.named_modules())
        self.graph = fx.Graph()
        self.root: dict[str, nn.Module] = {}
        self.env: dict[fx.Node, fx.Node] = {}
        # per new node: (is an IntQuantTensor, signed)
        self.quant: dict[fx.Node, tuple[bool, bool]] = {}
        self.layers: list[QuantLayerInfo] = []
        self.folded: dict[fx.Node, fx.Node] = {}  # BN node -> the conv/linear node it folds into
        self.fold_source: dict[fx.Node, nn.Module] = {}  # conv/linear node -> its BN module
        self.bn_names: list[str] = []

    # -- helpers -------------------------------------------------------------------------------
    def _where(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"layer {node.target!r} ({type(self.modules[node.target]).__name__})"
        if node.op in ("call_function", "call_method"):
            target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            return f"operation {node.name!r} ({target})"
        return f"node {node.name!r} ({node.op} {node.target})"

    def unsupported(self, node: fx.Node, why: str = "") -> UnsupportedError:
        why = f": {why}" if why else " is not supported"
        return UnsupportedError(f"quant: {self._where(node)}{why}. Supported: {SUPPORTED}")

    def _name(self, wanted: str) -> str:
        """A module name not used yet: the float layer's own name when free."""
        name, i = wanted, 1
        while name in self.root:
            name, i = f"{wanted}_{i}", i + 1
        return name

    def add_module(self, name: str, module: nn.Module, inputs: tuple, info: QuantLayerInfo,
                   out_quant: tuple[bool, bool]) -> fx.Node:
        self.root[name] = module
        node = self.graph.call_module(name, inputs)
        self.quant[node] = out_quant
        info.name = name
        self.layers.append(info)
        return node

    def requant(self, name: str, source: str, value: fx.Node, signed: bool) -> fx.Node:
        q = _quant_identity(self.cfg, name, signed)
        return self.add_module(name, q, (value,), QuantLayerInfo(name, "requant", source, signed), (True, signed))

    def ensure_quant(self, value: fx.Node, name: str, source: str) -> fx.Node:
        is_quant, signed = self.quant.get(value, (False, True))
        return value if is_quant else self.requant(self._name(name), source, value, True)

    def arg(self, a: Any) -> Any:
        return fx.node.map_arg(a, lambda n: self.env[n])

    # -- BatchNorm folding plan ------------------------------------------------------------------
    def plan_folding(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op != "call_module" or not isinstance(self.modules[node.target], _BN):
                continue
            prev = node.args[0] if node.args else None
            ok = (isinstance(prev, fx.Node) and prev.op == "call_module"
                  and isinstance(self.modules[prev.target], (nn.Conv2d, nn.Linear))
                  and len(prev.users) == 1 and prev not in self.fold_source)
            if not ok:
                raise UnsupportedError(
                    f"quant: {self._where(node)} does not directly follow a Conv2d/Linear whose only user it is, "
                    "so it cannot be folded here; run the simplify stage first (it folds every BatchNorm)"
                )
            bn = self.modules[node.target]
            if bn.running_mean is None or bn.running_var is None:
                raise UnsupportedError(f"quant: {self._where(node)} has no running statistics (track_running_stats=False); "
                                       "it cannot be folded")
            self.folded[node] = prev
            self.fold_source[prev] = bn
            self.bn_names.append(node.target)

    # -- nodes ---------------------------------------------------------------------------------
    def build(self) -> BrevitasConversion:
        self.plan_folding()
        for node in self.gm.graph.nodes:
            handler = getattr(self, f"on_{node.op}")
            handler(node)
        gm = fx.GraphModule(self.root, self.graph, class_name="BrevitasModel")
        gm.eval()
        return BrevitasConversion(gm, self.layers, self.bn_names)

    def on_placeholder(self, node: fx.Node) -> None:
        if self.env:
            raise self.unsupported(node, "a second model input; only single-input models are supported")
        x = self.graph.placeholder(node.name)
        self.quant[x] = (False, True)
        q = _quant_identity(self.cfg, "input_quant", True, self.cfg.input_bits)
        self.env[node] = self.add_module("input_quant", q, (x,), QuantLayerInfo("input_quant", "input", "model input", True),
                                         (True, True))

    def on_get_attr(self, node: fx.Node) -> None:
        raise self.unsupported(node, "uses a constant tensor attribute of the model (for example a per-position bias "
                                     "map left by simplify); a hardware datapath has no such operand")

    def on_output(self, node: fx.Node) -> None:
        result = node.args[0]
        if not isinstance(result, fx.Node):
            raise self.unsupported(node, "returns several tensors; only a single output tensor is supported")
        value = self.env[result]
        if value.op == "call_module" and hasattr(self.root[value.target], "return_quant_tensor") and len(result.users) == 1:
            self.root[value.target].return_quant_tensor = False
        elif self.quant.get(value, (False,))[0]:
            value = self.graph.call_function(as_plain_tensor, (value,))
        self.graph.output(value)

    def on_call_module(self, node: fx.Node) -> None:
        module = self.modules[node.target]
        name = node.target
        if node in self.folded:  # a BatchNorm folded into its producer
            self.env[node] = self.env[self.folded[node]]
            return
        if isinstance(module, _PASS_MODULES):
            self.env[node] = self.env[node.args[0]]
            return
        if type(module) in (nn.Conv2d, nn.Linear):
            self.env[node] = self.weight_layer(node, module)
        elif isinstance(module, nn.ReLU):
            self.env[node] = self.relu(node, name, self.env[node.args[0]])
        elif isinstance(module, nn.MaxPool2d):
            if module.return_indices:
                raise self.unsupported(node, "MaxPool2d with return_indices=True is not supported")
            self.env[node] = self.passthrough_module(node, copy.deepcopy(module))
        elif isinstance(module, _AVG_POOL_MODULES):
            pooled = self.passthrough_module(node, copy.deepcopy(module))
            self.env[node] = self.requant(self._name(f"{node.name}_quant"), name, pooled, self.quant[pooled][1])
        elif isinstance(module, nn.Flatten):
            self.env[node] = self.passthrough_module(node, copy.deepcopy(module))
        elif isinstance(module, _BN):  # plan_folding accepted it, so it is always folded
            raise AssertionError("unreachable")
        else:
            kind = type(module).__name__
            hint = ""
            if kind == "BiasMap" or "bias" in kind.lower():
                hint = (": a per-position bias map (simplify adds one where a removed channel's constant output "
                        "meets a zero-padded convolution) has no equivalent in hls4ml or the HLSinf kernels; train so "
                        "that removed neurons output 0 after their activation, or run simplify with "
                        "simplify.bias_maps: refuse to find the layer before quantizing")
            raise UnsupportedError(f"quant: layer {name!r} ({kind}) is not supported{hint}. Supported: {SUPPORTED}")

    def passthrough_module(self, node: fx.Node, module: nn.Module) -> fx.Node:
        source = self.env[node.args[0]]
        name = self._name(node.target)
        self.root[name] = module
        out = self.graph.call_module(name, (source,))
        self.quant[out] = self.quant.get(source, (False, True))
        return out

    def weight_layer(self, node: fx.Node, module: nn.Module) -> fx.Node:
        name = node.target
        if len(node.args) != 1 or node.kwargs:
            raise self.unsupported(node, "is called with more than one argument")
        source = self.ensure_quant(self.env[node.args[0]], f"{name}_input_quant", name)
        bn = self.fold_source.get(node)
        if bn is not None:
            weight, bias = _fold_bn(module, bn)
        else:
            weight = module.weight.detach().clone()
            bias = module.bias.detach().clone() if module.bias is not None else None
        wq, bq = recipes.weight_quant(self.cfg, name), recipes.bias_quant(self.cfg, name)
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                raise self.unsupported(node, f"padding_mode {module.padding_mode!r} is not supported (only 'zeros')")
            import brevitas.nn as qnn

            q = qnn.QuantConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                                padding=module.padding, dilation=module.dilation, groups=module.groups,
                                bias=bias is not None, weight_quant=wq, bias_quant=bq, return_quant_tensor=True)
            kind = "conv"
        else:
            import brevitas.nn as qnn

            q = qnn.QuantLinear(module.in_features, module.out_features, bias=bias is not None, weight_quant=wq,
                                bias_quant=bq, return_quant_tensor=True)
            kind = "linear"
        with torch.no_grad():
            q.weight.copy_(weight)
            if bias is not None:
                q.bias.copy_(bias)
        source_desc = name if bn is None else f"{name} + folded BatchNorm"
        info = QuantLayerInfo(name, kind, source_desc, True, bq.bit_width if bq is not None else None)
        return self.add_module(self._name(name), q, (source,), info, (True, True))

    def relu(self, node: fx.Node, name: str, source: fx.Node) -> fx.Node:
        import brevitas.nn as qnn

        q = qnn.QuantReLU(act_quant=recipes.act_quant(self.cfg, name, signed=False), return_quant_tensor=True)
        return self.add_module(self._name(name), q, (source,), QuantLayerInfo(name, "relu", name, False), (True, False))

    def shared_requant(self, node: fx.Node, inputs: list[fx.Node], op: str) -> list[fx.Node]:
        """Requantize every input of an add/concat with one shared quantizer: one common scale."""
        name = self._name(f"{node.name}_quant")
        signed = any(self.quant.get(i, (False, True))[1] for i in inputs)
        q = _quant_identity(self.cfg, name, signed)
        self.root[name] = q
        self.layers.append(QuantLayerInfo(name, "shared", f"inputs of {op} {node.name!r}", signed))
        outs = []
        for i in inputs:
            out = self.graph.call_module(name, (i,))
            self.quant[out] = (True, signed)
            outs.append(out)
        return outs

    def on_call_function(self, node: fx.Node) -> None:
        fn = node.target
        if fn in _ADD_FUNCTIONS:
            operands = list(node.args)
            if len(operands) != 2 or set(node.kwargs) - {"alpha"} or node.kwargs.get("alpha", 1) != 1:
                raise self.unsupported(node, "only the sum of two tensors is supported")
            if not all(isinstance(a, fx.Node) and a.op != "get_attr" for a in operands):
                raise self.unsupported(node, "adds a constant (for example a per-position bias map left by simplify); "
                                             "only the sum of two computed tensors (a residual add) is supported")
            a, b = self.shared_requant(node, [self.env[x] for x in operands], "add")
            out = self.graph.call_function(operator.add, (a, b))
            self.quant[out] = (True, self.quant[a][1])
            self.env[node] = out
        elif fn is torch.cat:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors")
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, fx.Node) for t in tensors):
                raise self.unsupported(node, "concatenates constants; only computed tensors are supported")
            if dim not in (1, -3):
                raise self.unsupported(node, f"concatenates along dim {dim}; only the channel dimension (1) is supported")
            parts = self.shared_requant(node, [self.env[t] for t in tensors], "cat")
            out = self.graph.call_function(torch.cat, (parts,), {"dim": 1})
            self.quant[out] = (True, self.quant[parts[0]][1])
            self.env[node] = out
        elif fn in _RELU_FUNCTIONS:
            self.env[node] = self.relu(node, node.name, self.env[node.args[0]])
        elif fn is torch.flatten or fn is F.max_pool2d:
            out = self.graph.call_function(fn, self.arg(node.args), self.arg(node.kwargs))
            self.quant[out] = self.quant.get(self.env[node.args[0]], (False, True))
            self.env[node] = out
        elif fn in (F.avg_pool2d, F.adaptive_avg_pool2d):
            pooled = self.graph.call_function(fn, self.arg(node.args), self.arg(node.kwargs))
            signed = self.quant.get(self.env[node.args[0]], (False, True))[1]
            self.quant[pooled] = (True, signed)
            self.env[node] = self.requant(self._name(f"{node.name}_quant"), node.name, pooled, signed)
        elif fn is F.dropout:
            self.env[node] = self.env[node.args[0]]
        elif fn is operator.getitem and isinstance(node.args[0], fx.Node) and node.args[0].op == "call_method" \
                and node.args[0].target == "size":
            self.env[node] = self.graph.call_function(fn, self.arg(node.args))
        else:
            raise self.unsupported(node)

    def on_call_method(self, node: fx.Node) -> None:
        method = node.target
        if method in _SHAPE_METHODS or method == "size":
            out = self.graph.call_method(method, self.arg(node.args), self.arg(node.kwargs))
            if method != "size":
                self.quant[out] = self.quant.get(self.env[node.args[0]], (False, True))
            self.env[node] = out
        elif method == "relu":
            self.env[node] = self.relu(node, node.name, self.env[node.args[0]])
        else:
            raise self.unsupported(node)


def _quant_identity(cfg: QuantConfig, name: str, signed: bool, default_bits: Optional[int] = None) -> nn.Module:
    import brevitas.nn as qnn

    return qnn.QuantIdentity(act_quant=recipes.act_quant(cfg, name, signed, default_bits), return_quant_tensor=True)


def check_layer_overrides(conversion: BrevitasConversion, cfg: QuantConfig) -> None:
    """Every key of quant.layers must name a layer of this model."""
    known = {layer.name for layer in conversion.layers} | {layer.source for layer in conversion.layers}
    unknown = sorted(set(cfg.layers) - known)
    if unknown:
        names = ", ".join(layer.name for layer in conversion.layers)
        raise ConfigError(f"quant.layers: unknown layer {', '.join(map(repr, unknown))}; layers of this model: {names}")


def to_brevitas(model: nn.Module, cfg: QuantConfig) -> BrevitasConversion:
    """Rebuild `model` (eval mode, float) with Brevitas layers; the float model is not modified.

    Raises UnsupportedError naming the first layer that cannot be quantized.
    """
    was_training = model.training
    model.eval()
    try:
        gm = trace(model)
        conversion = _Builder(gm, cfg).build()
    finally:
        model.train(was_training)
    check_layer_overrides(conversion, cfg)
    return conversion

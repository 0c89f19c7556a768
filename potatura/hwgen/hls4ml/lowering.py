"""The hls4ml backend's lowering: the IR as hls4ml 1.3 builds it, and the network view its steps use.

Two passes (`apply(graph) -> (graph, changed)`):

- `merge_relu_quant`: hls4ml folds a Relu followed by a Quant into one Activation layer whose
  output has the Quant's type; the QUANT layer disappears and the RELU takes its result type;
- `name_layers`: each layer gets attrs["hls4ml"] = {name, config_key}: the name of the layer in
  the hls4ml model after its optimizers run (Conv2D_<node>, Dense_<node>, <node>_act for a Quant,
  sanitized as hls4ml's ONNX parser does) and the key of its entry in the hls4ml config (the ONNX
  node name).

`QuantizedNetwork` is that lowered graph with the prepared QONNX model hls4ml converts, the input
and output contract, and `passthrough`: the config entries of ONNX nodes that have no layer of
their own here (every Quant, a bias Add, a Transpose) with the precision hls4ml must give them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from potatura.errors import UnsupportedError
from potatura.hw.ir import Graph, Layer, Op
from potatura.hw.types import FixedType
from potatura.hwgen.hls4ml.compat import hls_layer_name
from potatura.hwgen.reader import QonnxGraph, read_qonnx


def merge_relu_quant(graph: Graph) -> tuple[Graph, bool]:
    """Fold each RELU -> QUANT pair (the QUANT the RELU's only consumer) into the RELU."""
    for relu in graph.layers:
        if relu.op != Op.RELU or relu.attrs.get("merged"):
            continue
        consumers = graph.consumers(relu.name)
        if len(consumers) != 1 or consumers[0].op != Op.QUANT or graph.output.layer == relu.name:
            continue
        quant = consumers[0]
        relu.result_type = quant.result_type
        relu.attrs["merged"] = [quant.name]
        relu.attrs["onnx_nodes"] = relu.attrs.get("onnx_nodes", []) + quant.attrs.get("onnx_nodes", [])
        graph.bypass(quant.name, relu.name)
        return graph, True
    return graph, False


def _main_node(layer: Layer) -> tuple[str, str]:
    """(name, op_type) of the ONNX node the layer is named after."""
    for name, op_type in layer.attrs.get("onnx_nodes", []):
        if name == layer.name:
            return name, op_type
    return layer.name, ""


def name_layers(graph: Graph) -> tuple[Graph, bool]:
    """Give every layer its hls4ml name and config key (attrs["hls4ml"])."""
    changed = False
    for layer in graph.layers:
        if "hls4ml" in layer.attrs:
            continue
        node, op_type = _main_node(layer)
        if layer.op == Op.INPUT:
            name = key = hls_layer_name(layer.name, "InputLayer")
        elif layer.op == Op.CONV2D:
            name, key = "Conv2D_" + hls_layer_name(node, op_type), node
        elif layer.op == Op.DENSE:
            name, key = "Dense_" + hls_layer_name(node, op_type), node
        elif layer.op == Op.QUANT:
            name, key = hls_layer_name(node, op_type) + "_act", node
        else:
            name, key = hls_layer_name(node, op_type), node
        layer.attrs["hls4ml"] = {"name": name, "config_key": key}
        changed = True
    return graph, changed


PASSES = (merge_relu_quant, name_layers)


def hls_name(layer: Layer) -> str:
    """The layer's name in the hls4ml model (after name_layers)."""
    return layer.attrs["hls4ml"]["name"]


def config_key(layer: Layer) -> str:
    """The key of the layer's entry in the hls4ml config (the ONNX node name)."""
    return layer.attrs["hls4ml"]["config_key"]


def precisions(layer: Layer) -> dict[str, str]:
    """hls4ml config 'Precision' entries for this layer."""
    out = {"result": layer.result_type.hls()}
    if layer.has_weights:
        out.update(weight=layer.weight_type.hls(), bias=layer.bias_type.hls(), accum=layer.accum_type.hls())
    if layer.op == Op.MAXPOOL2D:
        out["accum"] = layer.input_type.hls()
    return out


def passthrough_precisions(graph: Graph) -> dict[str, str]:
    """Config entries of ONNX nodes without a layer of their own here -> the precision they must keep.

    Every Quant (its grid), a bias Add (the dense result), a Transpose (its input's type: no cast).
    """
    out: dict[str, str] = {}
    for layer in graph.layers:
        for name, op_type in layer.attrs.get("onnx_nodes", []):
            if op_type == "Quant" or op_type == "Add":
                out[hls_layer_name(name, op_type)] = layer.result_type.hls()
            elif op_type == "Transpose":
                out[hls_layer_name(name, op_type)] = layer.input_type.hls()
    return out


@dataclass
class QuantizedNetwork:
    """A QONNX model lowered for hls4ml: the converted graph, its layers and its I/O contract."""

    model: object  # qonnx ModelWrapper, channels-last: what hls4ml converts
    source: str
    graph: Graph  # the lowered IR graph (what design.json holds)
    passthrough: dict[str, str] = field(default_factory=dict)  # other config keys -> result precision

    @property
    def layers(self) -> list[Layer]:
        """The layers hls4ml builds after its input layer."""
        return [layer for layer in self.graph.layers if layer.op != Op.INPUT]

    @property
    def input_layer(self) -> Layer:
        return self.graph.layers[0]

    @property
    def input_name(self) -> str:
        """hls4ml's name of the input layer."""
        return hls_name(self.input_layer)

    @property
    def input_quant(self) -> str:
        """The Quant node that quantizes the input."""
        return self.input_layer.attrs["onnx_nodes"][-1][0]

    @property
    def input_type(self) -> FixedType:
        return self.graph.input.type

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The accelerator's input, channels-last for CNNs."""
        return self.graph.input.shape

    @property
    def input_shape_nchw(self) -> tuple[int, ...]:
        """The QONNX model's input (without batch)."""
        return tuple(self.graph.attrs["input_shape_nchw"])

    @property
    def output_type(self) -> FixedType:
        return self.graph.output.type

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.graph.output.shape

    @property
    def channels_last(self) -> bool:
        """False: the input goes in as the QONNX model takes it (MLPs)."""
        return bool(self.graph.attrs.get("channels_last"))

    @property
    def has_conv(self) -> bool:
        return any(layer.op == Op.CONV2D for layer in self.layers)

    @property
    def float32_reference_exact(self) -> bool:
        """Whether a float32 execution (QONNX via onnxruntime) computes every sum exactly: every
        accumulator fits float32's 24-bit significand. Beyond that the float reference itself may round."""
        return all(layer.accum_type.float_exact(24) for layer in self.compute_layers)

    @property
    def compute_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.has_weights]

    def to_channels_last(self, x_nchw: np.ndarray) -> np.ndarray:
        """Host-side input encoding: (N, C, H, W) -> (N, H, W, C) for CNNs; MLP inputs unchanged."""
        x = np.asarray(x_nchw)
        if x.ndim == 4 and self.channels_last:
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return np.ascontiguousarray(x)

    def summary(self) -> list[dict]:
        rows = []
        for layer in self.layers:
            row = {"layer": hls_name(layer), "kind": layer.op.value, "in": list(layer.in_shape),
                   "out": list(layer.out_shape), "result": layer.result_type.hls()}
            if layer.has_weights:
                row.update(weight=layer.weight_type.hls(), bias=layer.bias_type.hls(),
                           accum=layer.accum_type.hls(), n_in=layer.n_in, n_out=layer.n_out,
                           zeros=layer.n_zeros)
            rows.append(row)
        return rows


def lower_network(source: QonnxGraph) -> QuantizedNetwork:
    """The hls4ml view of a QONNX model read into the IR: refuses what hls4ml cannot build."""
    from potatura.hwgen.backend import apply_passes, get_backend

    backend = get_backend("hls4ml")
    problems = backend.supports(source.graph)
    if problems:
        raise UnsupportedError(f"hwgen (hls4ml backend), {source.source}: " + "; ".join(problems)
                               + f"; the hls4ml backend builds: {', '.join(sorted(op.value for op in backend.spec.ops))}")
    graph = apply_passes(source.graph, PASSES)
    return QuantizedNetwork(model=source.model, source=source.source, graph=graph,
                            passthrough=passthrough_precisions(graph))


def read_network(model_or_path, source: str | None = None) -> QuantizedNetwork:
    """Read a QONNX model (path or ModelWrapper) and lower it for the hls4ml backend."""
    if source is None and isinstance(model_or_path, (str, Path)):
        source = Path(model_or_path).name
    return lower_network(read_qonnx(model_or_path, source))

"""Read a QONNX model into the hardware IR (potatura.hw.ir.Graph), backend-neutral.

The model is cleaned (qonnx cleanup), made channels-last with the input channels-last too (the
host transposes NCHW -> NHWC, a free numpy view, instead of a transpose buffer in hardware), and
its Gemm nodes become MatMul + Add. Then one handler per ONNX operator (`HANDLERS`) turns the
nodes, in topological order, into IR layers named after the node they come from.

Every type comes from the QONNX Quant nodes (scale 2**k, zero point 0, bit width, signedness,
narrow range, rounding) and from the integer weights themselves:

- input, weights, biases and activations: the Quant node's grid, ap_fixed<b, b+k> with the
  Quant's rounding (ROUND -> RND_CONV, FLOOR -> TRN) and saturation (narrow -> SAT_SYM);
- accumulators (and the results of Conv/Dense, which feed an activation cast): the narrowest type
  that holds every partial sum of bias and products in any order, computed per output from the
  integer weights and the input's code range, so nothing wraps and nothing rounds before the
  activation's own Quant cast.

The Quant -> ap_fixed mapping is exact: QONNX clips to integer bounds and then rounds, ap_fixed
rounds and then saturates, and with integer bounds both give the same code.

The graph may branch: residual adds (an exact sum), channel concatenations (every input cast
exactly to one type) and average pooling over power-of-two windows (exact with log2(window) more
fractional bits) are read too. Ops qonnx leaves channels-first behind a Transpose (Concat,
GlobalAveragePool, ...) are read in the IR's channels-last layout.

What stays in the IR is what any backend needs; how one backend names and merges layers (hls4ml
folds a Relu -> Quant pair into one layer) is that backend's lowering (docs/ARCHITECTURE.md).
Each layer records the ONNX nodes it covers in attrs["onnx_nodes"] ([name, op_type] pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from potatura.errors import DataError, UnsupportedError
from potatura.hw.ir import Graph, IOSpec, Layer, Op
from potatura.hw.types import ROUNDING, FixedType, po2_exponent

SUPPORTED_OPS = ("Quant (power-of-two scale, zero point 0)", "Conv (2D, group 1, dilation 1)",
                 "Gemm/MatMul (+ Add bias)", "Relu", "MaxPool (no padding)", "Flatten/Reshape to (1, n)",
                 "Add (of two tensors)", "Concat (channels)",
                 "AveragePool/GlobalAveragePool (no padding, power-of-two window)", "Transpose (layout)",
                 "Identity/Dropout")


@dataclass
class QonnxGraph:
    """A QONNX model read into the IR, with the prepared (channels-last, MatMul) model it came from."""

    graph: Graph
    model: object  # qonnx ModelWrapper after prepare_qonnx: what ONNX-based backends convert
    source: str  # the file name, for messages

    @property
    def channels_last(self) -> bool:
        return bool(self.graph.attrs.get("channels_last"))


def prepare_qonnx(model_or_path):
    """Clean a QONNX model and convert it to the channels-last MatMul form.

    Models without Conv/MaxPool stay as they are (an MLP's input is already a vector). Uses the
    quant stage's passes (qonnx cleanup, ConvertToChannelsLastAndClean with the input made
    channels-last, GemmToMatMul) on a copy; the file itself is not changed.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    from potatura.quant.export import clean, gemm_to_matmul, to_channels_last

    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise DataError(f"{path}: QONNX model not found")
        try:
            model = ModelWrapper(str(path))
        except Exception as exc:  # noqa: BLE001 (onnx raises DecodeError, ValueError, ... for a bad file)
            raise DataError(f"{path}: not a readable ONNX model: {exc}") from None
    else:
        model = model_or_path
    for node in model.graph.node:
        if node.op_type not in HANDLERS:
            raise UnsupportedError(
                f"hwgen: node {node.name or node.output[0]!r} is a {node.op_type}, which potatura cannot read "
                f"into its hardware IR bit-exactly; supported: {', '.join(SUPPORTED_OPS)}")
    if not any(node.op_type in ("Conv", "MaxPool") for node in model.graph.node):
        # No spatial layer: keep the input as it is, so Flatten sees the NCHW order it was trained on.
        return gemm_to_matmul(clean(model))
    return gemm_to_matmul(to_channels_last(model))


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


@dataclass
class _Tensor:
    """What the reader knows about one ONNX tensor: its producing IR layer, type and code range."""

    layer: str | None  # None while the tensor is still float (before the input Quant)
    shape: tuple[int, ...]
    type: FixedType | None = None
    lo: int = 0
    hi: int = 0
    # "CHW": the ONNX tensor is the NCHW view of the layer's (H, W, C) data (a Transpose NHWC -> NCHW
    # before a Flatten, or an op qonnx left channels-first); `shape` is always the layer's.
    order: str = "row-major"
    nodes: tuple = ()  # layout-only nodes passed on the way ([name, op_type]), recorded by the next layer


class QonnxReader:
    """Walks the prepared model's nodes in order; HANDLERS[op_type](reader, node) adds IR layers."""

    def __init__(self, model, source: str):
        self.model = model
        self.source = source
        self.consumers: dict[str, list] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.tensors: dict[str, _Tensor] = {}
        self.layers: list[Layer] = []
        self.folded: set[str] = set()  # nodes a handler already covered (a bias Add after MatMul)

    # --- helpers the handlers share ---
    def fail(self, node, why: str) -> UnsupportedError:
        return UnsupportedError(f"hwgen, {self.source}: node {node.name!r} ({node.op_type}): {why}; "
                                f"supported: {', '.join(SUPPORTED_OPS)}")

    def shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.model.get_tensor_shape(tensor)
        if shape is None:
            raise DataError(f"{self.source}: tensor {tensor!r} has no shape after shape inference")
        return tuple(int(d) for d in shape)[1:]

    def is_constant(self, tensor: str) -> bool:
        """An initializer, or a Quant of an initializer (quantized weights and biases)."""
        if self.model.get_initializer(tensor) is not None:
            return True
        producer = self.model.find_producer(tensor)
        return (producer is not None and producer.op_type == "Quant"
                and self.model.get_initializer(producer.input[0]) is not None)

    def data_input(self, node) -> _Tensor:
        """The node's (single) non-constant input, which must be quantized already."""
        tensor = self.tensors[node.input[0]]
        if tensor.type is None:
            raise self.fail(node, "the model input must be quantized first (Brevitas QuantIdentity with a "
                                  "fixed-point quantizer at the input)")
        if tensor.order != "row-major" and node.op_type not in LAYOUT_FREE:
            raise self.fail(node, "reads a tensor transposed to channels-first")
        return tensor

    def ir_shape(self, tensor: str, order: str) -> tuple[int, ...]:
        """The layer shape of an ONNX tensor: (H, W, C) for the NCHW view of channels-last data."""
        shape = self.shape(tensor)
        return (shape[1], shape[2], shape[0]) if order == "CHW" and len(shape) == 3 else shape

    def data_input_at(self, node, index: int) -> _Tensor:
        """Input `index` of a multi-input node, which must be quantized and channels-last."""
        tensor = self.tensors[node.input[index]]
        if tensor.type is None:
            raise self.fail(node, "the model input must be quantized first (Brevitas QuantIdentity with a "
                                  "fixed-point quantizer at the input)")
        return tensor

    def add_merge(self, node, op: Op, srcs: list, result_type: FixedType, lo: int, hi: int) -> Layer:
        """Append a layer of several inputs (ADD, CONCAT) named after `node`; they share one layout."""
        order = srcs[0].order
        if any(t.order != order for t in srcs):
            raise self.fail(node, "its inputs are in different layouts (channels-first and channels-last)")
        shapes = tuple(self.tensors_layer_shape(t) for t in srcs)
        passed = [list(n) for t in srcs for n in t.nodes]
        layer = Layer(node.name, op, tuple(t.layer for t in srcs), shapes, self.ir_shape(node.output[0], order),
                      input_type=srcs[0].type, result_type=result_type,
                      attrs={"onnx_nodes": [*passed, [node.name, node.op_type]]})
        self.layers.append(layer)
        self.tensors[node.output[0]] = _Tensor(layer.name, layer.out_shape, result_type, lo, hi, order)
        return layer

    def add_layer(self, node, op: Op, src: _Tensor, out_tensor: str, result_type: FixedType, lo: int, hi: int,
                  nodes: tuple = (), out_shape: tuple | None = None, **fields) -> Layer:
        """Append a one-input layer named after `node` and record its output tensor."""
        order = src.order if op in (Op.QUANT, Op.RELU, Op.MAXPOOL2D, Op.AVGPOOL2D) else "row-major"
        layer = Layer(node.name, op, (src.layer,), (self.tensors_layer_shape(src),),
                      out_shape or self.ir_shape(out_tensor, order),
                      input_type=src.type, result_type=result_type, **fields)
        layer.attrs["onnx_nodes"] = [list(n) for n in (*src.nodes, (node.name, node.op_type), *nodes)]
        self.layers.append(layer)
        self.tensors[out_tensor] = _Tensor(layer.name, layer.out_shape, result_type, lo, hi, order)
        return layer

    def tensors_layer_shape(self, src: _Tensor) -> tuple[int, ...]:
        """The producing layer's output shape (a transposed view still reads the layer's own tensor)."""
        return next(layer.out_shape for layer in reversed(self.layers) if layer.name == src.layer)

    def quant_params(self, node) -> tuple[FixedType, int]:
        """(type, exponent k of the scale 2**k) of a Quant node; unsupported forms are errors."""
        scale = self.model.get_initializer(node.input[1])
        zero = self.model.get_initializer(node.input[2])
        bits = self.model.get_initializer(node.input[3])
        if scale is None or zero is None or bits is None:
            raise self.fail(node, "scale, zero point and bit width must be constant initializers")
        scale = np.asarray(scale, dtype=np.float64).ravel()
        if scale.size != 1 and not np.all(scale == scale[0]):
            raise self.fail(node, "per-channel scales are not supported (use per-tensor fixed-point quantizers, "
                                  "e.g. Brevitas Int8WeightPerTensorFixedPoint)")
        exponent = po2_exponent(float(scale[0]))
        if exponent is None:
            raise self.fail(node, f"scale {float(scale[0])!r} is not a power of two (use Brevitas *FixedPoint "
                                  "quantizers so the scale is 2**k)")
        if np.any(np.asarray(zero) != 0):
            raise self.fail(node, "zero point must be 0")
        bits = np.asarray(bits).ravel()
        if bits.size != 1 or bits[0] != int(bits[0]) or bits[0] < 2:
            raise self.fail(node, f"bit width must be one integer >= 2, got {bits.tolist()}")
        width = int(bits[0])
        mode = str(_attr(node, "rounding_mode", "ROUND")).upper()
        if mode not in ROUNDING:
            raise self.fail(node, f"rounding mode {mode} has no ap_fixed equivalent; accepted: {', '.join(ROUNDING)}")
        signed = bool(_attr(node, "signed", 1))
        narrow = bool(_attr(node, "narrow", 0))
        if narrow and not signed:
            raise self.fail(node, "narrow range is only supported for signed quantizers")
        return FixedType(signed, width, width + exponent, ROUNDING[mode], "SAT_SYM" if narrow else "SAT"), exponent

    def constant_codes(self, tensor: str, consumer) -> tuple[np.ndarray, FixedType]:
        """Integer codes and type of a constant input (weights/bias): a Quant of an initializer."""
        from qonnx.custom_op.general.quant import quant

        producer = self.model.find_producer(tensor)
        if producer is None:
            value = self.model.get_initializer(tensor)
            if value is None:
                raise self.fail(consumer, f"input {tensor!r} is neither a constant nor quantized")
            return self.exact_codes(np.asarray(value, dtype=np.float64), consumer, tensor)
        if producer.op_type != "Quant":
            raise self.fail(consumer, f"constant input {tensor!r} comes from a {producer.op_type}, expected a Quant")
        raw = self.model.get_initializer(producer.input[0])
        if raw is None:
            raise self.fail(producer, "expected a Quant of a constant initializer")
        ftype, exponent = self.quant_params(producer)
        # The very function QONNX's executor runs, on the node's own parameters.
        q = quant(np.asarray(raw, dtype=np.float64), *(self.model.get_initializer(t) for t in producer.input[1:4]),
                  int(ftype.signed), int(ftype.saturation == "SAT_SYM"), str(_attr(producer, "rounding_mode", "ROUND")))
        codes = np.asarray(q, dtype=np.float64) / 2.0 ** exponent
        if not np.all(codes == np.round(codes)):
            raise self.fail(producer, "quantized constant is not on the integer grid")
        return codes.astype(np.int64), ftype

    def exact_codes(self, values: np.ndarray, consumer, tensor: str) -> tuple[np.ndarray, FixedType]:
        """A float constant without a Quant: accepted only when it is dyadic (exact in fixed point)."""
        for frac in range(33):
            codes = values * 2.0 ** frac
            if np.all(codes == np.round(codes)):
                codes = codes.astype(np.int64)
                lo, hi = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
                t = FixedType.holding(min(lo, 0), max(hi, 0), frac)
                return codes, FixedType(t.signed, t.width, t.integer, "RND_CONV", "SAT")
        raise self.fail(consumer, f"constant {tensor!r} is float and not exactly representable in fixed point; "
                                  "quantize it (e.g. Brevitas Int16Bias)")

    def sole_consumer(self, tensor: str):
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None

    # --- the walk ---
    def read(self) -> Graph:
        graph = self.model.graph
        inputs = [i for i in graph.input if self.model.get_initializer(i.name) is None]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise UnsupportedError(f"hwgen: {self.source}: the accelerator takes one input and one output tensor, "
                                   f"the model has {len(inputs)} inputs and {len(graph.output)} outputs")
        in_tensor = self.input_tensor = inputs[0].name
        self.tensors[in_tensor] = _Tensor(None, self.shape(in_tensor))
        for node in graph.node:
            if node.name in self.folded or (node.op_type == "Quant" and self.is_constant(node.output[0])):
                continue  # covered by another layer; constants are read by their consumer
            HANDLERS[node.op_type](self, node)
        out_tensor = graph.output[0].name
        out = self.tensors.get(out_tensor)
        if not self.layers or self.layers[0].op != Op.INPUT:
            raise UnsupportedError(f"hwgen: {self.source}: the model input is never quantized (add a QuantIdentity)")
        if out is None or out.layer is None:
            raise DataError(f"{self.source}: the output {out_tensor!r} is not computed from the input")
        if out.order != "row-major":
            raise UnsupportedError(f"hwgen: {self.source}: the output is transposed by {out.nodes[-1][0]!r}; "
                                   "the accelerator's output is channels-last")
        used = {i for layer in self.layers for i in layer.inputs} | {out.layer}
        dead = [layer for layer in self.layers if layer.name not in used]
        if dead:
            raise UnsupportedError(f"hwgen: {self.source}: the result of node {dead[0].name!r} reaches no output "
                                   "(a branch that ends nowhere)")
        channels_last = any(node.domain.endswith("channels_last") for node in graph.node)
        in_shape = self.layers[0].out_shape
        nchw = (in_shape[2], in_shape[0], in_shape[1]) if len(in_shape) == 3 and channels_last else in_shape
        last = next(layer for layer in self.layers if layer.name == out.layer)
        def layout(shape: tuple[int, ...]) -> str:
            return "flat" if len(shape) != 3 else ("NHWC" if channels_last else "NCHW")

        graph_ir = Graph(
            name=Path(self.source).name.split(".")[0], layers=self.layers,
            input=IOSpec(self.layers[0].name, in_shape, layout(in_shape), self.layers[0].result_type),
            output=IOSpec(last.name, last.out_shape, layout(last.out_shape), last.result_type),
            attrs={"source": self.source, "input_shape_nchw": list(nchw), "channels_last": channels_last,
                   "input_tensor": in_tensor, "output_tensor": out_tensor, "output_range": [out.lo, out.hi]})
        return graph_ir.validate()


# --- one handler per ONNX operator ---
# Operators that may read the NCHW view of channels-last data (they do not mix H, W and C, or say how).
LAYOUT_FREE = ("Flatten", "Reshape", "Quant", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool")
Handler = Callable[[QonnxReader, object], None]


def _identity(r: QonnxReader, node) -> None:
    r.tensors[node.output[0]] = r.tensors[node.input[0]]


def _quant(r: QonnxReader, node) -> None:
    src = r.tensors[node.input[0]]
    ftype, _ = r.quant_params(node)
    if src.type is None:  # the input Quant: its grid is the accelerator's input encoding
        if r.layers:
            raise r.fail(node, "a second float input path; the accelerator has one quantized input")
        layer = Layer(r.input_tensor, Op.INPUT, (), (), r.shape(node.output[0]), result_type=ftype,
                      attrs={"onnx_nodes": [[node.name, node.op_type]]})
        r.layers.append(layer)
        r.tensors[node.output[0]] = _Tensor(layer.name, layer.out_shape, ftype, ftype.min_code, ftype.max_code)
        return
    src = r.data_input(node)
    shift = ftype.frac - src.type.frac
    lo = max(ftype.min_code, min(_shift_floor(src.lo, shift), ftype.max_code))
    hi = min(ftype.max_code, max(_shift_ceil(src.hi, shift), ftype.min_code))
    r.add_layer(node, Op.QUANT, src, node.output[0], ftype, lo, hi, out_shape=r.tensors_layer_shape(src))


def _transpose(r: QonnxReader, node) -> None:
    src = r.tensors[node.input[0]]
    perm = list(_attr(node, "perm", []))
    shape = src.shape
    if src.type is None:
        raise r.fail(node, "the model input must be quantized first (Brevitas QuantIdentity with a "
                           "fixed-point quantizer at the input)")
    if len(shape) == 3 and perm == [0, 3, 1, 2] and src.order == "row-major":
        order = "CHW"  # back to the NCHW order a Flatten of the trained model expects
    elif len(shape) == 3 and perm == [0, 2, 3, 1] and src.order == "CHW":
        order = "row-major"  # and back to channels-last
    elif src.order == "row-major" and sorted(perm) == list(range(len(perm))) and [shape[p - 1] for p in perm[1:] if shape[p - 1] != 1] == \
            [d for d in shape if d != 1]:
        order = src.order  # moves only axes of size 1: the data order does not change
    else:
        raise r.fail(node, f"transpose {perm} of a {list(shape)} tensor changes the data order; only NHWC -> NCHW "
                           "before a Flatten is supported")
    shape = r.shape(node.output[0]) if order == src.order else src.shape
    r.tensors[node.output[0]] = _Tensor(src.layer, shape, src.type, src.lo, src.hi, order,
                                        (*src.nodes, (node.name, node.op_type)))


def _conv(r: QonnxReader, node) -> None:
    src = r.data_input(node)
    shape = src.shape
    if int(_attr(node, "group", 1)) != 1:
        raise r.fail(node, "grouped/depthwise convolutions are not supported")
    if any(d != 1 for d in _attr(node, "dilations", [1, 1])):
        raise r.fail(node, "dilated convolutions are not supported")
    kernel = tuple(_attr(node, "kernel_shape"))
    if len(kernel) != 2 or len(shape) != 3:
        raise r.fail(node, "only 2D convolutions on (H, W, C) tensors are supported")
    if str(_attr(node, "auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        raise r.fail(node, "auto_pad SAME_* is not supported; export explicit pads")
    weights, wtype = r.constant_codes(node.input[1], node)
    if weights.ndim != 4 or weights.shape[-1] != shape[-1]:
        raise r.fail(node, f"weights of shape {weights.shape} do not match the input {shape}")
    bias = r.constant_codes(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
    pads = _attr(node, "pads", [0, 0, 0, 0])
    attrs = {"kernel": [int(kernel[0]), int(kernel[1])], "stride": [int(s) for s in _attr(node, "strides", [1, 1])],
             "pads": [int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])]}
    types, lo, hi = _accumulator(src.type, wtype, weights.reshape(weights.shape[0], -1), src.lo, src.hi, bias,
                                 r, node)
    r.add_layer(node, Op.CONV2D, src, node.output[0], types["result_type"], lo, hi, weight_type=wtype,
                weight_codes=weights, bias_type=types["bias_type"], accum_type=types["accum_type"],
                bias_codes=types["bias_codes"]).attrs.update(attrs)


def _matmul(r: QonnxReader, node) -> None:
    src = r.data_input(node)
    if len(src.shape) != 1:
        raise r.fail(node, f"MatMul on a tensor of shape {src.shape}: flatten to (1, n) first")
    weights, wtype = r.constant_codes(node.input[1], node)
    if weights.ndim != 2 or weights.shape[0] != src.shape[0]:
        raise r.fail(node, f"weights of shape {weights.shape} do not match the input {src.shape}")
    bias, out, folded = None, node.output[0], ()
    follower = r.sole_consumer(out)
    if follower is not None and follower.op_type == "Add":
        const = [t for t in follower.input if t != out]
        if len(const) != 1 or not r.is_constant(const[0]):
            raise r.fail(follower, "only a constant bias added after a MatMul/Gemm is supported")
        bias = r.constant_codes(const[0], follower)
        r.folded.add(follower.name)
        out, folded = follower.output[0], ((follower.name, follower.op_type),)
    types, lo, hi = _accumulator(src.type, wtype, weights.T, src.lo, src.hi, bias, r, node)
    r.add_layer(node, Op.DENSE, src, out, types["result_type"], lo, hi, nodes=folded, weight_type=wtype,
                weight_codes=weights, bias_type=types["bias_type"], accum_type=types["accum_type"],
                bias_codes=types["bias_codes"])


def _relu(r: QonnxReader, node) -> None:
    src = r.data_input(node)
    rtype = FixedType.holding(0, max(src.hi, 0), src.type.frac)
    r.add_layer(node, Op.RELU, src, node.output[0], rtype, max(src.lo, 0), max(src.hi, 0),
                out_shape=r.tensors_layer_shape(src))


def _maxpool(r: QonnxReader, node) -> None:
    src = r.data_input(node)
    kernel = tuple(_attr(node, "kernel_shape"))
    if any(p != 0 for p in _attr(node, "pads", [0, 0, 0, 0])) or int(_attr(node, "ceil_mode", 0)):
        raise r.fail(node, "padded or ceil-mode max pooling is not supported")
    layer = r.add_layer(node, Op.MAXPOOL2D, src, node.output[0], src.type, src.lo, src.hi)
    layer.attrs.update(kernel=[int(kernel[0]), int(kernel[1])],
                       stride=[int(s) for s in _attr(node, "strides", list(kernel))], pads=[0, 0, 0, 0])


def _flatten(r: QonnxReader, node) -> None:
    src = r.data_input(node)
    if len(r.shape(node.output[0])) != 1:
        raise r.fail(node, f"reshape to {list(r.shape(node.output[0]))}: only flattening to (1, n) is supported")
    layer = r.add_layer(node, Op.FLATTEN, src, node.output[0], src.type, src.lo, src.hi)
    if src.order != "row-major":
        layer.attrs["order"] = src.order


def _add(r: QonnxReader, node) -> None:
    """A sum of two tensors (a residual add): exact, in the narrowest type holding every sum."""
    if any(r.is_constant(t) for t in node.input):
        src = r.tensors.get(node.input[0]) or r.tensors.get(node.input[1])
        producer = next((layer for layer in r.layers if src is not None and layer.name == src.layer), None)
        if producer is not None and producer.op == Op.CONV2D:
            raise r.fail(node, "a constant added after a convolution (simplify's per-position bias map) "
                               "has no hardware layer; simplify with simplify.bias_maps: refuse, or train "
                               "so that pruned neurons of padded convolutions carry no constant")
        raise r.fail(node, "only a constant bias right after a MatMul/Gemm is supported")
    srcs = [r.data_input_at(node, i) for i in range(len(node.input))]
    frac = max(t.type.frac for t in srcs)
    lo = sum(t.lo << (frac - t.type.frac) for t in srcs)
    hi = sum(t.hi << (frac - t.type.frac) for t in srcs)
    r.add_merge(node, Op.ADD, srcs, FixedType.holding(min(lo, 0), max(hi, 0), frac), lo, hi)


def _concat(r: QonnxReader, node) -> None:
    """Channel concatenation: every input cast exactly to one type holding them all."""
    srcs = [r.data_input_at(node, i) for i in range(len(node.input))]
    rank = len(srcs[0].shape) + 1
    axis = int(_attr(node, "axis", 1)) % rank
    if axis != (1 if srcs[0].order == "CHW" else rank - 1):
        raise r.fail(node, f"concatenation along axis {axis}: only the channel axis is supported")
    frac = max(t.type.frac for t in srcs)
    lo = min(t.lo << (frac - t.type.frac) for t in srcs)
    hi = max(t.hi << (frac - t.type.frac) for t in srcs)
    r.add_merge(node, Op.CONCAT, srcs, FixedType.holding(min(lo, 0), max(hi, 0), frac), lo, hi)


def _average(r: QonnxReader, node, op: Op, count: int, src, attrs: dict) -> None:
    """sum / count with count a power of two: exact with log2(count) more fractional bits."""
    k = count.bit_length() - 1
    if count != 1 << k:
        raise r.fail(node, f"an average over {count} values is not exact in fixed point (only powers of two are)")
    frac = src.type.frac + k
    lo, hi = src.lo * count, src.hi * count  # the mean's codes at frac: the sum's codes at the input's
    # The accumulator adds the terms at frac (each code times count) from 0 before dividing by count.
    acc = FixedType.holding(min(src.lo, 0) * count * count, max(src.hi, 0) * count * count, frac)
    # GLOBAL_AVGPOOL gives (C,): ONNX's (1, 1, C) without the unit axes.
    out_shape = (src.shape[-1],) if op == Op.GLOBAL_AVGPOOL else None
    layer = r.add_layer(node, op, src, node.output[0], FixedType.holding(lo, hi, frac), lo, hi,
                        out_shape=out_shape, accum_type=acc)
    layer.attrs.update(attrs)


def _avgpool(r: QonnxReader, node) -> None:
    src = r.data_input(node)
    kernel = [int(k) for k in _attr(node, "kernel_shape")]
    pads = [int(p) for p in _attr(node, "pads", [0, 0, 0, 0])]
    if any(pads) or int(_attr(node, "ceil_mode", 0)):
        raise r.fail(node, "padded or ceil-mode average pooling is not supported")
    _average(r, node, Op.AVGPOOL2D, kernel[0] * kernel[1], src,
             {"kernel": kernel, "stride": [int(s) for s in _attr(node, "strides", kernel)], "pads": pads})


def _global_avgpool(r: QonnxReader, node) -> None:
    src = r.data_input(node)  # qonnx may leave it channels-first: the mean over H and W is the same
    if len(src.shape) != 3:
        raise r.fail(node, f"global average pooling of a {list(src.shape)} tensor; expected (H, W, C)")
    _average(r, node, Op.GLOBAL_AVGPOOL, src.shape[0] * src.shape[1], src, {})


def _gemm(r: QonnxReader, node) -> None:
    raise r.fail(node, "this Gemm cannot become MatMul + Add (transA, or alpha/beta != 1?)")


HANDLERS: dict[str, Handler] = {
    "Quant": _quant, "Conv": _conv, "MatMul": _matmul, "Gemm": _gemm, "Add": _add, "Relu": _relu,
    "MaxPool": _maxpool, "Flatten": _flatten, "Reshape": _flatten, "Transpose": _transpose,
    "Concat": _concat, "AveragePool": _avgpool, "GlobalAveragePool": _global_avgpool,
    "Identity": _identity, "Dropout": _identity,
}


def read_qonnx(model_or_path, source: str | None = None) -> QonnxGraph:
    """Read a QONNX model (path or ModelWrapper) into the IR; unsupported forms raise UnsupportedError."""
    source = source or (Path(model_or_path).name if isinstance(model_or_path, (str, Path)) else "qonnx model")
    model = prepare_qonnx(model_or_path)
    return QonnxGraph(QonnxReader(model, source).read(), model, source)


def _shift_floor(code: int, shift: int) -> int:
    """floor(code * 2**shift) for integers."""
    return code << shift if shift >= 0 else code >> -shift


def _shift_ceil(code: int, shift: int) -> int:
    return -_shift_floor(-code, shift)


def _accumulator(input_type: FixedType, weight_type: FixedType, per_output: np.ndarray, x_lo: int, x_hi: int,
                 bias, reader, node) -> tuple[dict, int, int]:
    """Bias, accumulator and result types of a conv/dense layer, and its output code range.

    per_output: (n_out, n_terms) integer weight codes; inputs x lie in [x_lo, x_hi] (zero added:
    padding). The accumulator holds every partial sum of the products and the bias in any order
    (backends' kernels differ in order), so it never wraps; the result keeps it whole, leaving the
    only rounding to the next Quant's cast, as in QONNX.
    """
    prod_frac = input_type.frac + weight_type.frac
    if bias is None:
        codes, frac, shift_bias = np.zeros(per_output.shape[0], dtype=np.int64), prod_frac, 0
    else:
        codes, btype = bias
        codes = codes.reshape(-1)
        if codes.size != per_output.shape[0]:
            raise reader.fail(node, f"bias of {codes.size} values for {per_output.shape[0]} outputs")
        frac = max(prod_frac, btype.frac)
        shift_bias = frac - btype.frac
    shift_prod = frac - prod_frac
    x_lo, x_hi = min(x_lo, 0), max(x_hi, 0)
    w = per_output.astype(object if max(-x_lo, x_hi) >= 2 ** 24 else np.int64)
    lo_terms = np.minimum(w * x_lo, w * x_hi).sum(axis=1) * (1 << shift_prod)
    hi_terms = np.maximum(w * x_lo, w * x_hi).sum(axis=1) * (1 << shift_prod)
    b = codes.astype(np.int64) * (1 << shift_bias)
    acc = FixedType.holding(int((lo_terms + np.minimum(b, 0)).min()), int((hi_terms + np.maximum(b, 0)).max()), frac)
    # A layer without bias gets a zero bias in the accumulator's type: no extra cast.
    types = {"accum_type": acc, "result_type": acc, "bias_type": bias[1] if bias is not None else acc,
             "bias_codes": codes if bias is not None else None}
    return types, int((lo_terms + b).min()), int((hi_terms + b).max())

"""Read a QONNX model into the layer list hls4ml will build, with exact fixed-point types.

The model is cleaned (qonnx cleanup), made channels-last with the input channels-last too (the
host transposes NCHW -> NHWC, a free numpy view, instead of a transpose buffer in hardware), and
its Gemm nodes become MatMul + Add: the graph hls4ml's ONNX converter expects.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from potatura.errors import DataError, UnsupportedError
from potatura.hw.types import ROUNDING, FixedType, po2_exponent

SUPPORTED_OPS = ("Quant (power-of-two scale, zero point 0)", "Conv (2D, group 1, dilation 1)",
                 "Gemm/MatMul (+ Add bias)", "Relu", "MaxPool (no padding)", "Flatten/Reshape to (1, n)",
                 "Transpose (layout)", "Identity/Dropout")


@dataclass
class Layer:
    """One hls4ml layer whose types potatura sets. Shapes are channels-last, without batch."""

    kind: str  # conv2d | dense | relu | quant | maxpool2d | flatten | transpose
    onnx_name: str  # node name in the converted graph: the hls4ml config key
    hls_name: str  # the layer's name in the hls4ml model after its optimizers run
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    input_type: FixedType
    result_type: FixedType
    weight_type: Optional[FixedType] = None
    bias_type: Optional[FixedType] = None
    accum_type: Optional[FixedType] = None
    weight_codes: Optional[np.ndarray] = field(default=None, repr=False)  # conv (O,KH,KW,I); dense (n_in,n_out)
    bias_codes: Optional[np.ndarray] = field(default=None, repr=False)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    merged: tuple[str, ...] = ()  # ONNX nodes folded into this layer (a Quant after a Relu, a bias Add)

    @property
    def has_weights(self) -> bool:
        return self.kind in ("conv2d", "dense")

    @property
    def n_in(self) -> int:
        """Inputs of one matrix-vector product (hls4ml get_layer_mult_size)."""
        if self.kind == "conv2d":
            return int(self.kernel[0] * self.kernel[1] * self.in_shape[-1])
        if self.kind == "dense":
            return int(self.weight_codes.shape[0])
        return 0

    @property
    def n_out(self) -> int:
        if self.kind == "conv2d":
            return int(self.weight_codes.shape[0])
        if self.kind == "dense":
            return int(self.weight_codes.shape[1])
        return 0

    @property
    def n_weights(self) -> int:
        return self.n_in * self.n_out

    @property
    def n_zeros(self) -> int:
        return int(np.count_nonzero(self.weight_codes == 0)) if self.has_weights else 0

    @property
    def out_pixels(self) -> int:
        """Matrix-vector products per sample: output pixels of a conv, 1 for a dense layer."""
        if self.kind == "conv2d":
            return int(self.out_shape[0] * self.out_shape[1])
        return 1

    def precisions(self) -> dict[str, str]:
        """hls4ml config 'Precision' entries for this layer."""
        out = {"result": self.result_type.hls()}
        if self.has_weights:
            out.update(weight=self.weight_type.hls(), bias=self.bias_type.hls(), accum=self.accum_type.hls())
        if self.kind == "maxpool2d":
            out["accum"] = self.input_type.hls()
        return out


@dataclass
class QuantizedNetwork:
    """A QONNX model read for hls4ml: the converted graph, its layers and its I/O contract."""

    model: object  # qonnx ModelWrapper, channels-last: what hls4ml converts
    source: str
    input_name: str  # hls4ml's name of the input layer
    input_shape_nchw: tuple[int, ...]  # the QONNX model's input (without batch)
    input_shape: tuple[int, ...]  # the accelerator's input, channels-last
    input_type: FixedType
    input_quant: str  # the Quant node that quantizes the input
    output_shape: tuple[int, ...]
    output_type: FixedType
    layers: list[Layer]
    passthrough: dict[str, str] = field(default_factory=dict)  # other config keys -> result precision
    channels_last: bool = True  # False: the input goes in as the QONNX model takes it (MLPs)

    @property
    def has_conv(self) -> bool:
        return any(layer.kind == "conv2d" for layer in self.layers)

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
            row = {"layer": layer.hls_name, "kind": layer.kind, "in": list(layer.in_shape),
                   "out": list(layer.out_shape), "result": layer.result_type.hls()}
            if layer.has_weights:
                row.update(weight=layer.weight_type.hls(), bias=layer.bias_type.hls(),
                           accum=layer.accum_type.hls(), n_in=layer.n_in, n_out=layer.n_out,
                           zeros=layer.n_zeros)
            rows.append(row)
        return rows


def hls_layer_name(name: str, class_name: str = "") -> str:
    """The name hls4ml's ONNX parser gives a node or tensor ('.' -> '_', no leading digit)."""
    from hls4ml.converters.onnx_to_hls import replace_char_inconsitency, sanitize_layer_name

    layer = {"name": replace_char_inconsitency(name), "class_name": class_name}
    sanitize_layer_name(layer)
    return layer["name"]


def prepare_qonnx(model_or_path):
    """Clean a QONNX model and convert it to the channels-last MatMul form hls4ml converts.

    Models without Conv/MaxPool stay as they are (an MLP's input is already a vector). Uses the quant stage's passes (qonnx cleanup, ConvertToChannelsLastAndClean with the input made
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
        except Exception as exc:
            raise DataError(f"{path}: not a readable ONNX model: {exc}") from None
    else:
        model = model_or_path
    _check_ops(model)
    if not any(node.op_type in ("Conv", "MaxPool") for node in model.graph.node):
        # No spatial layer: keep the input as it is, so Flatten sees the NCHW order it was trained on.
        return gemm_to_matmul(clean(model))
    return gemm_to_matmul(to_channels_last(model))


_KNOWN = {"Quant", "Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "Flatten", "Reshape", "Transpose",
          "Identity", "Dropout"}


def _check_ops(model) -> None:
    for node in model.graph.node:
        if node.op_type not in _KNOWN:
            raise UnsupportedError(
                f"hwgen (hls4ml backend): node {node.name or node.output[0]!r} is a {node.op_type}, which potatura "
                f"cannot map to hls4ml bit-exactly; supported: {', '.join(SUPPORTED_OPS)}")


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


class _Reader:
    def __init__(self, model, source: str):
        self.model = model
        self.source = source
        self.graph = model.graph
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def fail(self, node, why: str) -> UnsupportedError:
        return UnsupportedError(f"hwgen (hls4ml backend), {self.source}: node {node.name!r} ({node.op_type}): {why}; "
                                f"supported: {', '.join(SUPPORTED_OPS)}")

    def shape(self, tensor: str) -> tuple[int, ...]:
        shape = self.model.get_tensor_shape(tensor)
        if shape is None:
            raise DataError(f"{self.source}: tensor {tensor!r} has no shape after shape inference")
        return tuple(int(d) for d in shape)

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
        for frac in range(0, 33):
            codes = values * 2.0 ** frac
            if np.all(codes == np.round(codes)):
                codes = codes.astype(np.int64)
                lo, hi = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
                t = FixedType.holding(min(lo, 0), max(hi, 0), frac)
                return codes, FixedType(t.signed, t.width, t.integer, "RND_CONV", "SAT")
        raise self.fail(consumer, f"constant {tensor!r} is float and not exactly representable in fixed point; "
                                  "quantize it (e.g. Brevitas Int16Bias)")

    def next_node(self, tensor: str):
        users = self.consumers.get(tensor, [])
        if len(users) > 1:
            raise self.fail(users[0], f"tensor {tensor!r} feeds {len(users)} nodes: branching graphs "
                                      "(residual adds, concatenations) are not supported by the hls4ml backend")
        return users[0] if users else None


def read_network(model_or_path, source: Optional[str] = None) -> QuantizedNetwork:
    """Read a QONNX model (path or ModelWrapper) into a QuantizedNetwork for the hls4ml backend."""
    source = source or (Path(model_or_path).name if isinstance(model_or_path, (str, Path)) else "qonnx model")
    model = prepare_qonnx(model_or_path)
    reader = _Reader(model, source)
    graph = model.graph
    inputs = [i for i in graph.input if model.get_initializer(i.name) is None]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedError(f"hwgen: {source}: the accelerator takes one input and one output tensor, "
                               f"the model has {len(inputs)} inputs and {len(graph.output)} outputs")
    in_tensor = inputs[0].name
    in_shape = reader.shape(in_tensor)[1:]

    layers: list[Layer] = []
    passthrough: dict[str, str] = {}
    tensor, shape = in_tensor, in_shape
    cur_type: Optional[FixedType] = None  # type of `tensor`; None while it is still float
    input_type: Optional[FixedType] = None
    input_quant = ""
    lo = hi = 0  # code range of `tensor`

    node = reader.next_node(tensor)
    while node is not None:
        op = node.op_type
        out = node.output[0]
        out_shape = reader.shape(out)[1:]
        if op in ("Identity", "Dropout"):
            pass
        elif cur_type is None and op != "Quant":
            raise reader.fail(node, "the model input must be quantized first (Brevitas QuantIdentity with a "
                                    "fixed-point quantizer at the input)")
        elif op == "Quant":
            ftype, _ = reader.quant_params(node)
            passthrough[hls_layer_name(node.name, op)] = ftype.hls()
            if cur_type is None:
                input_type, input_quant, lo, hi = ftype, node.name, ftype.min_code, ftype.max_code
            else:
                shift = ftype.frac - cur_type.frac
                new_lo = max(ftype.min_code, min(_shift_floor(lo, shift), ftype.max_code))
                new_hi = min(ftype.max_code, max(_shift_ceil(hi, shift), ftype.min_code))
                prev = layers[-1] if layers else None
                if prev is not None and prev.kind == "relu" and not prev.merged:
                    # hls4ml folds Relu -> Quant into the Relu's output type.
                    prev.result_type = ftype
                    prev.merged = (node.name,)
                else:
                    layers.append(Layer("quant", node.name, hls_layer_name(node.name, op) + "_act", shape, out_shape,
                                        cur_type, ftype))
                lo, hi = new_lo, new_hi
            cur_type = ftype
        elif op == "Transpose":
            passthrough[hls_layer_name(node.name, op)] = cur_type.hls()
        elif op == "Conv":
            if int(_attr(node, "group", 1)) != 1:
                raise reader.fail(node, "grouped/depthwise convolutions are not supported")
            if any(d != 1 for d in _attr(node, "dilations", [1, 1])):
                raise reader.fail(node, "dilated convolutions are not supported")
            kernel = tuple(_attr(node, "kernel_shape"))
            if len(kernel) != 2 or len(shape) != 3:
                raise reader.fail(node, "only 2D convolutions on (H, W, C) tensors are supported")
            if str(_attr(node, "auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
                raise reader.fail(node, "auto_pad SAME_* is not supported; export explicit pads")
            weights, wtype = reader.constant_codes(node.input[1], node)
            if weights.ndim != 4 or weights.shape[-1] != shape[-1]:
                raise reader.fail(node, f"weights of shape {weights.shape} do not match the input {shape}")
            bias = reader.constant_codes(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
            layer = Layer("conv2d", node.name, "Conv2D_" + hls_layer_name(node.name, op), shape, out_shape,
                          cur_type, cur_type, weight_type=wtype, weight_codes=weights)
            layer.kernel = (int(kernel[0]), int(kernel[1]))
            layer.stride = tuple(int(s) for s in _attr(node, "strides", [1, 1]))
            pads = _attr(node, "pads", [0, 0, 0, 0])
            layer.pads = (int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3]))
            lo, hi = _fix_accumulator(layer, weights.reshape(weights.shape[0], -1), lo, hi, bias, reader, node)
            layers.append(layer)
            cur_type = layer.result_type
        elif op == "MatMul":
            if len(shape) != 1:
                raise reader.fail(node, f"MatMul on a tensor of shape {shape}: flatten to (1, n) first")
            weights, wtype = reader.constant_codes(node.input[1], node)
            if weights.ndim != 2 or weights.shape[0] != shape[0]:
                raise reader.fail(node, f"weights of shape {weights.shape} do not match the input {shape}")
            layer = Layer("dense", node.name, "Dense_" + hls_layer_name(node.name, op), shape, out_shape,
                          cur_type, cur_type, weight_type=wtype, weight_codes=weights)
            bias = None
            follower = reader.next_node(out)
            if follower is not None and follower.op_type == "Add":
                const = [t for t in follower.input if t != out]
                if len(const) != 1:
                    raise reader.fail(follower, "only a constant bias added after a MatMul/Gemm is supported")
                bias = reader.constant_codes(const[0], follower)
                layer.merged = (follower.name,)
                node, out = follower, follower.output[0]
                out_shape = reader.shape(out)[1:]
            lo, hi = _fix_accumulator(layer, weights.T, lo, hi, bias, reader, node)
            if layer.merged:
                passthrough[hls_layer_name(layer.merged[0], "Add")] = layer.result_type.hls()
            layers.append(layer)
            cur_type = layer.result_type
        elif op == "Relu":
            rtype = FixedType.holding(0, max(hi, 0), cur_type.frac)
            layers.append(Layer("relu", node.name, hls_layer_name(node.name, op), shape, out_shape, cur_type, rtype))
            cur_type, lo, hi = rtype, max(lo, 0), max(hi, 0)
        elif op == "MaxPool":
            kernel = tuple(_attr(node, "kernel_shape"))
            if any(p != 0 for p in _attr(node, "pads", [0, 0, 0, 0])) or int(_attr(node, "ceil_mode", 0)):
                raise reader.fail(node, "padded or ceil-mode max pooling is not supported")
            layer = Layer("maxpool2d", node.name, hls_layer_name(node.name, op), shape, out_shape, cur_type, cur_type)
            layer.kernel = (int(kernel[0]), int(kernel[1]))
            layer.stride = tuple(int(s) for s in _attr(node, "strides", list(kernel)))
            layers.append(layer)
        elif op in ("Flatten", "Reshape"):
            if len(out_shape) != 1:
                raise reader.fail(node, f"reshape to {out_shape}: only flattening to (1, n) is supported")
            layers.append(Layer("flatten", node.name, hls_layer_name(node.name, op), shape, out_shape,
                                cur_type, cur_type))
        elif op == "Add":
            constant = any(model.get_initializer(t) is not None or (model.find_producer(t) is not None and
                           model.find_producer(t).op_type == "Quant" and
                           model.get_initializer(model.find_producer(t).input[0]) is not None)
                           for t in node.input if t != tensor)
            if constant and layers and layers[-1].kind == "conv2d":
                raise reader.fail(node, "a constant added after a convolution (simplify's per-position bias map) "
                                        "has no hls4ml layer; simplify with simplify.bias_maps: refuse, or train "
                                        "so that pruned neurons of padded convolutions carry no constant")
            raise reader.fail(node, "only a constant bias right after a MatMul/Gemm is supported (residual adds "
                                    "of two tensors are not)")
        else:  # a Gemm that GemmToMatMul could not convert
            raise reader.fail(node, "this Gemm cannot become MatMul + Add (transA, or alpha/beta != 1?)")
        tensor, shape = out, out_shape
        node = reader.next_node(tensor)

    if tensor != graph.output[0].name:
        raise DataError(f"{source}: the chain of nodes from the input ends at {tensor!r}, not at the output "
                        f"{graph.output[0].name!r}")
    if input_type is None:
        raise UnsupportedError(f"hwgen: {source}: the model input is never quantized (add a QuantIdentity)")
    channels_last = any(node.domain.endswith("channels_last") for node in graph.node)
    nchw = (in_shape[2], in_shape[0], in_shape[1]) if len(in_shape) == 3 and channels_last else tuple(in_shape)
    return QuantizedNetwork(model=model, source=source, input_name=hls_layer_name(in_tensor, "InputLayer"),
                            input_shape_nchw=nchw, input_shape=tuple(in_shape), input_type=input_type,
                            input_quant=input_quant, output_shape=tuple(shape), output_type=cur_type,
                            layers=layers, passthrough=passthrough, channels_last=channels_last)


def _shift_floor(code: int, shift: int) -> int:
    """floor(code * 2**shift) for integers."""
    return code << shift if shift >= 0 else code >> -shift


def _shift_ceil(code: int, shift: int) -> int:
    return -_shift_floor(-code, shift)


def _fix_accumulator(layer: Layer, per_output: np.ndarray, x_lo: int, x_hi: int, bias, reader, node) -> tuple[int, int]:
    """Set bias, accumulator and result types of a conv/dense layer; return the output code range.

    per_output: (n_out, n_terms) integer weight codes; inputs x lie in [x_lo, x_hi] (zero added:
    padding). The accumulator holds every partial sum of the products and the bias in any order
    (hls4ml's kernels differ in order), so it never wraps; the result keeps it whole, leaving the
    only rounding to the next Quant's cast, as in QONNX.
    """
    prod_frac = layer.input_type.frac + layer.weight_type.frac
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
    layer.accum_type = acc
    layer.result_type = acc
    # A layer without bias gets hls4ml's zero bias in the accumulator's type: no extra cast.
    layer.bias_type = bias[1] if bias is not None else acc
    layer.bias_codes = codes if bias is not None else None
    return int((lo_terms + b).min()), int((hi_terms + b).max())

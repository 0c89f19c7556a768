"""QONNX export and the graph passes the hardware stages ask for.

export_qonnx_file writes the cleaned QONNX model (NCHW, batch 1, as Brevitas exports it, after
qonnx's cleanup and shape inference). to_channels_last and gemm_to_matmul are the qonnx passes a
backend may need (hls4ml's io_stream wants channels-last); hwgen calls them on its own copy.
quant_parameters reads every Quant node back out of the graph: scale, zero point, bit width,
signedness and, for power-of-two scales, the fixed-point type <W, I> a backend declares.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from potatura.artifacts import atomic_path
from potatura.errors import PotaturaError

_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _wrapper(model_or_path: Any):
    from qonnx.core.modelwrapper import ModelWrapper

    if isinstance(model_or_path, ModelWrapper):
        return model_or_path
    return ModelWrapper(str(model_or_path))


def clean(model_or_path: Any, batch_size: Optional[int] = None):
    """qonnx cleanup (constant folding that keeps Quant nodes, unique/readable names) and shape
    inference; `batch_size` rewrites the batch dimension (None keeps the exported one)."""
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(_wrapper(model_or_path), override_inpsize=batch_size)
    return model.transform(InferShapes())


def export_qonnx_file(model: torch.nn.Module, input_shape: tuple[int, ...], path: Union[str, Path]) -> Path:
    """Export the Brevitas `model` for inputs [1, *input_shape] to a cleaned QONNX file at `path`."""
    from brevitas.export import export_qonnx

    path = Path(path)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                # The TorchScript exporter (dynamo=False) is the one Brevitas's QONNX handlers target.
                export_qonnx(model, input_t=torch.zeros(1, *input_shape), export_path=str(raw), dynamo=False)
            except Exception as exc:
                raise PotaturaError(f"quant: QONNX export failed: {type(exc).__name__}: {exc}") from exc
        cleaned = clean(raw)
        with atomic_path(path) as out:
            cleaned.save(str(out))
    return path


def to_channels_last(model_or_path: Any):
    """A channels-last (NHWC) copy, input included, as hls4ml's io_stream and FINN expect."""
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean

    model = clean(_wrapper(model_or_path))
    return model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))


def gemm_to_matmul(model_or_path: Any):
    """Replace Gemm by MatMul (+ Add for the bias), for backends without a Gemm layer."""
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul

    import warnings

    with warnings.catch_warnings():
        # qonnx warns for any Gemm opset but 9; the pass is checked against qonnx execution
        # (tests/quant) on the opset Brevitas exports, so the warning is noise for users.
        warnings.filterwarnings("ignore", message="The GemmToMatMul transformation only offers")
        return clean(_wrapper(model_or_path).transform(GemmToMatMul()))


def is_power_of_two(values: np.ndarray) -> bool:
    """True when every value is exactly 2**k for an integer k (float32 scales)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or np.any(v <= 0):
        return False
    mantissa, _ = np.frexp(v)
    return bool(np.all(mantissa == 0.5))


def fixed_point_type(scale: np.ndarray, bit_width: int, signed: bool) -> Optional[dict]:
    """ap_fixed<W, I> (signed) / ap_ufixed<W, I> of integers of `bit_width` bits times a power-of-two
    scale 2**-f: W = bit_width, I = W - f integer bits (sign bit included). Per-channel scales give
    one I per channel. None for scales that are not powers of two."""
    if not is_power_of_two(scale):
        return None
    frac = -np.log2(np.asarray(scale, dtype=np.float64).ravel())
    integer = [int(bit_width - round(f)) for f in frac]
    kind = "ap_fixed" if signed else "ap_ufixed"
    out = {"width": int(bit_width), "integer": integer[0] if len(integer) == 1 else integer, "signed": bool(signed)}
    if len(integer) == 1:
        out["type"] = f"{kind}<{bit_width},{integer[0]}>"
    return out


def quant_parameters(model_or_path: Any) -> dict[str, dict]:
    """Every Quant node of a QONNX graph, keyed by the tensor it produces.

    role: weight | bias | activation (input to the graph or a computed tensor); consumers: the
    nodes reading the quantized tensor.
    """
    from qonnx.util.basic import get_by_name

    model = _wrapper(model_or_path)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for idx, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, idx))
    out = {}
    for node in model.graph.node:
        if node.op_type != "Quant":
            continue
        scale = model.get_initializer(node.input[1])
        zero_point = model.get_initializer(node.input[2])
        bit_width = model.get_initializer(node.input[3])
        if scale is None or zero_point is None or bit_width is None:
            raise PotaturaError(f"quant: Quant node {node.name} has non-constant parameters; cannot describe it")
        signed = bool(get_by_name(node.attribute, "signed").i)
        narrow = bool(get_by_name(node.attribute, "narrow").i)
        rounding = get_by_name(node.attribute, "rounding_mode")
        users = consumers.get(node.output[0], [])
        is_param = model.get_initializer(node.input[0]) is not None
        role = "activation"
        if is_param:
            role = "bias" if any(n.op_type in _WEIGHT_OPS and i == 2 for n, i in users) else "weight"
        bits = int(round(float(np.asarray(bit_width).ravel()[0])))
        entry = {
            "node": node.name,
            "role": role,
            "input": node.input[0],
            "consumers": [{"node": n.name, "op": n.op_type, "input_index": i} for n, i in users],
            "scale": _listify(scale),
            "zero_point": _listify(zero_point),
            "bit_width": bits,
            "signed": signed,
            "narrow": narrow,
            "rounding_mode": rounding.s.decode() if rounding is not None else "ROUND",
            "power_of_two": is_power_of_two(scale),
            "fixed_point": fixed_point_type(scale, bits, signed),
        }
        if is_param:
            entry["shape"] = list(model.get_initializer(node.input[0]).shape)
        out[node.output[0]] = entry
    return out


def _listify(a: np.ndarray) -> Any:
    a = np.asarray(a, dtype=np.float64)
    return float(a.ravel()[0]) if a.size == 1 else a.ravel().tolist()


def weight_layer_biases(model_or_path: Any) -> dict[str, str]:
    """For each Conv/Gemm/MatMul node: how its bias is given (quantized | float | none)."""
    model = _wrapper(model_or_path)
    producers = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type not in _WEIGHT_OPS:
            continue
        if node.op_type == "MatMul":
            # After GemmToMatMul the bias is an Add behind the MatMul; potatura's own files keep Gemm.
            out[node.name] = "none"
            continue
        if len(node.input) < 3 or not node.input[2]:
            out[node.name] = "none"
        else:
            producer = producers.get(node.input[2])
            out[node.name] = "quantized" if producer is not None and producer.op_type == "Quant" else "float"
    return out


def accumulator_bits(max_abs_int: float) -> int:
    """Bits of a signed integer holding values up to max_abs_int in magnitude."""
    return int(math.ceil(math.log2(max_abs_int + 1))) + 1 if max_abs_int > 0 else 2

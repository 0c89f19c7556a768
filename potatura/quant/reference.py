"""The integer reference: the QONNX graph executed by qonnx's own executor.

qonnx runs its Quant nodes in numpy and every standard node through onnxruntime, so this is
an implementation independent of Brevitas's. With power-of-two scales and integer biases every
value is an integer times a power of two and both compute the same floats exactly; this output
is the golden model each hardware stage is compared with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from potatura.errors import DataError


def execute_qonnx(model_or_path: Any, x: np.ndarray, batch_size: int = 256,
                  on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Outputs of the QONNX graph for float32 inputs `x` [N, C, H, W] (the layout the graph takes).

    The graph's batch dimension is rewritten to `batch_size`; the last batch is zero-padded and
    the padding dropped from the result. Returns float32 [N, *output shape].
    """
    from qonnx.core.onnx_exec import execute_onnx

    from potatura.quant.export import _wrapper, clean

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        raise DataError("quant: no samples to execute the QONNX graph on")
    batch_size = max(1, min(batch_size, n))
    model = _wrapper(model_or_path)
    if model.get_tensor_shape(model.graph.input[0].name)[0] != batch_size:
        model = clean(model, batch_size=batch_size)
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    expected = tuple(model.get_tensor_shape(in_name)[1:])
    if tuple(x.shape[1:]) != expected:
        raise DataError(f"quant: inputs have shape {tuple(x.shape[1:])} per sample, the QONNX graph takes {expected}")
    outs = []
    for start in range(0, n, batch_size):
        batch = x[start:start + batch_size]
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), np.float32)])
        out = execute_onnx(model, {in_name: batch})[out_name]
        outs.append(np.asarray(out, dtype=np.float32)[:real])
        if on_batch is not None:
            on_batch(real)
    return np.concatenate(outs)


@torch.no_grad()
def run_torch(model: torch.nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Outputs of a torch (Brevitas) model in eval mode, float32 numpy."""
    model.eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    outs = [model(xt[i:i + batch_size]) for i in range(0, len(xt), batch_size)]
    return torch.cat([getattr(o, "value", o) for o in outs]).numpy().astype(np.float32)


@dataclass
class ReferenceCheck:
    """QONNX reference vs Brevitas on the same inputs (measured)."""

    samples: int
    exact_matches: int  # samples whose every output is equal
    max_abs_difference: float
    argmax_agreement: float  # fraction of samples with the same top-1

    @property
    def exact(self) -> bool:
        return self.samples > 0 and self.exact_matches == self.samples

    def as_dict(self) -> dict:
        return {"samples": self.samples, "exact_matches": self.exact_matches, "exact": self.exact,
                "max_abs_difference": self.max_abs_difference, "argmax_agreement": self.argmax_agreement}


def compare(reference: np.ndarray, candidate: np.ndarray) -> ReferenceCheck:
    if reference.shape != candidate.shape:
        raise DataError(f"quant: output shapes differ: QONNX {reference.shape} vs Brevitas {candidate.shape}")
    flat_r = reference.reshape(len(reference), -1)
    flat_c = candidate.reshape(len(candidate), -1)
    diff = np.abs(flat_r.astype(np.float64) - flat_c.astype(np.float64))
    return ReferenceCheck(
        samples=len(reference),
        exact_matches=int(np.all(flat_r == flat_c, axis=1).sum()),
        max_abs_difference=float(diff.max()) if diff.size else 0.0,
        argmax_agreement=float(np.mean(flat_r.argmax(1) == flat_c.argmax(1))) if len(flat_r) else 0.0,
    )


def golden_codes(quant_info: dict, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Integer codes of the golden inputs and outputs: x_codes/x_exponent, y_codes/y_exponent.

    value = code * 2**exponent. x_codes are the codes the model's input Quant gives x (what an
    accelerator takes; same layout as x); y_codes are the reference outputs on the output grid.
    Returns {} when the scales are not powers of two (no fixed-point grid); leaves y out when the
    float32 reference values are not on the output grid (an accumulator wider than 24 bits).
    """
    from qonnx.custom_op.general.quant import quant

    from potatura.hw.types import po2_exponent

    entry = (quant_info.get("tensors") or {}).get(quant_info.get("input", {}).get("quantized_by") or "")
    out_scale = quant_info.get("output", {}).get("scale")
    if entry is None or out_scale is None:
        return {}
    x_exp, y_exp = po2_exponent(float(entry["scale"])), po2_exponent(float(out_scale))
    if x_exp is None or y_exp is None or np.any(np.asarray(entry["zero_point"]) != 0):
        return {}
    q = quant(np.asarray(x, dtype=np.float64), np.float64(entry["scale"]), np.float64(0.0),
              np.float64(entry["bit_width"]), int(entry["signed"]), int(entry["narrow"]), entry["rounding_mode"])
    x_codes = np.asarray(q, dtype=np.float64) / 2.0 ** x_exp
    out = {"x_codes": np.rint(x_codes).astype(np.int64), "x_exponent": np.int64(x_exp)}
    y_codes = np.asarray(y, dtype=np.float64) / 2.0 ** y_exp
    if np.all(y_codes == np.rint(y_codes)):
        out.update(y_codes=np.rint(y_codes).astype(np.int64), y_exponent=np.int64(y_exp))
    return out

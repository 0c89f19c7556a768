"""Is a quantized model fit for a hardware backend? The gate every hardware stage calls.

Measured while specifying potatura (Brevitas vs QONNX execution vs hls4ml csim, 1000 samples):
with power-of-two scales and integer biases all three agreed on every output; a float bias was
close but never exact (max |diff| 1.3e-3); float scales made hls4ml compute wrong outputs with
only a warning (argmax agreement 38%). So potatura sends a model to hardware only when:

- every Quant node has a power-of-two scale and a zero point of 0,
- every Conv/Gemm bias is an integer (a Quant node) or absent,
- the graph uses only operators the backend implements: the backend's one operator table
  (potatura.hw.backends), the table hwgen's backend checks too,
- the QONNX integer reference equalled Brevitas on every checked sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from potatura.errors import DataError, UnsupportedError
from potatura.hw.backends import unsupported_onnx_ops

DEFAULT_BACKEND = "hls4ml"


def hardware_problems(tensors: dict[str, dict], biases: dict[str, str], ops: list[str],
                      reference_check: dict | None, backend: str = DEFAULT_BACKEND) -> list[str]:
    """Every reason the model is not ready for `backend` (empty: ready). Inputs as in quant.json;
    ops: the ONNX operator types of the exported QONNX model."""
    problems = []
    not_pot = [name for name, t in tensors.items() if not t["power_of_two"]]
    if not_pot:
        problems.append(f"scales that are not powers of two at {_few(not_pot)} (set quant.scale: power-of-two)")
    nonzero_zp = [name for name, t in tensors.items() if np.any(np.asarray(t["zero_point"]) != 0)]
    if nonzero_zp:
        problems.append(f"non-zero zero points at {_few(nonzero_zp)}")
    float_bias = [node for node, kind in biases.items() if kind == "float"]
    if float_bias:
        problems.append(f"float biases in {_few(float_bias)} (set quant.bias_bits, e.g. 32)")
    other_ops = unsupported_onnx_ops(backend, ops)
    if other_ops:
        problems.append(f"operators the {backend} backend does not build: {', '.join(other_ops)}")
    if reference_check is None:
        problems.append("the QONNX integer reference was not checked against Brevitas")
    elif not reference_check.get("exact"):
        problems.append(f"the QONNX integer reference differs from Brevitas on "
                        f"{reference_check['samples'] - reference_check['exact_matches']} of "
                        f"{reference_check['samples']} samples (max |diff| {reference_check['max_abs_difference']:.3g})")
    return problems


def _few(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def require_hardware_ready(quant_json: str | Path | dict[str, Any], backend: str = "a hardware backend") -> dict:
    """Raise UnsupportedError unless quant.json (a path or its parsed dict) says the model is
    hardware-ready; return the parsed quant.json. hwgen calls this before generating anything."""
    if isinstance(quant_json, dict):
        info, where = quant_json, "quant.json"
    else:
        from potatura.artifacts import read_json

        where = str(quant_json)
        try:
            info = read_json(quant_json)
        except FileNotFoundError:
            raise DataError(f"{where}: quant.json not found; run the quant stage first") from None
        except ValueError as exc:
            raise DataError(f"{where}: not valid JSON: {exc}") from None
    if info.get("format") != "potatura-quant/1":
        raise DataError(f"{where}: not a potatura quant.json (expected format potatura-quant/1)")
    if not info.get("hardware_ready"):
        reasons = "; ".join(info.get("hardware_problems") or ["no reason recorded"])
        raise UnsupportedError(f"{where}: the quantized model cannot go to {backend}: {reasons}")
    return info

"""Quantize: float model -> Brevitas (PTQ, optional QAT) -> QONNX -> integer reference.

    from potatura.quant import quantize
    outcome = quantize(model, data, QuantConfig(), out_dir)   # writes qonnx, quant.json, golden.npz, ...

What hardware stages use:
    require_hardware_ready(quant_json)   refuse anything but power-of-two scales + integer biases
    to_channels_last(qonnx), gemm_to_matmul(qonnx)   qonnx passes a backend may need
    execute_qonnx(qonnx, x)              the integer reference (golden model)
"""

import warnings

# Brevitas warns on import about an optional CUDA kernel package potatura never uses.
warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")

_EXPORTS = {
    "QuantConfig": "potatura.quant.config",
    "quantize": "potatura.quant.pipeline",
    "load_brevitas_model": "potatura.quant.pipeline",
    "require_hardware_ready": "potatura.quant.hardware",
    "to_channels_last": "potatura.quant.export",
    "gemm_to_matmul": "potatura.quant.export",
    "execute_qonnx": "potatura.quant.reference",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # Lazy: the flow-file schema imports potatura.quant.config, and must not pay for Brevitas.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'potatura.quant' has no attribute {name!r}")

"""Every use of hls4ml's private or unstable API, in one place (hls4ml 1.3).

- the layer-name sanitizer of its ONNX converter (`replace_char_inconsitency`, `sanitize_layer_name`):
  potatura must name config entries and check layers exactly as hls4ml will;
- `FPGABackend._validate_reuse_factor`: which reuse factors hls4ml accepts for an n_in x n_out product.

When hls4ml changes these, this module is the one to adapt.
"""

from __future__ import annotations

import functools
import importlib

HLS4ML_BACKEND = "VivadoAccelerator"


@functools.cache
def vivado_accelerator():
    """hls4ml's VivadoAccelerator backend object."""
    import hls4ml

    return hls4ml.backends.get_backend(HLS4ML_BACKEND)


def hls_layer_name(name: str, class_name: str = "") -> str:
    """The name hls4ml's ONNX parser gives a node or tensor ('.' -> '_', no leading digit)."""
    # hls4ml.converters.onnx_to_hls is shadowed by a function of that name in hls4ml.converters.
    onnx_to_hls = importlib.import_module("hls4ml.converters.onnx_to_hls")
    layer = {"name": onnx_to_hls.replace_char_inconsitency(name), "class_name": class_name}
    onnx_to_hls.sanitize_layer_name(layer)
    return layer["name"]


def reuse_factor_is_valid(n_in: int, n_out: int, reuse_factor: int) -> bool:
    """hls4ml's own rule for a reuse factor of an n_in x n_out matrix-vector product."""
    return bool(vivado_accelerator()._validate_reuse_factor(n_in, n_out, reuse_factor))


def hls4ml_valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """hls4ml's public list (tries every RF up to n_in*n_out; slow for big layers: tests compare with it)."""
    return list(vivado_accelerator().get_valid_reuse_factors(n_in, n_out))

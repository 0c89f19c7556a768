"""Which Brevitas quantizer recipe each tensor gets, from the `quant` section.

Only Brevitas's own recipes are used, re-parameterized with `.let(bit_width=...)`:

- power-of-two (the hardware default): Int8WeightPerTensorFixedPoint / ...PerChannelFixedPoint
  (max statistics, scale rounded UP to a power of two so nothing clips), Int8ActPerTensorFixedPoint
  (signed) and Uint8ActPerTensorFixedPoint (after ReLU), both calibrated from runtime percentile
  statistics and then learned in the log2 domain.
- float: the ...PerTensorFloat / ...PerChannelFloat counterparts (any positive scale).
- biases: IntBias with the accumulator's scale (input scale x weight scale), or a float bias when
  bias_bits is null. Measured while specifying potatura: a float bias is close to, but never
  exactly, what a fixed-point accelerator computes, so such a model is not hardware-ready.
"""

from __future__ import annotations

from typing import Optional

from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from brevitas.quant.scaled_int import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    IntBias,
    Uint8ActPerTensorFloat,
)

from potatura.quant.config import QuantConfig

_WEIGHT = {
    ("power-of-two", "per-tensor"): Int8WeightPerTensorFixedPoint,
    ("power-of-two", "per-channel"): Int8WeightPerChannelFixedPoint,
    ("float", "per-tensor"): Int8WeightPerTensorFloat,
    ("float", "per-channel"): Int8WeightPerChannelFloat,
}
_ACT = {
    ("power-of-two", True): Int8ActPerTensorFixedPoint,
    ("power-of-two", False): Uint8ActPerTensorFixedPoint,
    ("float", True): Int8ActPerTensorFloat,
    ("float", False): Uint8ActPerTensorFloat,
}


def weight_quant(cfg: QuantConfig, layer: str):
    """The weight quantizer of conv/linear `layer` (signed, narrow range, zero point 0)."""
    bits = _override(cfg, layer, "weight_bits") or cfg.weight_bits
    return _WEIGHT[(cfg.scale, cfg.weight_granularity)].let(bit_width=bits)


def act_quant(cfg: QuantConfig, layer: str, signed: bool, default_bits: Optional[int] = None):
    """The activation quantizer of `layer` (per tensor, zero point 0; unsigned after a ReLU)."""
    bits = _override(cfg, layer, "act_bits") or default_bits or cfg.act_bits
    return _ACT[(cfg.scale, signed)].let(bit_width=bits)


def bias_quant(cfg: QuantConfig, layer: str):
    """The bias quantizer of `layer`, or None for a float bias."""
    bits = _override(cfg, layer, "bias_bits") or cfg.bias_bits
    if bits is None:
        return None
    return IntBias.let(bit_width=bits)


def _override(cfg: QuantConfig, layer: str, field: str) -> Optional[int]:
    entry = cfg.layers.get(layer)
    return getattr(entry, field) if entry is not None else None

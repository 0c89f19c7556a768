"""Fixed-point types as hls4ml spells them: ap_fixed<W, I, Q, O> with integer codes (the IR's type; arithmetic on them lives in potatura.sim.fixed).

A value of a FixedType is code * 2**-frac with code an integer in [min_code, max_code]. `integer`
(hls4ml's and ap_fixed's I) counts the bits left of the binary point, sign bit included, and may
be negative or larger than W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# QONNX Quant rounding modes -> ap_fixed quantization modes that round the same way. QONNX rounds
# after clipping to integer bounds, ap_fixed before saturating: with integer bounds both orders
# give the same code.
ROUNDING = {"ROUND": "RND_CONV", "HALF_EVEN": "RND_CONV", "FLOOR": "TRN"}

# ap_fixed quantization (rounding) and overflow (saturation) modes, without the AP_ prefix.
QUANTIZATION_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
ROUNDING_MODES = ("RND_CONV", "TRN")
SATURATION_MODES = ("SAT", "SAT_SYM", "WRAP")


@dataclass(frozen=True)
class FixedType:
    signed: bool
    width: int
    integer: int
    rounding: str = "TRN"  # one of QUANTIZATION_MODES, e.g. RND_CONV (round half to even), TRN (floor)
    saturation: str = "WRAP"  # one of OVERFLOW_MODES: WRAP | SAT | SAT_ZERO | SAT_SYM (narrow: -max..max)

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"fixed-point width must be >= 1, got {self.width}")
        if self.rounding not in QUANTIZATION_MODES:
            raise ValueError(f"fixed-point rounding {self.rounding!r}: expected one of {', '.join(QUANTIZATION_MODES)}")
        if self.saturation not in OVERFLOW_MODES:
            raise ValueError(f"fixed-point saturation {self.saturation!r}: expected one of {', '.join(OVERFLOW_MODES)}")

    @property
    def frac(self) -> int:
        """Fractional bits: the value of code 1 is 2**-frac."""
        return self.width - self.integer

    @property
    def min_code(self) -> int:
        if not self.signed:
            return 0
        if self.saturation == "SAT_SYM":
            return -(2 ** (self.width - 1) - 1)
        return -(2 ** (self.width - 1))

    @property
    def max_code(self) -> int:
        return 2 ** (self.width - (1 if self.signed else 0)) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    def hls(self) -> str:
        """The hls4ml precision string, e.g. fixed<8,4,RND_CONV,SAT> or ufixed<21,9>."""
        base = f"{'' if self.signed else 'u'}fixed<{self.width},{self.integer}"
        if self.rounding == "TRN" and self.saturation == "WRAP":
            return base + ">"
        return f"{base},{self.rounding},{self.saturation}>"

    def ap(self) -> str:
        """The C++ type, e.g. ap_fixed<8,4,AP_RND_CONV,AP_SAT>."""
        base = f"ap_{'' if self.signed else 'u'}fixed<{self.width},{self.integer}"
        if self.rounding == "TRN" and self.saturation == "WRAP":
            return base + ">"
        return f"{base},AP_{self.rounding},AP_{self.saturation}>"

    def to_dict(self) -> dict:
        """JSON form: the five fields (design.json); `from_dict` reads it back exactly."""
        return {"signed": self.signed, "width": self.width, "integer": self.integer,
                "rounding": self.rounding, "saturation": self.saturation}

    @staticmethod
    def from_dict(data: dict) -> FixedType:
        """The type written by `to_dict`; a missing or unknown key is a ValueError naming it."""
        keys = ("signed", "width", "integer", "rounding", "saturation")
        if not isinstance(data, dict) or set(data) != set(keys):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"a fixed-point type needs exactly the keys {', '.join(keys)}; got {got}")
        if not isinstance(data["signed"], bool) or not all(
                isinstance(data[k], int) and not isinstance(data[k], bool) for k in ("width", "integer")):
            raise ValueError(f"fixed-point type {data}: signed is a bool, width and integer are integers")
        if data["rounding"] not in ROUNDING_MODES or data["saturation"] not in SATURATION_MODES:
            raise ValueError(f"fixed-point type {data}: rounding in {ROUNDING_MODES}, saturation in {SATURATION_MODES}")
        return FixedType(data["signed"], data["width"], data["integer"], data["rounding"], data["saturation"])

    def float_exact(self, mantissa_bits: int = 24) -> bool:
        """Whether every value converts to a binary float with `mantissa_bits` (24: float32) exactly."""
        return self.width - (1 if self.signed else 0) <= mantissa_bits

    @staticmethod
    def holding(lo_code: int, hi_code: int, frac: int) -> FixedType:
        """The narrowest plain (TRN, WRAP) type holding every code in [lo_code, hi_code] at `frac` bits.

        Signed as soon as lo_code < 0; an all-zero range still gets one bit.
        """
        lo_code, hi_code = int(lo_code), int(hi_code)
        if lo_code > hi_code:
            raise ValueError(f"empty code range [{lo_code}, {hi_code}]")
        if lo_code < 0:
            width = max(bits_signed(lo_code), bits_signed(hi_code))
            return FixedType(True, width, width - frac)
        width = max(1, int(hi_code).bit_length())
        return FixedType(False, width, width - frac)


def bits_signed(code: int) -> int:
    """Two's-complement width that holds `code`."""
    code = int(code)
    if code >= 0:
        return code.bit_length() + 1
    return (-code - 1).bit_length() + 1


def po2_exponent(scale: float) -> int | None:
    """k with scale == 2**k exactly, or None when scale is not a power of two."""
    if not (scale > 0 and math.isfinite(scale)):
        return None
    mantissa, exp = math.frexp(scale)
    return exp - 1 if mantissa == 0.5 else None

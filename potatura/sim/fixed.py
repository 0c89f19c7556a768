"""ap_fixed / ap_int arithmetic on integer codes, vectorized with numpy: potatura's one fixed-point implementation.

A value of a FixedType t is code * 2**-t.frac. Every function here takes and returns integer codes
(numpy int64 arrays, or object arrays of Python ints when a value may need more than 62 bits), so
nothing is ever rounded by a float or silently wrapped by int64.

Semantics are those of the ap_types headers that ship with hls4ml (ap_fixed_base.h), which define
them bit by bit; mathematically they reduce to:

- quantization (a cast to fewer fractional bits) from the exact source value: TRN floors;
  TRN_ZERO truncates towards zero; RND rounds half up (towards +inf); RND_ZERO half towards zero;
  RND_INF half away from zero; RND_MIN_INF half towards -inf; RND_CONV half to even;
- overflow of the rounded value: WRAP keeps the low `width` bits (two's complement when signed);
  SAT clamps to [min, max]; SAT_ZERO gives 0 out of range; SAT_SYM clamps a signed type to
  [-max, max] (the most negative code also becomes -max) and an unsigned one like SAT;
- a * b and a + b are exact (HLS gives them ap_fixed<W1+W2, I1+I2> and
  ap_fixed<max(I1, I2)+1+max(F1, F2), max(I1, I2)+1>), so only assignments (casts) round or wrap.

tests/sim/test_fixed.py checks all of it against the headers compiled with g++.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from potatura.hw.types import FixedType

Codes = np.ndarray
SAFE_BITS = 62  # int64 holds every intermediate of at most this many bits (sign included) with a margin


def _bits(codes: np.ndarray) -> int:
    """Two's-complement width that holds every code of the array (0 for an empty array)."""
    if codes.size == 0:
        return 1
    lo, hi = int(codes.min()), int(codes.max())
    return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length()) + 1


def as_codes(values, bits: int = 0) -> np.ndarray:
    """An int64 array, or an object array of Python ints when values (or `bits`) exceed SAFE_BITS."""
    arr = np.asarray(values)
    if arr.dtype == object:
        if bits <= SAFE_BITS and _bits(arr) <= SAFE_BITS:
            return arr.astype(np.int64)
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"integer codes expected, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if bits > SAFE_BITS:
        return arr.astype(object)
    return arr


def _wide(codes: np.ndarray, bits: int) -> np.ndarray:
    """The same codes in a dtype that holds `bits`-bit intermediates."""
    if bits > SAFE_BITS and codes.dtype != object:
        return codes.astype(object)
    return codes


def narrow(codes: np.ndarray) -> np.ndarray:
    """Back to int64 when every code fits (object arrays are ~50x slower)."""
    if codes.dtype == object and _bits(codes) <= SAFE_BITS:
        return codes.astype(np.int64)
    return codes


def quantize(codes, src_frac: int, frac: int, rounding: str) -> np.ndarray:
    """Exact codes at `src_frac` fractional bits -> codes at `frac` bits with an ap_fixed quantization mode.

    No overflow handling: the result is the ideal rounded integer (see `overflow`).
    """
    codes = as_codes(codes)
    shift = src_frac - frac
    if shift <= 0:
        return _wide(codes, _bits(codes) - shift) << -shift
    codes = _wide(codes, max(_bits(codes), shift) + 2)
    if rounding == "TRN":
        return codes >> shift
    # Every mode is floor((x + offset) / 2**shift) for an offset in [0, 2**shift] chosen by the
    # ties rule: half - 1 keeps a tie down, half moves it up, the extra term picks per value.
    half = 1 << (shift - 1)
    if rounding == "RND":
        offset = half
    elif rounding == "RND_MIN_INF":
        offset = half - 1
    elif rounding == "RND_CONV":
        offset = (half - 1) + ((codes >> shift) & 1)  # a tie goes up when the floor is odd
    elif rounding == "RND_ZERO":
        offset = (half - 1) + (codes < 0)  # a negative tie goes up (towards zero)
    elif rounding == "RND_INF":
        offset = half - (codes < 0)  # a positive tie goes up, a negative one down
    elif rounding == "TRN_ZERO":
        offset = np.where(codes < 0, (1 << shift) - 1, 0)  # ceil for negative values
    else:
        raise ValueError(f"unknown ap_fixed quantization mode {rounding!r}")
    if isinstance(offset, np.ndarray) and codes.dtype == object:
        offset = offset.astype(object)
    return (codes + offset) >> shift


def overflow(codes, t: FixedType) -> np.ndarray:
    """Ideal integer codes -> codes of `t` with its overflow mode (the codes already have t.frac bits)."""
    codes = as_codes(codes)
    w = t.width
    lo = -(1 << (w - 1)) if t.signed else 0
    hi = (1 << (w - 1)) - 1 if t.signed else (1 << w) - 1
    if t.saturation == "WRAP":
        if codes.size and lo <= int(codes.min()) and int(codes.max()) <= hi:
            return narrow(codes)
        codes = _wide(codes, w + 1)
        mask = (1 << w) - 1
        wrapped = (codes - lo) & mask
        return narrow(wrapped + lo)
    if t.saturation == "SAT":
        return narrow(_clip(codes, lo, hi))
    if t.saturation == "SAT_SYM":
        return narrow(_clip(codes, -hi if t.signed else 0, hi))
    if t.saturation == "SAT_ZERO":
        out = codes.copy()
        out[(codes < lo) | (codes > hi)] = 0
        return narrow(out)
    raise ValueError(f"unknown ap_fixed overflow mode {t.saturation!r}")


def _clip(codes: np.ndarray, lo: int, hi: int) -> np.ndarray:
    if codes.dtype == object:
        return np.where(codes < lo, lo, np.where(codes > hi, hi, codes)).astype(object)
    return np.clip(codes, lo, hi)


def cast(codes, src: Union[FixedType, int], dst: FixedType) -> np.ndarray:
    """Assign values of `src` (a type, or just its fractional bits) to `dst`: quantize, then overflow.

    codes: any shape; returns codes of dst (int64, or object when dst is wider than SAFE_BITS).
    """
    src_frac = src.frac if isinstance(src, FixedType) else int(src)
    return overflow(quantize(codes, src_frac, dst.frac, dst.rounding), dst)


def product_type(a: FixedType, b: FixedType) -> FixedType:
    """The HLS type of a * b: exact, ap_fixed<Wa+Wb, Ia+Ib>, signed when either is."""
    return FixedType(a.signed or b.signed, a.width + b.width, a.integer + b.integer)


def sum_type(a: FixedType, b: FixedType) -> FixedType:
    """The HLS type of a + b: exact, one carry bit above the wider integer part."""
    frac = max(a.frac, b.frac)
    integer = max(a.integer + (b.signed and not a.signed), b.integer + (a.signed and not b.signed)) + 1
    return FixedType(a.signed or b.signed, integer + frac, integer)


def multiply(a, b, a_type: FixedType, b_type: FixedType) -> np.ndarray:
    """Exact products (broadcast) with frac a.frac + b.frac: codes of product_type(a_type, b_type)."""
    width = a_type.width + b_type.width
    a, b = _wide(as_codes(a), width), _wide(as_codes(b), width)
    return a * b


def add(a, b, a_frac: int, b_frac: int) -> tuple[np.ndarray, int]:
    """Exact sum of codes at a_frac and b_frac bits: (codes, fractional bits of the sum)."""
    frac = max(a_frac, b_frac)
    a = quantize(a, a_frac, frac, "TRN")
    b = quantize(b, b_frac, frac, "TRN")
    width = max(_bits(a), _bits(b)) + 1
    return _wide(a, width) + _wide(b, width), frac


def from_float(values, t: FixedType) -> np.ndarray:
    """ap_fixed<...>(double): the exact binary value of each float rounded and saturated as t says.

    float32 values widen to float64 exactly; NaN and infinities are refused (ap_fixed leaves them
    undefined).
    """
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot convert NaN or infinite values to fixed point")
    # floor(x * 2**g) and a sticky bit (anything below it) decide every rounding mode exactly:
    # g = t.frac + 1 keeps the bit just below the LSB; scaling by a power of two is exact.
    g = t.frac + 1
    scaled = np.ldexp(x, g)
    floor = np.floor(scaled)
    sticky = (scaled != floor) | ((x != 0) & (scaled == 0))
    if floor.size == 0 or float(np.abs(floor).max()) < 2.0 ** 60:
        grid = floor.astype(np.int64) * 2 + sticky
    else:
        grid = np.array([int(v) for v in floor.ravel()], dtype=object).reshape(floor.shape) * 2 + sticky
    return cast(grid, g + 1, t)


def to_float(codes, t: Union[FixedType, int]) -> np.ndarray:
    """codes * 2**-frac as float64 (exact when the codes have <= 53 significant bits)."""
    frac = t.frac if isinstance(t, FixedType) else int(t)
    codes = np.asarray(codes)
    return np.ldexp(codes.astype(np.float64), -frac)


def divide_int(codes, divisor) -> np.ndarray:
    """ap_fixed x /= unsigned n (n >= 1, an int or an array broadcast with x): the quotient at x's
    fractional bits, truncated towards zero (C integer division); assign it back to apply overflow."""
    codes = as_codes(codes)
    if codes.dtype == object:
        divisor = np.asarray(divisor, dtype=object)
    q = abs(codes) // divisor
    return np.where(codes < 0, -q, q).astype(codes.dtype)


def accumulate(acc, terms, acc_type: FixedType, terms_frac: int, axis: int = -1) -> np.ndarray:
    """acc += terms[..., k] for k in order, each sum assigned to acc_type (HLS `acc += x` in a loop).

    acc: codes of acc_type (shape S); terms: codes at terms_frac with the summed axis extra. When
    acc_type wraps and loses no fractional bits, modular arithmetic makes the order irrelevant and
    the loop becomes one exact sum.
    """
    terms = as_codes(terms)
    terms = np.moveaxis(terms, axis, -1)
    if acc_type.saturation == "WRAP" and acc_type.frac >= terms_frac:
        shifted = quantize(terms, terms_frac, acc_type.frac, "TRN")
        width = _bits(shifted) + max(1, int(terms.shape[-1])).bit_length() + 1
        total = _wide(shifted, max(width, _bits(as_codes(acc)) + 1)).sum(axis=-1)
        return overflow(_wide(as_codes(acc), width) + total, acc_type)
    acc = as_codes(acc)
    for k in range(terms.shape[-1]):
        s, frac = add(acc, terms[..., k], acc_type.frac, terms_frac)
        acc = cast(s, frac, acc_type)
    return acc

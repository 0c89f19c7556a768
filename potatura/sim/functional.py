"""The functional half of the module models: integer codes in, integer codes out, as the HLS C++ computes.

One function per IR op, on a batch: every tensor is (N, *shape) channels-last integer codes of
its producer's result_type. The arithmetic is potatura.sim.fixed (ap_fixed semantics); the order
of sums follows hls4ml 1.3's kernels where it can matter (accumulators that saturate or drop
fractional bits): dense_latency's `mult = (accum_t) (x * w)`, `acc = (accum_t) bias`,
`acc += mult` over inputs in order; pooling's `y += x` then `y /= n`; merges' `res = a + b`.
Conv windows are gathered in (KH, KW, C) order, hls4ml's line-buffer and im2col order.
"""

from __future__ import annotations

import math

import numpy as np

from potatura.hw.ir import Layer, Op
from potatura.hw.types import FixedType
from potatura.sim import fixed
from potatura.sim.errors import SimError


def _type(layer: Layer, name: str) -> FixedType:
    t = getattr(layer, name)
    if t is None:
        raise SimError(f"sim: layer {layer.name!r} ({layer.op.value}) has no {name}")
    return t


def _exact_float(layer: Layer, x: np.ndarray, w: np.ndarray):
    """A float dtype whose BLAS matrix product of x and w is exact (every partial sum < 2**24 or
    2**53 in magnitude), or None. Only for wrapping accumulators that keep every fractional bit,
    whose sums are order-free (modular)."""
    in_t, w_t, acc_t = layer.input_type, layer.weight_type, layer.accum_type
    if acc_t is None or acc_t.saturation != "WRAP" or acc_t.frac < in_t.frac + w_t.frac:
        return None
    x_max = max(abs(int(x.min(initial=0))), abs(int(x.max(initial=0))), 1)
    w_max = max(abs(int(w.min(initial=0))), abs(int(w.max(initial=0))), 1)
    bound = x_max * w_max * w.shape[0]
    if bound < 2 ** 24:
        return np.float32
    if bound < 2 ** 53:
        return np.float64
    return None


def matvec(x: np.ndarray, layer: Layer, w: np.ndarray, dtype=None) -> np.ndarray:
    """Dense products of x (M, n_in) codes with w (n_in, n_out) codes -> accumulator codes (M, n_out).

    Wrapping accumulators that keep every fractional bit are order-free (modular sums): one exact
    matrix product (float32/float64 BLAS when every partial sum stays exact, see _exact_float; else
    int64 or object). Otherwise the per-input loop of dense_latency runs with a cast after every step.
    x may already be in `dtype` (a float copy made while gathering conv windows).
    """
    in_t, w_t, acc_t = _type(layer, "input_type"), _type(layer, "weight_type"), _type(layer, "accum_type")
    prod_frac = in_t.frac + w_t.frac
    if layer.bias_codes is not None:
        bias = fixed.cast(layer.bias_codes, _type(layer, "bias_type"), acc_t)
    else:
        bias = np.zeros(w.shape[1], dtype=np.int64)
    if acc_t.saturation == "WRAP" and acc_t.frac >= prod_frac:
        shift = acc_t.frac - prod_frac
        dtype = dtype or _exact_float(layer, x, w)
        if dtype is not None:
            total = (x.astype(dtype, copy=False) @ w.astype(dtype)).astype(np.int64)
        else:
            wide = fixed._bits(fixed.as_codes(x)) + fixed._bits(fixed.as_codes(w)) + w.shape[0].bit_length()
            total = (x.astype(object) @ w.astype(object)) if wide > fixed.SAFE_BITS else \
                x.astype(np.int64) @ w.astype(np.int64)
        total = fixed.as_codes(total, fixed._bits(fixed.as_codes(total)) + shift + 1)
        return fixed.overflow((total << shift if shift else total) + bias, acc_t)
    products = fixed.multiply(x[:, :, None], w[None, :, :], in_t, w_t)  # (M, n_in, n_out)
    mult = fixed.cast(products, prod_frac, acc_t)
    acc = np.broadcast_to(bias, (x.shape[0], w.shape[1]))
    return fixed.accumulate(acc, mult, acc_t, acc_t.frac, axis=1)


def dense(layer: Layer, x: np.ndarray) -> np.ndarray:
    acc = matvec(x.reshape(len(x), -1), layer, np.asarray(layer.weight_codes))
    return fixed.cast(acc, _type(layer, "accum_type"), _type(layer, "result_type"))


def pad_hw(x: np.ndarray, pads, value: int = 0) -> np.ndarray:
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(x: np.ndarray, kernel, stride) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, KH, KW, C) sliding windows (a view)."""
    kh, kw = kernel
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H-kh+1, W-kw+1, C, kh, kw)
    v = v[:, ::stride[0], ::stride[1]]
    return v.transpose(0, 1, 2, 4, 5, 3)


def conv2d(layer: Layer, x: np.ndarray) -> np.ndarray:
    w = np.asarray(layer.weight_codes)  # (O, KH, KW, I)
    w2 = w.reshape(w.shape[0], -1).T
    dtype = _exact_float(layer, x, w2)
    xp = pad_hw(x.astype(dtype) if dtype is not None else x, layer.pads)
    win = windows(xp, layer.kernel, layer.stride)
    n, oh, ow = win.shape[:3]
    cols = win.reshape(n * oh * ow, -1)  # (kh, kw, c) order
    acc = matvec(cols, layer, w2, dtype)
    out = fixed.cast(acc, _type(layer, "accum_type"), _type(layer, "result_type"))
    return out.reshape(n, oh, ow, -1)


def relu(layer: Layer, x: np.ndarray) -> np.ndarray:
    return fixed.cast(np.where(x > 0, x, 0), _type(layer, "input_type"), _type(layer, "result_type"))


def quant(layer: Layer, x: np.ndarray) -> np.ndarray:
    return fixed.cast(x, _type(layer, "input_type"), _type(layer, "result_type"))


def maxpool2d(layer: Layer, x: np.ndarray) -> np.ndarray:
    in_t = _type(layer, "input_type")
    # Padding takes the type's most negative code (hls4ml pad_val<Max>): never the maximum unless alone.
    xp = pad_hw(x, layer.pads, -(1 << (in_t.width - 1)) if in_t.signed else 0)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    n, h, w, c = xp.shape
    if (kh, kw) == (sh, sw) and h % kh == 0 and w % kw == 0:
        m = xp.reshape(n, h // kh, kh, w // kw, kw, c).max(axis=(2, 4))  # tiling windows: a reshape
    else:
        m = windows(xp, layer.kernel, layer.stride).max(axis=(3, 4))
    acc_t = layer.accum_type or in_t
    return fixed.cast(fixed.cast(m, in_t, acc_t), acc_t, _type(layer, "result_type"))


def _average(layer: Layer, terms: np.ndarray, counts) -> np.ndarray:
    """y = 0; y += x (accum_t) over the last axis; y /= count; res = y."""
    in_t = _type(layer, "input_type")
    acc_t = layer.accum_type or in_t
    acc = fixed.accumulate(np.zeros(terms.shape[:-1], dtype=np.int64), terms, acc_t, in_t.frac, axis=-1)
    acc = fixed.overflow(fixed.divide_int(acc, counts), acc_t)
    return fixed.cast(acc, acc_t, _type(layer, "result_type"))


def avgpool2d(layer: Layer, x: np.ndarray) -> np.ndarray:
    xp = pad_hw(x, layer.pads)
    win = windows(xp, layer.kernel, layer.stride)  # (N, OH, OW, KH, KW, C)
    n, oh, ow, kh, kw, c = win.shape
    terms = win.transpose(0, 1, 2, 5, 3, 4).reshape(n, oh, ow, c, kh * kw)
    # count_pad false: the divisor is the window's overlap with the unpadded image.
    ones = pad_hw(np.ones((1, *x.shape[1:3], 1), dtype=np.int64), layer.pads)
    counts = windows(ones, layer.kernel, layer.stride).sum(axis=(3, 4))  # (1, OH, OW, 1)
    return _average(layer, terms, counts)


def global_avgpool(layer: Layer, x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return _average(layer, x.reshape(n, h * w, c).transpose(0, 2, 1), h * w)


def add(layer: Layer, xs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    res_t = _type(layer, "result_type")
    acc, acc_frac = xs[0], types[0].frac
    for i in range(1, len(xs)):
        s, frac = fixed.add(acc, xs[i], acc_frac, types[i].frac)
        acc, acc_frac = (fixed.cast(s, frac, res_t), res_t.frac) if i < len(xs) - 1 else (s, frac)
    return fixed.cast(acc, acc_frac, res_t)


def concat(layer: Layer, xs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    res_t = _type(layer, "result_type")
    return np.concatenate([fixed.cast(x, t, res_t) for x, t in zip(xs, types)], axis=-1)


def flatten(layer: Layer, x: np.ndarray) -> np.ndarray:
    if layer.attrs.get("order", "HWC") == "CHW" and x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x).reshape(len(x), -1)


def run_layer(layer: Layer, xs: list[np.ndarray], types: list[FixedType]) -> np.ndarray:
    """One layer on a batch: xs are the producers' codes (N, *shape), types their result types."""
    op = layer.op
    if op in (Op.ADD, Op.CONCAT):
        return (add if op == Op.ADD else concat)(layer, xs, types)
    x = xs[0]
    if op == Op.DENSE:
        return dense(layer, x)
    if op == Op.CONV2D:
        return conv2d(layer, x)
    if op == Op.RELU:
        return relu(layer, x)
    if op == Op.QUANT:
        return quant(layer, x)
    if op == Op.MAXPOOL2D:
        return maxpool2d(layer, x)
    if op == Op.AVGPOOL2D:
        return avgpool2d(layer, x)
    if op == Op.GLOBAL_AVGPOOL:
        return global_avgpool(layer, x)
    if op == Op.FLATTEN:
        return flatten(layer, x)
    raise SimError(f"sim: layer {layer.name!r}: op {op.value} has no functional model")


def tokens(shape: tuple[int, ...]) -> tuple[int, int]:
    """(stream tokens per sample, values per token) of a tensor in hls4ml's io_stream: one token
    per pixel of C values for (H, W, C), one token of n values for a vector."""
    if len(shape) == 3:
        return int(shape[0] * shape[1]), int(shape[2])
    return 1, int(math.prod(shape))

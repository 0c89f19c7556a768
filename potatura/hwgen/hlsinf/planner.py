"""The HLSinf-style host planner: an IR graph -> a list of fused kernel calls, and the memory packers.

The engine (templates/hlsinf/hlsinf_kernel.h) computes one 3x3 stride-1 convolution per call,
CPI input channels x CPO output channels a cycle, followed by the fused steps selected by run-time
arguments: ReLU, one power-of-two requantization (shift, round, clip), 2x2 stride-2 max pooling or
stride-2 subsampling, a residual add and the sum's own ReLU/requantization. The planner maps a
graph onto such calls (docs/hardware.md section 3):

- a CONV2D 3x3 stride 1 (pads 0 or 1 per side) is one call per row frame; a 1x1 conv becomes a
  3x3 conv whose eight outer taps are zero (padding 1 keeps the size);
- a DENSE layer reads its input as a 1x1 image of n channels and becomes a 3x3 conv with padding
  1 and only the centre tap; a FLATTEN before it costs nothing: the dense weights are permuted so
  that they read the GHWC buffer of the flattened tensor as it lies in memory;
- the RELU/QUANT layers after a conv (one consumer each) fold into the call's requantization, a
  following MAXPOOL2D 2x2 stride 2 into its pooling; a stride-2 conv keeps every other row and
  column of the stride-1 result; an ADD whose other operand is already in DDR is the call's
  residual (operands aligned to the exact sum's fractional bits), its RELU/QUANT the second
  requantization; a GLOBAL_AVGPOOL over 2**k pixels is a sum (weight 1 per channel, read like a
  dense layer) whose codes, at k more fractional bits, are the mean exactly;
- I_ITER = ceil(I/CPI) input groups, O_ITER = ceil(O/CPO) output groups; a conv whose output is
  taller than HO_MAX is split into row frames (top padding only on the first frame, bottom only
  on the last; frames hold an even number of rows when the call pools); a conv whose output is
  wider than WO_MAX is refused by name.

Layouts: activations GHWC (address = gi*H*W*CPI + h*W*CPI + w*CPI + ii, channels padded to whole
groups of CPI with zeros; a vector is a 1x1 image), filters GO x GI x CPO x CPI x 3 x 3, biases
(GO*CPO,) already at the accumulator's fractional bits.

The cycle model of one call (`KernelCall.cycles`) is the schedule of the engine: every padded
input pixel of every (output group, input group) pair takes one cycle at II=1, and each output
group drains the pipeline once:
    cycles = O_ITER * I_ITER * (H + PT + PB) * (W + PL + PR) + O_ITER * L_PIPE
(docs/hardware.md section 3: 256x256, I=O=CPI=CPO=4, padding 1 -> 258*258 + 128 = 66,692 cycles, the
public C-synthesis report of HLSinf). numpy and the standard library only: the simulator imports it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from potatura.errors import UnsupportedError
from potatura.hw.ir import Graph, Layer, Op
from potatura.hw.types import FixedType

L_PIPE = 128  # cycles to drain the engine's pipeline once per output group (docs/hardware.md section 3)
KERNEL = 3  # the engine's only window
ROUNDINGS = {"TRN": 0, "RND_CONV": 1}  # requantization rounding modes the engine implements
POOL_MODES = {"none": 0, "max": 1, "stride2": 2}
# Element-wise layers not after a conv (e.g. a residual shortcut's requantization) run as a call of
# their own: a 3x3 conv whose only tap is the identity (HLSinf runs every layer as a convolution).
IDENTITY_OPS = (Op.RELU, Op.QUANT)


@dataclass(frozen=True)
class EngineConfig:
    """The fixed hardware parameters of one engine (template arguments of the kernel)."""

    cpi: int  # input channels consumed per cycle
    cpo: int  # output channels produced per cycle
    ho_max: int  # conv output rows one call holds (accumulator buffer)
    wo_max: int  # conv output columns one call holds
    data_bits: int = 16  # activation word in DDR: ap_int<data_bits>
    weight_bits: int = 8  # ap_int<weight_bits>
    acc_bits: int = 32  # accumulator and bias: ap_int<acc_bits>
    pixel_bits: int = 16  # multiplier operand of an activation inside the engine: ap_int<pixel_bits>

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TensorBuffer:
    """One activation tensor in DDR, GHWC with groups of CPI channels (a vector: a 1x1 image)."""

    name: str  # the IR layer whose result it is
    h: int
    w: int
    c: int
    groups: int  # ceil(c / CPI)

    def words(self, cpi: int) -> int:
        return self.groups * self.h * self.w * cpi

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KernelCall:
    """One invocation of the engine (one row frame of one fused layer). Counts in words and cycles."""

    layer: str  # the CONV2D/DENSE IR layer
    fused: list[str]  # the IR layers this call computes, in order (conv/dense first)
    input: str  # tensor read (TensorBuffer name)
    output: str  # tensor written
    i: int  # input channels of the 3x3 conv (a dense layer: its GHWC buffer length)
    o: int  # output channels
    in_h: int  # rows of the whole input tensor
    w: int  # columns of the input tensor
    in_row0: int  # first input row this frame reads
    in_rows: int  # input rows this frame reads
    pads: tuple[int, int, int, int]  # (top, left, bottom, right) of this frame
    out_row0: int  # first row written in the output tensor (after pooling)
    out_rows: int  # rows written (after pooling)
    out_h: int  # rows of the whole output tensor
    out_w: int  # columns of the output tensor
    relu: bool
    shift: int  # accumulator code >> shift (negative: << -shift) before rounding and clipping
    rounding: str  # TRN | RND_CONV
    clip: tuple[int, int]  # [lo, hi] codes of the stored result
    pool: str  # none | max (2x2 stride 2) | stride2 (a stride-2 conv: every other row and column)
    i_iter: int
    o_iter: int
    frame: int = 0
    frames: int = 1
    filters: str = ""  # the packed filter/bias set (the layer name)
    add_input: str | None = None  # residual tensor added after pooling (the output's shape)
    add_shifts: tuple[int, int] = (0, 0)  # left shifts aligning (this call's value, the residual) for the sum
    relu2: bool = False  # requantization of the sum, as relu/shift/rounding/clip
    shift2: int = 0
    rounding2: str = "TRN"
    clip2: tuple[int, int] = (0, 0)

    @property
    def padded_pixels(self) -> int:
        top, left, bottom, right = self.pads
        return (self.in_rows + top + bottom) * (self.w + left + right)

    @property
    def cycles(self) -> int:
        """The engine's schedule: O_ITER*I_ITER*(H+PT+PB)*(W+PL+PR) + O_ITER*L_PIPE cycles."""
        return call_cycles(self.in_rows, self.w, self.pads, self.i_iter, self.o_iter)

    @property
    def macs(self) -> int:
        """Multiply-accumulates the engine performs (zero taps and padded channels included)."""
        conv_rows = self.in_rows + self.pads[0] + self.pads[2] - KERNEL + 1
        conv_cols = self.w + self.pads[1] + self.pads[3] - KERNEL + 1
        return self.o_iter * self.i_iter * conv_rows * conv_cols * KERNEL * KERNEL

    def args(self) -> list[int]:
        """The run-time arguments, in the order of the kernel's KernelArgs (templates/hlsinf)."""
        top, left, bottom, right = self.pads
        return [self.i, self.o, self.in_h, self.w, self.in_row0, self.in_rows, top, bottom, left, right,
                self.out_h, self.out_w, self.out_row0, int(self.relu), self.shift, ROUNDINGS[self.rounding],
                self.clip[0], self.clip[1], POOL_MODES[self.pool], int(self.add_input is not None),
                self.add_shifts[0], self.add_shifts[1], int(self.relu2), self.shift2, ROUNDINGS[self.rounding2],
                self.clip2[0], self.clip2[1]]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cycles"] = self.cycles
        return d

    @staticmethod
    def from_dict(d: dict) -> KernelCall:
        d = {k: v for k, v in d.items() if k != "cycles"}
        for name in ("pads", "clip", "add_shifts", "clip2"):
            if name in d:
                d[name] = tuple(d[name])
        return KernelCall(**d)


def call_cycles(rows: int, cols: int, pads, i_iter: int, o_iter: int, l_pipe: int = L_PIPE) -> int:
    """Cycles of one call: O_ITER*I_ITER*(H+PT+PB)*(W+PL+PR) + O_ITER*L_PIPE (pads: top, left, bottom, right)."""
    top, left, bottom, right = pads
    return o_iter * i_iter * (rows + top + bottom) * (cols + left + right) + o_iter * l_pipe


def call_ddr_bytes(call: KernelCall, engine: EngineConfig) -> dict[str, int]:
    """Bytes one call moves: its input rows once per output group (CPI words a pixel), the filters and
    biases of every (output, input) group pair, and its output rows (CPO words a pixel per output group)."""
    data_b, w_b, acc_b = engine.data_bits // 8, engine.weight_bits // 8, engine.acc_bits // 8
    read = call.o_iter * call.i_iter * call.in_rows * call.w * engine.cpi * data_b
    weights = call.o_iter * (call.i_iter * engine.cpo * engine.cpi * KERNEL * KERNEL * w_b + engine.cpo * acc_b)
    write = call.o_iter * call.out_rows * call.out_w * engine.cpo * data_b
    if call.add_input is not None:  # the residual, read beside the output it is added to
        read += call.o_iter * call.out_rows * call.out_w * engine.cpo * data_b
    return {"activations_read": read, "activations_written": write, "weights_read": weights,
            "total": read + write + weights}


@dataclass
class PackedLayer:
    """Filters (GO, GI, CPO, CPI, 3, 3) and bias (GO*CPO,) codes of one conv/dense layer, int64."""

    filters: np.ndarray
    bias: np.ndarray


@dataclass
class Plan:
    """Kernel calls of a graph on one engine, with the tensors they read and write."""

    engine: EngineConfig
    calls: list[KernelCall]
    tensors: dict[str, TensorBuffer]
    input: str
    output: str
    weights: dict[str, PackedLayer] = field(default_factory=dict, repr=False)

    @property
    def cycles(self) -> int:
        return sum(c.cycles for c in self.calls)

    def iterations(self) -> int:
        """(output group, input group) iterations over all calls."""
        return sum(c.o_iter * c.i_iter for c in self.calls)

    def ddr_bytes(self) -> dict[str, int]:
        """Bytes one sample moves between DDR and the engine, summed over the calls (`call_ddr_bytes`)."""
        total = {"activations_read": 0, "activations_written": 0, "weights_read": 0, "total": 0}
        for c in self.calls:
            for k, v in call_ddr_bytes(c, self.engine).items():
                total[k] += v
        return total

    def to_dict(self) -> dict:
        return {"engine": self.engine.to_dict(), "input": self.input, "output": self.output,
                "tensors": {k: t.to_dict() for k, t in self.tensors.items()},
                "calls": [c.to_dict() for c in self.calls], "cycles": self.cycles, "iterations": self.iterations(),
                "ddr_bytes": self.ddr_bytes()}

    @staticmethod
    def from_dict(d: dict) -> Plan:
        return Plan(EngineConfig(**d["engine"]), [KernelCall.from_dict(c) for c in d["calls"]],
                    {k: TensorBuffer(**t) for k, t in d["tensors"].items()}, d["input"], d["output"])


# --- what the engine builds ---

def check_graph(graph: Graph, engine: EngineConfig | None = None) -> list[str]:
    """Every layer of `graph` the engine cannot compute, one line each naming it (empty: all of it)."""
    try:
        plan_graph(graph, engine or EngineConfig(4, 4, 1 << 20, 1 << 20, 64, 64, 64, 64), pack=False)
    except UnsupportedError as exc:
        return [str(exc)]
    return []


def _refuse(layer: Layer, why: str) -> UnsupportedError:
    return UnsupportedError(f"hlsinf: layer {layer.name!r} ({layer.op.value}): {why}")


def _spatial(shape) -> tuple[int, int, int]:
    return (int(shape[0]), int(shape[1]), int(shape[2])) if len(shape) == 3 else (1, 1, int(math.prod(shape)))


class _Requant:
    """The element-wise layers after a conv, folded into relu -> shift/round -> clip (exactly).

    Casts that keep every value (more fractional bits, a range that holds the source's; WRAP casts
    to the reader's range-proved types) change only the shift; one cast may drop bits or saturate.
    """

    def __init__(self, acc: FixedType):
        self.frac = acc.frac
        self.type = acc
        self.relu = False  # ReLU before the requantization
        self.lossy: list | None = None  # [rounding, lo, hi] of the one cast that rounds or saturates

    def cast(self, layer: Layer, dst: FixedType) -> None:
        src = self.type
        narrower = dst.saturation != "WRAP" and (
            dst.min_code * 2.0 ** -dst.frac > src.min_code * 2.0 ** -src.frac
            or dst.max_code * 2.0 ** -dst.frac < src.max_code * 2.0 ** -src.frac)
        if dst.frac < self.frac or narrower:
            if self.lossy is not None:
                raise _refuse(layer, "a second requantization after the conv's first one (the engine rounds once)")
            if dst.rounding not in ROUNDINGS:
                raise _refuse(layer, f"rounding {dst.rounding} (the engine rounds TRN or RND_CONV)")
            self.lossy = [dst.rounding if dst.frac < self.frac else "TRN", dst.min_code, dst.max_code]
        elif dst.frac != self.frac and self.lossy is not None:
            raise _refuse(layer, "a rescaling after the requantization (the engine shifts once)")
        self.frac = dst.frac
        self.type = dst

    def relu_layer(self, layer: Layer) -> None:
        if self.lossy is None:
            self.relu = True
        else:  # relu(clip(v, lo, hi)) == clip(v, max(lo, 0), hi)
            self.lossy[1] = max(self.lossy[1], 0)
        self.cast(layer, layer.result_type)

    def arguments(self, acc_frac: int, stored: FixedType) -> tuple[bool, int, str, tuple[int, int]]:
        """(relu, shift, rounding, (clip lo, clip hi)) of the call."""
        if self.lossy is None:
            return self.relu, acc_frac - self.frac, "TRN", (0 if self.relu else stored.min_code, stored.max_code)
        rounding, lo, hi = self.lossy
        return self.relu, acc_frac - self.frac, rounding, (lo, hi)


def plan_graph(graph: Graph, engine: EngineConfig, pack: bool = True) -> Plan:
    """The kernel calls of `graph` on `engine`; UnsupportedError names the first layer it cannot map."""
    cpi = engine.cpi
    tensors: dict[str, TensorBuffer] = {}
    views: dict[str, tuple[str, str]] = {}  # FLATTEN layer -> (tensor it reinterprets, order)
    calls: list[KernelCall] = []
    weights: dict[str, PackedLayer] = {}
    covered: set[str] = set()

    def add_tensor(name: str, shape) -> TensorBuffer:
        h, w, c = _spatial(shape)
        t = TensorBuffer(name, h, w, c, math.ceil(c / cpi))
        tensors[name] = t
        return t

    first = graph.layers[0]
    add_tensor(first.name, first.out_shape)
    _check_bits(first, first.result_type, engine.data_bits)
    for layer in graph.layers[1:]:
        if layer.name in covered:
            continue
        if layer.op == Op.FLATTEN:
            src = layer.inputs[0]
            if src in views:
                views[layer.name] = views[src]
            else:
                views[layer.name] = (src, layer.attrs.get("order", "row-major"))
            continue
        if layer.op not in (Op.CONV2D, Op.DENSE, Op.GLOBAL_AVGPOOL, *IDENTITY_OPS):
            raise _refuse(layer, "the engine computes it only fused after a conv layer (and, for an add, with "
                          "its other operand already computed)" if layer.op in (Op.MAXPOOL2D, Op.ADD) else
                          "not built by the hlsinf engine (3x3 conv, dense, global average pooling, ReLU, "
                          "requantization, 2x2 max pooling, residual add)")
        if layer.op in IDENTITY_OPS and len(layer.in_shape) != 3:
            raise _refuse(layer, "a standalone element-wise layer on a vector (the engine runs it as an identity "
                          "conv only on (H, W, C) tensors)")
        fusion = _fuse(graph, layer, covered, tensors)
        calls_for, packed = _map_layer(layer, fusion, engine, tensors, views, add_tensor, pack)
        calls += calls_for
        if packed is not None:
            weights[layer.name] = packed
    out_name = graph.output.layer
    if out_name in views:
        out_name = views[out_name][0]
    if out_name not in tensors:
        raise UnsupportedError(f"hlsinf: the output layer {graph.output.layer!r} is not written by any kernel call")
    return Plan(engine, calls, tensors, first.name, out_name, weights)


def _check_bits(layer: Layer, t: FixedType, bits: int) -> None:
    need = t.width + (0 if t.signed else 1)
    if need > bits:
        raise _refuse(layer, f"its {t.ap()} codes need {need}-bit signed words; the engine stores {bits}")


@dataclass
class _Fusion:
    fused: list  # IR layer names, in order
    out_layer: Layer  # whose result the call stores
    req: _Requant  # relu/shift/clip after the conv
    before_add: Layer  # the last layer before the residual add (out_layer when there is none)
    pool: str = "none"
    add: Layer | None = None
    skip: str | None = None  # the residual tensor
    req2: _Requant | None = None  # relu/shift/clip of the sum
    add_shifts: tuple[int, int] = (0, 0)
    add_frac: int = 0  # fractional bits of the exact sum


def _gap_sum_frac(layer: Layer) -> int:
    """Fractional bits at which the engine's plain sum of a global average pool's codes is its mean."""
    h, w, _ = layer.in_shape
    k = (h * w).bit_length() - 1
    if h * w != 1 << k:
        raise _refuse(layer, f"an average over {h * w} values; the engine averages power-of-two windows exactly")
    if layer.accum_type is not None and layer.accum_type.frac < layer.input_type.frac + k:
        raise _refuse(layer, "an average whose accumulator drops the division's bits")
    return layer.input_type.frac + k


def _wide(frac: int) -> FixedType:
    return FixedType(True, 64, 64 - frac)


def _fuse(graph: Graph, first: Layer, covered: set[str], tensors: dict) -> _Fusion:
    """The element-wise, pooling and residual-add layers after `first` that one call computes."""
    if first.op == Op.GLOBAL_AVGPOOL:
        req = _Requant(_wide(_gap_sum_frac(first)))
        req.cast(first, first.result_type)
    elif first.op in IDENTITY_OPS:
        req = _Requant(_wide(first.input_type.frac))
        if first.op == Op.RELU:
            req.relu_layer(first)
        else:
            req.cast(first, first.result_type)
    else:
        req = _Requant(first.accum_type)
        req.cast(first, first.result_type)
    f = _Fusion([first.name], first, req, first)
    head = first
    while True:
        consumers = graph.consumers(head.name)
        if len(consumers) != 1 or graph.output.layer == head.name:
            break
        nxt = consumers[0]
        current = f.req2 if f.add is not None else f.req
        if nxt.op in (Op.RELU, Op.QUANT) and (f.pool == "none" or f.add is not None):
            if nxt.op == Op.RELU:
                current.relu_layer(nxt)
            else:
                current.cast(nxt, nxt.result_type)
        elif nxt.op == Op.MAXPOOL2D and f.pool == "none" and f.add is None:
            if tuple(nxt.kernel) != (2, 2) or tuple(nxt.stride) != (2, 2) or any(nxt.pads):
                raise _refuse(nxt, f"pooling {list(nxt.kernel)} stride {list(nxt.stride)} pads {list(nxt.pads)}; "
                              "the engine pools 2x2, stride 2, no padding")
            if nxt.result_type != nxt.input_type:
                raise _refuse(nxt, "max pooling that changes the type")
            if len(first.out_shape) != 3 or first.op != Op.CONV2D:
                raise _refuse(nxt, "pooling after a dense layer")
            f.pool = "max"
        elif nxt.op == Op.ADD and f.add is None and len(nxt.inputs) == 2:
            skip = nxt.inputs[1] if nxt.inputs[0] == head.name else nxt.inputs[0]
            if skip not in tensors:
                break  # the other addend is not computed yet: the add fuses into its call instead
            skip_type = graph.layer(skip).result_type
            frac = max(f.req.frac, skip_type.frac)
            f.before_add, f.add, f.skip = head, nxt, skip
            f.req2 = _Requant(_wide(frac))
            f.req2.cast(nxt, nxt.result_type)
            f.add_shifts = (frac - f.req.frac, frac - skip_type.frac)
            f.add_frac = frac
        else:
            break
        f.fused.append(nxt.name)
        covered.add(nxt.name)
        head = nxt
    f.out_layer = head
    if f.add is None:
        f.before_add = head
    return f


def _map_layer(layer: Layer, f: _Fusion, engine: EngineConfig, tensors, views, add_tensor, pack: bool):
    cpi, cpo = engine.cpi, engine.cpo
    src = layer.inputs[0]
    out_layer = f.out_layer
    _check_bits(out_layer, out_layer.result_type, engine.data_bits)
    _check_bits(layer, layer.input_type, engine.pixel_bits)
    if layer.op == Op.GLOBAL_AVGPOOL:
        acc_frac = _gap_sum_frac(layer)
    elif layer.op in IDENTITY_OPS:
        acc_frac = layer.input_type.frac
    else:
        acc = layer.accum_type
        if acc.width > engine.acc_bits:
            raise _refuse(layer, f"accumulator {acc.ap()} is wider than the engine's {engine.acc_bits} bits")
        if layer.weight_type.width > engine.weight_bits:
            raise _refuse(layer, f"weights {layer.weight_type.ap()} wider than the engine's {engine.weight_bits} bits")
        acc_frac = acc.frac
    relu, shift, rounding, clip = f.req.arguments(acc_frac, f.before_add.result_type)
    pool = f.pool
    if layer.op in (Op.CONV2D, *IDENTITY_OPS):
        if src in views:
            raise _refuse(layer, "a convolution of a flattened tensor")
        kernel, stride, pads = ((tuple(layer.kernel), tuple(layer.stride), tuple(layer.pads)) if layer.op == Op.CONV2D
                                else ((1, 1), (1, 1), (0, 0, 0, 0)))
        if kernel == (1, 1):
            if any(pads):
                raise _refuse(layer, "a padded 1x1 convolution")
            pads = (1, 1, 1, 1)  # a 3x3 conv with zero outer taps and padding 1 keeps the size
        elif kernel != (3, 3):
            raise _refuse(layer, f"kernel {list(kernel)}; the engine computes 3x3 convolutions (1x1 as 3x3 with zero taps)")
        if any(p > 1 for p in pads):
            raise _refuse(layer, f"padding {list(pads)}; the engine pads 0 or 1 per side")
        if stride == (2, 2) and pool == "none":
            pool = "stride2"  # the stride-1 conv's even rows and columns
        elif stride != (1, 1):
            raise _refuse(layer, f"stride {list(stride)}{' before pooling' if stride == (2, 2) else ''}; the engine "
                          "convolves at stride 1 (stride 2 by keeping every other output)")
        inp = tensors[src]
        in_h, w = inp.h, inp.w
        i_real = layer.in_shape[2]
        i_arg = i_real
    else:  # DENSE / GLOBAL_AVGPOOL: a 1x1 image of the input buffer's words, 3x3 conv with the centre tap only
        pads = (1, 1, 1, 1)
        base = views.get(src, (src, "row-major"))[0]
        inp = tensors[base]
        in_h, w = 1, 1
        i_real = inp.groups * inp.h * inp.w * cpi
        i_arg = i_real
        src = base
    o = layer.n_out if layer.op in (Op.CONV2D, Op.DENSE) else layer.out_shape[-1]
    conv_h = in_h + pads[0] + pads[2] - KERNEL + 1
    conv_w = w + pads[1] + pads[3] - KERNEL + 1
    if conv_w > engine.wo_max:
        raise _refuse(layer, f"output width {conv_w} exceeds WO_MAX={engine.wo_max} of the engine")
    halve = {"max": lambda n: n // 2, "stride2": lambda n: (n + 1) // 2}.get(pool, lambda n: n)
    out_h, out_w = halve(conv_h), halve(conv_w)
    out_shape = out_layer.out_shape
    if _spatial(out_shape) != (out_h, out_w, o):
        raise _refuse(out_layer, f"shape {list(out_shape)} differs from the engine's {[out_h, out_w, o]}")
    add_tensor(out_layer.name, out_shape)
    extra = {}
    if f.add is not None:
        if tensors[f.skip].c != o or (tensors[f.skip].h, tensors[f.skip].w) != (out_h, out_w):
            raise _refuse(f.add, "a residual of another shape")
        relu2, shift2, rounding2, clip2 = f.req2.arguments(f.add_frac, out_layer.result_type)
        extra = {"add_input": f.skip, "add_shifts": f.add_shifts, "relu2": relu2, "shift2": shift2,
                 "rounding2": rounding2, "clip2": (int(clip2[0]), int(clip2[1]))}
    i_iter, o_iter = math.ceil(i_real / cpi), math.ceil(o / cpo)
    rows_per_frame = engine.ho_max - (engine.ho_max % 2 if pool != "none" else 0)
    if rows_per_frame < 1:
        raise _refuse(layer, f"HO_MAX={engine.ho_max} holds no pooled row")
    # Rows of the conv output that reach the output (max pooling drops an odd last row).
    used_rows = out_h * 2 if pool == "max" else conv_h
    n_frames = math.ceil(used_rows / rows_per_frame)
    calls = []
    for frame in range(n_frames):
        r0, r1 = frame * rows_per_frame, min(used_rows, (frame + 1) * rows_per_frame)
        top = pads[0] if frame == 0 else 0
        bottom = pads[2] if r1 == conv_h else 0
        in_row0 = r0 - pads[0] + top
        in_rows = (r1 - r0) + KERNEL - 1 - top - bottom
        calls.append(KernelCall(
            layer=layer.name, fused=list(f.fused), input=src, output=out_layer.name, i=i_arg, o=o, in_h=in_h, w=w,
            in_row0=in_row0, in_rows=in_rows, pads=(top, pads[1], bottom, pads[3]),
            out_row0=r0 // 2 if pool != "none" else r0, out_rows=halve(r1 - r0), out_h=out_h, out_w=out_w,
            relu=relu, shift=shift, rounding=rounding, clip=(int(clip[0]), int(clip[1])), pool=pool,
            i_iter=i_iter, o_iter=o_iter, frame=frame, frames=n_frames, filters=layer.name, **extra))
    packed = None
    if pack:
        if layer.op == Op.GLOBAL_AVGPOOL:
            packed = _pack_average(layer, engine, inp, i_iter, o_iter)
        elif layer.op in IDENTITY_OPS:
            packed = _pack_identity(engine, inp.c, i_iter, o_iter)
        else:
            packed = _pack_layer(layer, engine, inp, views.get(layer.inputs[0]), i_iter, o_iter)
    return calls, packed


def _pack_identity(engine: EngineConfig, channels: int, i_iter: int, o_iter: int) -> PackedLayer:
    """Output channel c = input channel c (centre tap 1): an element-wise layer as a convolution."""
    full = np.zeros((o_iter * engine.cpo, i_iter * engine.cpi, 3, 3), dtype=np.int64)
    full[np.arange(channels), np.arange(channels), 1, 1] = 1
    filters = full.reshape(o_iter, engine.cpo, i_iter, engine.cpi, 3, 3).transpose(0, 2, 1, 3, 4, 5)
    return PackedLayer(np.ascontiguousarray(filters), np.zeros(o_iter * engine.cpo, dtype=np.int64))


def _pack_average(layer: Layer, engine: EngineConfig, inp: TensorBuffer, i_iter: int, o_iter: int) -> PackedLayer:
    """A global average pool as a sum: weight 1 from every word of channel c to output c (the mean's codes)."""
    cpi, cpo = engine.cpi, engine.cpo
    g, h, w, ii = np.meshgrid(np.arange(inp.groups), np.arange(inp.h), np.arange(inp.w), np.arange(cpi), indexing="ij")
    channel = (g * cpi + ii).reshape(-1)
    full = np.zeros((o_iter * cpo, i_iter * cpi, 3, 3), dtype=np.int64)
    rows = np.nonzero(channel < inp.c)[0]
    full[channel[rows], rows, 1, 1] = 1
    filters = full.reshape(o_iter, cpo, i_iter, cpi, 3, 3).transpose(0, 2, 1, 3, 4, 5)
    return PackedLayer(np.ascontiguousarray(filters), np.zeros(o_iter * cpo, dtype=np.int64))


def _pack_layer(layer: Layer, engine: EngineConfig, inp: TensorBuffer, view, i_iter: int, o_iter: int) -> PackedLayer:
    """Filters in GO x GI x CPO x CPI x 3 x 3 and the bias at the accumulator's fractional bits."""
    cpi, cpo = engine.cpi, engine.cpo
    acc = layer.accum_type
    prod_frac = layer.input_type.frac + layer.weight_type.frac
    w_shift = acc.frac - prod_frac
    if w_shift < 0:
        raise _refuse(layer, "accumulator with fewer fractional bits than the products")
    if layer.op == Op.CONV2D:
        w = np.asarray(layer.weight_codes)  # (O, KH, KW, I)
        if tuple(layer.kernel) == (1, 1):
            full = np.zeros((w.shape[0], 3, 3, w.shape[3]), dtype=np.int64)
            full[:, 1, 1, :] = w[:, 0, 0, :]
            w = full
        w_oikk = w.transpose(0, 3, 1, 2)  # (O, I, 3, 3)
    else:
        dense = np.asarray(layer.weight_codes)  # (n_in, n_out)
        rows = dense_rows(inp, engine.cpi, view[1] if view else "row-major", layer.in_shape[0])
        w_in = np.zeros((i_iter * cpi, dense.shape[1]), dtype=np.int64)
        valid = rows >= 0
        w_in[np.nonzero(valid)[0]] = dense[rows[valid]]
        w_oikk = np.zeros((dense.shape[1], i_iter * cpi, 3, 3), dtype=np.int64)
        w_oikk[:, :, 1, 1] = w_in.T
    o, i = w_oikk.shape[:2]
    full = np.zeros((o_iter * cpo, i_iter * cpi, 3, 3), dtype=np.int64)
    full[:o, :i] = w_oikk
    full = full << w_shift if w_shift else full
    lim = 1 << (engine.weight_bits - 1)
    if full.size and (full.min() < -lim or full.max() >= lim):
        raise _refuse(layer, f"weights aligned to the accumulator need more than {engine.weight_bits} bits")
    filters = full.reshape(o_iter, cpo, i_iter, cpi, 3, 3).transpose(0, 2, 1, 3, 4, 5)
    bias = np.zeros(o_iter * cpo, dtype=np.int64)
    if layer.bias_codes is not None:
        b_shift = acc.frac - layer.bias_type.frac
        if b_shift < 0:
            raise _refuse(layer, "bias with more fractional bits than the accumulator")
        bias[:o] = np.asarray(layer.bias_codes) << b_shift
    return PackedLayer(np.ascontiguousarray(filters), bias)


def dense_rows(inp: TensorBuffer, cpi: int, order: str, n_in: int) -> np.ndarray:
    """For each word address of `inp`'s GHWC buffer, the dense-weight row reading it (-1: a padded channel)."""
    g, h, w, ii = np.meshgrid(np.arange(inp.groups), np.arange(inp.h), np.arange(inp.w), np.arange(cpi), indexing="ij")
    c = g * cpi + ii
    if order == "CHW":
        flat = c * inp.h * inp.w + h * inp.w + w
    else:
        flat = (h * inp.w + w) * inp.c + c
    rows = np.where(c < inp.c, flat, -1).reshape(-1)
    if rows.max(initial=-1) >= n_in:
        raise UnsupportedError(f"hlsinf: tensor {inp.name!r} has more values than the dense layer reads ({n_in})")
    return rows


# --- the GHWC packers ---

def pack_activations(x: np.ndarray, cpi: int) -> np.ndarray:
    """(H, W, C) or (n,) codes -> the GHWC word buffer (G*H*W*CPI,), channels zero-padded to groups."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x.reshape(1, 1, -1)
    h, w, c = x.shape
    groups = math.ceil(c / cpi)
    padded = np.zeros((h, w, groups * cpi), dtype=np.int64)
    padded[..., :c] = x
    return np.ascontiguousarray(padded.reshape(h, w, groups, cpi).transpose(2, 0, 1, 3)).reshape(-1)


def unpack_activations(buf: np.ndarray, t: TensorBuffer, cpi: int) -> np.ndarray:
    """The GHWC buffer of tensor `t` -> (H, W, C) codes."""
    x = np.asarray(buf)[:t.words(cpi)].reshape(t.groups, t.h, t.w, cpi).transpose(1, 2, 0, 3)
    return x.reshape(t.h, t.w, t.groups * cpi)[..., :t.c]

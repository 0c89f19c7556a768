"""Hand-built IR designs for the engine tests (no hls4ml needed): a LeNet-like chain and a residual block."""

import numpy as np

from potatura.hw.ir import Design, Graph, IOSpec, Layer, Op
from potatura.hw.types import FixedType

I8 = FixedType(True, 8, 4, "RND_CONV", "SAT")
U8 = FixedType(False, 8, 4, "RND_CONV", "SAT")
W8 = FixedType(True, 8, 1, "RND_CONV", "SAT")
ACC = FixedType(True, 24, 12)


def _conv(name, prev, out_ch, rng, pads=(0, 0, 0, 0), kernel=(3, 3)):
    h, w, c = prev.out_shape
    oh, ow = h + pads[0] + pads[2] - kernel[0] + 1, w + pads[1] + pads[3] - kernel[1] + 1
    return Layer(name, Op.CONV2D, (prev.name,), (prev.out_shape,), (oh, ow, out_ch), input_type=prev.result_type,
                 result_type=ACC, weight_type=W8, bias_type=W8, accum_type=ACC,
                 weight_codes=rng.integers(-128, 128, (out_ch, *kernel, c)),
                 bias_codes=rng.integers(-128, 128, out_ch),
                 attrs={"kernel": list(kernel), "stride": [1, 1], "pads": list(pads)})


def _elementwise(name, op, prev, result_type):
    return Layer(name, op, (prev.name,), (prev.out_shape,), prev.out_shape, input_type=prev.result_type,
                 result_type=result_type)


def lenet_design(io_type="io_stream", conv_rf=1, dense_rf=1, strategy="latency", seed=0) -> Design:
    """input (8, 8, 1) -> conv 3x3 (4) -> relu (quant to U8) -> maxpool 2 -> flatten -> dense (10)."""
    rng = np.random.default_rng(seed)
    inp = Layer("input", Op.INPUT, (), (), (8, 8, 1), result_type=I8)
    conv = _conv("conv", inp, 4, rng)
    relu = _elementwise("relu", Op.RELU, conv, U8)
    pool = Layer("pool", Op.MAXPOOL2D, ("relu",), ((6, 6, 4),), (3, 3, 4), input_type=U8, result_type=U8,
                 accum_type=U8, attrs={"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0]})
    flat = Layer("flat", Op.FLATTEN, ("pool",), ((3, 3, 4),), (36,), input_type=U8, result_type=U8)
    dense = Layer("dense", Op.DENSE, ("flat",), ((36,),), (10,), input_type=U8, result_type=ACC, weight_type=W8,
                  bias_type=W8, accum_type=ACC, weight_codes=rng.integers(-128, 128, (36, 10)),
                  bias_codes=rng.integers(-128, 128, 10))
    graph = Graph("lenet-tiny", [inp, conv, relu, pool, flat, dense], IOSpec("input", (8, 8, 1), "NHWC", I8),
                  IOSpec("dense", (10,), "flat", ACC)).validate()
    choices = {"conv": {"reuse_factor": conv_rf, "strategy": strategy, "io_type": io_type},
               "dense": {"reuse_factor": dense_rf, "strategy": strategy, "io_type": io_type}}
    return Design(graph, "hls4ml", "pynq-z2", 100.0, choices, {}, {"io_type": io_type})


def residual_design(fifo_depths=None, seed=0) -> Design:
    """input (6, 6, 2) -> relu -> {conv 3x3 pad 1 (2) -> quant; identity} -> add -> flatten: a skip connection."""
    rng = np.random.default_rng(seed)
    inp = Layer("input", Op.INPUT, (), (), (6, 6, 2), result_type=I8)
    relu = _elementwise("relu", Op.RELU, inp, U8)
    conv = _conv("conv", relu, 2, rng, pads=(1, 1, 1, 1))
    q = _elementwise("requant", Op.QUANT, conv, I8)
    add = Layer("add", Op.ADD, ("requant", "relu"), ((6, 6, 2), (6, 6, 2)), (6, 6, 2), input_type=I8,
                result_type=FixedType(True, 10, 6))
    flat = Layer("flat", Op.FLATTEN, ("add",), ((6, 6, 2),), (72,), input_type=add.result_type,
                 result_type=add.result_type)
    graph = Graph("residual", [inp, relu, conv, q, add, flat], IOSpec("input", (6, 6, 2), "NHWC", I8),
                  IOSpec("flat", (72,), "flat", add.result_type)).validate()
    return Design(graph, "hls4ml", "pynq-z2", 100.0, {"conv": {"reuse_factor": 1, "strategy": "latency"}},
                  fifo_depths or {}, {"io_type": "io_stream"})

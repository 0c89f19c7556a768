"""The models of hls4ml's published C-synthesis baselines (tests/sim/data/hls4ml_baselines.json) as IR designs."""

import json
from pathlib import Path

import numpy as np

from potatura.hw.ir import Design, Graph, IOSpec, Layer, Op
from potatura.hw.types import FixedType

DATA = Path(__file__).with_name("data") / "hls4ml_baselines.json"
T16 = FixedType(True, 16, 6)  # hls4ml's default precision


def _same_pads(size, pool, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + pool - size, 0)
    return total // 2, total - total // 2


def design_of(case: dict) -> Design:
    rng = np.random.default_rng(0)
    name = case["name"]
    layers = []
    if name.startswith("relu"):
        inp = Layer("input", Op.INPUT, (), (), (1,), result_type=T16)
        dense = Layer("dense", Op.DENSE, ("input",), ((1,),), (64,), input_type=T16, result_type=T16, weight_type=T16,
                      bias_type=T16, accum_type=T16, weight_codes=rng.integers(-512, 512, (1, 64)),
                      bias_codes=rng.integers(-512, 512, 64))
        relu = Layer("relu", Op.RELU, ("dense",), ((64,),), (64,), input_type=T16, result_type=T16)
        layers = [inp, dense, relu]
        choices = {"dense": {"reuse_factor": 1, "strategy": case["strategy"]}}
    elif name.startswith("conv2d"):
        inp = Layer("input", Op.INPUT, (), (), (28, 28, 3), result_type=T16)
        conv = Layer("conv", Op.CONV2D, ("input",), ((28, 28, 3),), (7, 7, 32), input_type=T16, result_type=T16,
                     weight_type=T16, accum_type=T16, weight_codes=rng.integers(-512, 512, (32, 4, 4, 3)),
                     attrs={"kernel": [4, 4], "stride": [4, 4], "pads": [0, 0, 0, 0]})
        layers = [inp, conv]
        choices = {"conv": {"reuse_factor": 1, "strategy": case["strategy"]}}
    else:
        op = Op.MAXPOOL2D if "maxpool" in name else Op.AVGPOOL2D
        pads = [0, 0, 0, 0]
        if "same" in name:
            top, bottom = _same_pads(18, 2, 2)
            left, right = _same_pads(15, 2, 2)
            pads = [top, left, bottom, right]
        out_h = (18 + pads[0] + pads[2] - 2) // 2 + 1
        out_w = (15 + pads[1] + pads[3] - 2) // 2 + 1
        inp = Layer("input", Op.INPUT, (), (), (18, 15, 3), result_type=T16)
        pool = Layer("pool", op, ("input",), ((18, 15, 3),), (out_h, out_w, 3), input_type=T16, result_type=T16,
                     accum_type=T16, attrs={"kernel": [2, 2], "stride": [2, 2], "pads": pads})
        layers = [inp, pool]
        choices = {}
    last = layers[-1]
    graph = Graph(name, layers, IOSpec("input", layers[0].out_shape, "NHWC" if len(layers[0].out_shape) == 3
                                       else "flat", T16),
                  IOSpec(last.name, last.out_shape, "NHWC" if len(last.out_shape) == 3 else "flat", T16)).validate()
    for c in choices.values():
        c["io_type"] = case["io_type"]
    return Design(graph, "hls4ml", "none", 200.0, choices, {}, {"io_type": case["io_type"]})


def cases() -> list[dict]:
    return json.loads(DATA.read_text())["cases"]

"""The HLSinf-style backend: planner (fusion, iterations, row frames, width limit), packers, fitter,
registration, and the engine's C simulation bit-exact against QONNX on the digits LeNet-5.

One g++ compile of the engine per session (hlsinf_lenet_projects), shared by the csim tests.
"""

import json

import numpy as np
import pytest

from potatura.errors import UnsupportedError
from potatura.hw.ir import Graph, IOSpec, Layer, Op, load_design
from potatura.hw.types import FixedType
from potatura.hwgen.hlsinf.planner import (EngineConfig, call_cycles, pack_activations, plan_graph,
                                           unpack_activations)

from .conftest import assert_bit_exact

I8 = FixedType(True, 8, 4, "RND_CONV", "SAT")
U8 = FixedType(False, 8, 4, "RND_CONV", "SAT")
W8 = FixedType(True, 8, 1, "RND_CONV", "SAT_SYM")
ACC = FixedType(True, 24, 13)  # frac 11 = 4 + 7


def conv_graph(h: int, w: int, channels: list[int], pads=(1, 1, 1, 1), pool: bool = False, seed: int = 0,
               kernel: int = 3) -> Graph:
    """input -> [conv kxk -> relu -> quant (-> maxpool)] per channel step, random 8-bit weights."""
    rng = np.random.default_rng(seed)
    layers = [Layer("in", Op.INPUT, (), (), (h, w, channels[0]), result_type=I8)]
    prev, shape = layers[0], (h, w, channels[0])
    for k, (ci, co) in enumerate(zip(channels, channels[1:])):
        p = pads if kernel == 3 else (0, 0, 0, 0)
        oh, ow = shape[0] + p[0] + p[2] - kernel + 1, shape[1] + p[1] + p[3] - kernel + 1
        conv = Layer(f"conv{k}", Op.CONV2D, (prev.name,), (shape,), (oh, ow, co), input_type=prev.result_type,
                     result_type=ACC, weight_type=W8, bias_type=ACC, accum_type=ACC,
                     weight_codes=rng.integers(-127, 128, (co, kernel, kernel, ci)),
                     bias_codes=rng.integers(-5000, 5000, co),
                     attrs={"kernel": [kernel, kernel], "stride": [1, 1], "pads": list(p)})
        relu = Layer(f"relu{k}", Op.RELU, (conv.name,), ((oh, ow, co),), (oh, ow, co), input_type=ACC,
                     result_type=FixedType(False, 23, 12))
        quant = Layer(f"quant{k}", Op.QUANT, (relu.name,), ((oh, ow, co),), (oh, ow, co),
                      input_type=relu.result_type, result_type=U8)
        layers += [conv, relu, quant]
        prev, shape = quant, (oh, ow, co)
        if pool:
            pooled = (oh // 2, ow // 2, co)
            mp = Layer(f"pool{k}", Op.MAXPOOL2D, (prev.name,), (shape,), pooled, input_type=U8, result_type=U8,
                       attrs={"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0]})
            layers.append(mp)
            prev, shape = mp, pooled
    graph = Graph("t", layers, IOSpec("in", (h, w, channels[0]), "NHWC", I8), IOSpec(prev.name, shape, "NHWC", U8))
    return graph.validate()


def test_cycle_model_reproduces_the_public_66692_cycle_report():
    """HARDWARE.md section 3: 256x256, I=O=CPI=CPO=4, padding 1 -> 258*258 + 128 = 66,692 cycles."""
    assert call_cycles(256, 256, (1, 1, 1, 1), 1, 1) == 66_692
    plan = plan_graph(conv_graph(256, 256, [4, 4]), EngineConfig(4, 4, 256, 256))
    assert [c.cycles for c in plan.calls] == [66_692]
    assert (plan.calls[0].i_iter, plan.calls[0].o_iter) == (1, 1)


def test_fusion_requantization_and_iterations():
    plan = plan_graph(conv_graph(8, 8, [3, 10, 5], pool=True), EngineConfig(4, 4, 64, 64))
    first, second = plan.calls
    assert first.fused == ["conv0", "relu0", "quant0", "pool0"]
    assert (first.relu, first.shift, first.rounding, first.clip, first.pool) == (True, 7, "RND_CONV", (0, 255), "max")
    assert (first.i_iter, first.o_iter, second.i_iter, second.o_iter) == (1, 3, 3, 2)
    assert (second.in_h, second.out_h, second.out_w) == (4, 2, 2)
    assert plan.iterations() == 1 * 3 + 3 * 2
    # Filters GO x GI x CPO x CPI x 3 x 3 with the layer's weights in place.
    packed = plan.weights["conv1"].filters
    assert packed.shape == (2, 3, 4, 4, 3, 3)
    w = conv_graph(8, 8, [3, 10, 5], pool=True).layer("conv1").weight_codes  # (O, KH, KW, I)
    assert packed[1, 2, 0, 1, 2, 0] == w[4, 2, 0, 9]  # o = 1*4+0, i = 2*4+1
    assert packed[1, 2, 1, 2].sum() == 0  # o = 5 and i = 10 are padding


def test_row_frames_taller_than_ho_max_and_width_limit():
    graph = conv_graph(20, 12, [4, 4], pool=True)
    plan = plan_graph(graph, EngineConfig(4, 4, 7, 16))  # frames of 6 conv rows (even: the call pools)
    frames = plan.calls
    assert [c.frames for c in frames] == [4] * 4
    assert [c.pads for c in frames] == [(1, 1, 0, 1), (0, 1, 0, 1), (0, 1, 0, 1), (0, 1, 1, 1)]
    assert [(c.in_row0, c.in_rows) for c in frames] == [(0, 7), (5, 8), (11, 8), (17, 3)]
    assert [(c.out_row0, c.out_rows) for c in frames] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    # Every frame's schedule, and the frames together read each padded row of the layer once plus the halos.
    assert sum(c.cycles for c in frames) == sum(call_cycles(c.in_rows, 12, c.pads, 1, 1) for c in frames)
    assert sum(c.in_rows + c.pads[0] + c.pads[2] - 2 for c in frames) == 20
    with pytest.raises(UnsupportedError, match=r"layer 'conv0'.*output width 12 exceeds WO_MAX=8"):
        plan_graph(graph, EngineConfig(4, 4, 64, 8))


def test_refusals_name_the_layer():
    with pytest.raises(UnsupportedError, match=r"layer 'conv0'.*kernel \[5, 5\]"):
        plan_graph(conv_graph(8, 8, [1, 2], kernel=5), EngineConfig(4, 4, 64, 64))
    g = conv_graph(8, 8, [1, 2])
    g.layer("conv0").attrs["stride"] = [2, 2]
    with pytest.raises(UnsupportedError, match=r"layer 'conv0'.*stride \[2, 2\]"):
        plan_graph(g, EngineConfig(4, 4, 64, 64))


def test_pruned_model_needs_fewer_iterations_in_the_ratio_of_channel_groups():
    dense = plan_graph(conv_graph(16, 16, [8, 32, 32]), EngineConfig(4, 4, 64, 64))
    pruned = plan_graph(conv_graph(16, 16, [8, 16, 16]), EngineConfig(4, 4, 64, 64))
    # I_ITER*O_ITER per layer: dense 2*8 + 8*8 = 80, pruned 2*4 + 4*4 = 24.
    assert (dense.iterations(), pruned.iterations()) == (80, 24)
    pixel = 18 * 18
    assert dense.cycles == 80 * pixel + (8 + 8) * 128 and pruned.cycles == 24 * pixel + (4 + 4) * 128


def test_ghwc_packer_round_trip_and_addresses():
    x = np.arange(3 * 5 * 6).reshape(3, 5, 6)
    buf = pack_activations(x, 4)
    assert buf.size == 2 * 3 * 5 * 4
    # address = gi*H*W*CPI + h*W*CPI + w*CPI + ii
    assert buf[1 * 15 * 4 + 2 * 5 * 4 + 3 * 4 + 1] == x[2, 3, 5]
    assert buf[1 * 15 * 4 + 2 * 5 * 4 + 3 * 4 + 2] == 0  # channel 6: padding
    plan = plan_graph(conv_graph(3, 5, [6, 4]), EngineConfig(4, 4, 8, 8))
    assert np.array_equal(unpack_activations(buf, plan.tensors["in"], 4), x)


def test_backend_registered_and_supports():
    from potatura.hw.backends import unsupported_onnx_ops
    from potatura.hwgen.backend import get_backend
    from potatura.hwgen.config import HwgenConfig

    cfg = HwgenConfig(backends=["hls4ml", "hlsinf"])
    assert list(cfg.backends) == ["hls4ml", "hlsinf"]
    backend = get_backend("hlsinf")
    assert backend.supports(conv_graph(8, 8, [1, 4], pool=True)) == []
    problems = backend.supports(conv_graph(8, 8, [1, 4], kernel=5))
    assert len(problems) == 1 and "conv0" in problems[0]
    assert unsupported_onnx_ops("hlsinf", ["Conv", "Relu", "Add"]) == ["Add (IR add: not built by the hlsinf backend)"]


def test_fitter_per_board():
    from potatura.boards.catalog import get_board
    from potatura.hwgen.hlsinf.fitter import fit_engine

    graph = conv_graph(8, 8, [1, 8, 8])
    small, large = fit_engine(graph, get_board("pynq-z2")), fit_engine(graph, get_board("zcu104"))
    assert (small.engine.cpi, small.engine.cpo) == (4, 4)  # 4*4*9 = 144 DSP of 176 (80% of 220)
    assert small.totals["dsp"] == 144 and small.fits
    assert large.engine.cpi * large.engine.cpo == 128 and large.totals["dsp"] == 1152  # of 1,382
    assert small.source == "estimated" and "estimated" in small.table()
    assert large.plan.cycles < small.plan.cycles


@pytest.fixture(scope="session")
def hlsinf_lenet_projects(cnn_qonnx, tmp_path_factory):
    """The digits LeNet-5 (pruned + simplified, 8-bit) through hwgen with both backends on pynq-z2."""
    from potatura.hwgen.config import HwgenConfig
    from potatura.hwgen.stage import run_hwgen

    quant = cnn_qonnx.parent
    out = tmp_path_factory.mktemp("hlsinf") / "hwgen"
    cfg = HwgenConfig(boards=["pynq-z2"], backends={"hlsinf": {"ho_max": 4, "wo_max": 8}})
    run_hwgen(cfg, cnn_qonnx, quant / "golden.npz", out, quant / "quant.json")
    return out


def test_lenet5_csim_bit_exact_with_row_frames(hlsinf_lenet_projects):
    project = hlsinf_lenet_projects / "pynq-z2" / "hlsinf"
    csim = json.loads((project / "csim.json").read_text())
    assert_bit_exact(csim)
    design = load_design(project)
    assert design.backend == "hlsinf"
    plan = design.backend_info["plan"]
    assert plan["engine"]["ho_max"] == 4
    frames = [c for c in plan["calls"] if c["layer"] == "Conv_0"]
    assert len(frames) == 2 and frames[0]["pads"][2] == 0 and frames[1]["pads"][0] == 0
    index = json.loads((hlsinf_lenet_projects / "index.json").read_text())
    assert [(e["board"], e["backend"]) for e in index] == [("pynq-z2", "hlsinf")]
    for name in ("project/src/hlsinf_kernel.h", "project/src/hlsinf_top.cpp", "project/hls.tcl",
                 "project/build_overlay.tcl", "project/driver/hlsinf_driver.py", "project/BUILD.md",
                 "project/plan.json", "fit_report.md"):
        assert (project / name).is_file(), name
    assert "S_AXI_HP0" in (project / "project" / "build_overlay.tcl").read_text()

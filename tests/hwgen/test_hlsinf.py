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
    """docs/hardware.md section 3: 256x256, I=O=CPI=CPO=4, padding 1 -> 258*258 + 128 = 66,692 cycles."""
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
    g.layer("conv0").attrs["stride"] = [3, 3]
    with pytest.raises(UnsupportedError, match=r"layer 'conv0'.*stride \[3, 3\]"):
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
    assert unsupported_onnx_ops("hlsinf", ["Conv", "Relu", "Add", "Concat"]) == [
        "Concat (IR concat: not built by the hlsinf backend)"]


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


def test_vgg_style_csim_bit_exact_with_spatial_flatten(hlsinf_lenet_projects, quantize_model):
    """conv-BN-ReLU blocks (BN folded by quant), max pooling, and a flatten of a 4x4x6 tensor whose dense
    weights are permuted to read the GHWC buffer as it lies (6 channels padded to 8): same engine, no new compile."""
    from potatura.boards.catalog import get_board
    from potatura.hwgen.config import HwgenConfig
    from potatura.hwgen.hlsinf.fitter import fit_engine
    from potatura.hwgen.hlsinf.project import verify_plan
    from potatura.hwgen.reader import read_qonnx
    from potatura.hwgen.stage import load_golden, qonnx_reference

    q = quantize_model("vgg-small", epochs=3, layout=[4, "M", 6], hidden=16)
    graph = read_qonnx(q.paths["qonnx"]).graph
    assert graph.layer("Flatten_0").in_shape == (4, 4, 6)
    cfg = HwgenConfig(backends={"hlsinf": {"ho_max": 4, "wo_max": 8}}).backend("hlsinf")
    fit = fit_engine(graph, get_board("pynq-z2"), cfg)
    dense = [c for c in fit.plan.calls if c.layer == "MatMul_0"][0]
    assert dense.i == 2 * 4 * 4 * 4 and dense.i_iter == 32  # the whole GHWC buffer, 4 words a cycle
    x, _ = load_golden(q.paths["golden"])
    csim = verify_plan(fit, graph, hlsinf_lenet_projects / "pynq-z2" / "hlsinf" / "csim", x,
                       qonnx_reference(q.paths["qonnx"], x))
    assert_bit_exact(csim.to_dict())
    assert csim.seconds["compiled"] is False  # the LeNet-5 session's library


def resnet_graph(seed: int = 0) -> Graph:
    """A ResNet-style IR graph: stem, an identity block, a stride-2 block with a 1x1 stride-2 shortcut,
    global average pooling (16 pixels: exact), dense; residual operands at different fractional bits."""
    rng = np.random.default_rng(seed)
    q5 = FixedType(True, 8, 3, "RND_CONV", "SAT")  # frac 5: the residual branch's last requantization
    relu_t = FixedType(False, 23, 12)
    layers: list[Layer] = [Layer("in", Op.INPUT, (), (), (8, 8, 4), result_type=I8)]

    def conv(name, src, ci, co, hw, k=3, stride=1, pads=(1, 1, 1, 1)):
        p = layers_by[src]
        out = ((hw[0] + pads[0] + pads[2] - k) // stride + 1, (hw[1] + pads[1] + pads[3] - k) // stride + 1, co)
        layers.append(Layer(name, Op.CONV2D, (src,), (p.out_shape,), out, input_type=p.result_type, result_type=ACC,
                            weight_type=W8, bias_type=ACC, accum_type=ACC,
                            weight_codes=rng.integers(-127, 128, (co, k, k, ci)),
                            bias_codes=rng.integers(-5000, 5000, co),
                            attrs={"kernel": [k, k], "stride": [stride, stride], "pads": list(pads)}))
        layers_by[name] = layers[-1]
        return out

    def unary(name, op, src, result):
        p = layers_by[src]
        layers.append(Layer(name, op, (src,), (p.out_shape,), p.out_shape, input_type=p.result_type, result_type=result))
        layers_by[name] = layers[-1]

    def add(name, a, b):
        ta, tb = layers_by[a].result_type, layers_by[b].result_type
        frac = max(ta.frac, tb.frac)
        lo = ta.min_code * 2 ** (frac - ta.frac) + tb.min_code * 2 ** (frac - tb.frac)
        hi = ta.max_code * 2 ** (frac - ta.frac) + tb.max_code * 2 ** (frac - tb.frac)
        shape = layers_by[a].out_shape
        layers.append(Layer(name, Op.ADD, (a, b), (shape, shape), shape, input_type=ta,
                            result_type=FixedType.holding(lo, hi, frac)))
        layers_by[name] = layers[-1]
        return hi, frac

    layers_by = {"in": layers[0]}
    conv("stem", "in", 4, 8, (8, 8))
    unary("stem_relu", Op.RELU, "stem", relu_t)
    unary("x0", Op.QUANT, "stem_relu", U8)
    conv("b1c1", "x0", 8, 8, (8, 8))
    unary("b1r1", Op.RELU, "b1c1", relu_t)
    unary("b1q1", Op.QUANT, "b1r1", U8)
    conv("b1c2", "b1q1", 8, 8, (8, 8))
    unary("b1q2", Op.QUANT, "b1c2", q5)
    hi, frac = add("b1add", "b1q2", "x0")
    unary("b1relu", Op.RELU, "b1add", FixedType.holding(0, hi, frac))
    unary("x1", Op.QUANT, "b1relu", U8)
    conv("b2c1", "x1", 8, 16, (8, 8), stride=2)
    unary("b2r1", Op.RELU, "b2c1", relu_t)
    unary("b2q1", Op.QUANT, "b2r1", U8)
    conv("b2c2", "b2q1", 16, 16, (4, 4))
    unary("b2q2", Op.QUANT, "b2c2", q5)
    conv("b2sc", "x1", 8, 16, (8, 8), k=1, stride=2, pads=(0, 0, 0, 0))
    unary("b2qsc", Op.QUANT, "b2sc", I8)
    hi, frac = add("b2add", "b2q2", "b2qsc")
    unary("b2relu", Op.RELU, "b2add", FixedType.holding(0, hi, frac))
    unary("x2", Op.QUANT, "b2relu", U8)
    mean_t = FixedType.holding(0, 255 * 16, U8.frac + 4)
    layers.append(Layer("gap", Op.GLOBAL_AVGPOOL, ("x2",), ((4, 4, 16),), (16,), input_type=U8, result_type=mean_t,
                        accum_type=FixedType.holding(0, 255 * 16 * 16, U8.frac + 4)))
    fc_acc = FixedType(True, 25, 10)
    layers.append(Layer("fc", Op.DENSE, ("gap",), ((16,),), (10,), input_type=mean_t, result_type=fc_acc,
                        weight_type=W8, accum_type=fc_acc, weight_codes=rng.integers(-127, 128, (16, 10))))
    return Graph("resnet-style", layers, IOSpec("in", (8, 8, 4), "NHWC", I8), IOSpec("fc", (10,), "flat", fc_acc)).validate()


@pytest.fixture(scope="session")
def engine_lib(tmp_path_factory):
    """The engine as the csim tests of hand-built graphs use it (one g++ compile)."""
    from potatura.hwgen.hlsinf.csim import compile_engine

    engine = EngineConfig(4, 4, 4, 8, data_bits=32, weight_bits=8, acc_bits=32, pixel_bits=16)
    return engine, compile_engine(engine, tmp_path_factory.mktemp("hlsinf-engine"))[0]


def test_resnet_style_csim_bit_exact_against_the_ir_reference(engine_lib):
    """Residual adds (+ReLU, requantization of the sum), a stride-2 conv, a 1x1 stride-2 shortcut, global
    average pooling as a sum, row frames: the engine's C simulation equals the simulator's reference ops."""
    from potatura.hwgen.hlsinf.csim import run_plan
    from potatura.sim.functional import run_layer

    engine, lib = engine_lib
    graph = resnet_graph()
    plan = plan_graph(graph, engine)
    calls = {}
    for c in plan.calls:
        calls.setdefault(c.layer, c)  # the first frame
    assert calls["b1c2"].add_input == "x0" and calls["b1c2"].add_shifts == (0, 1)
    assert calls["b2sc"].add_input == "b2q2" and calls["b2sc"].fused[-1] == "x2"
    assert calls["b2c1"].pool == "stride2" and calls["b2sc"].pads[:2] == (1, 1)  # 1x1 as 3x3 with padding 1
    assert (calls["b2sc"].relu2, calls["b2sc"].shift2, calls["b2sc"].rounding2) == (True, 1, "RND_CONV")
    assert calls["gap"].i == 4 * 4 * 4 * 4 and calls["gap"].o == 16
    assert len([c for c in plan.calls if c.layer == "stem"]) == 2  # 8 rows in frames of 4
    x = np.random.default_rng(1).integers(I8.min_code, I8.max_code + 1, (32, 8, 8, 4))
    values, types = {"in": x}, {"in": I8}
    for layer in graph.layers[1:]:
        values[layer.name] = run_layer(layer, [values[p] for p in layer.inputs], [types[p] for p in layer.inputs])
        types[layer.name] = layer.result_type
    reference = values["fc"]
    assert np.abs(reference).max() > 1000  # a real signal, not zeros
    y = run_plan(lib, plan, x).reshape(len(x), -1)
    assert np.array_equal(y, reference)


def test_lenet5_project_runs_in_the_simulator(hlsinf_lenet_projects, cnn_qonnx):
    """`potatura sim` path: load_project picks the HLSinf model by backend; golden codes bit-exact; the
    engine's schedule is the fitter's cycle figure (compute bound at pynq-z2's DDR bandwidth)."""
    from potatura.sim.api import load_project
    from potatura.sim.hlsinf import HlsinfAccelerator

    project = hlsinf_lenet_projects / "pynq-z2" / "hlsinf"
    acc = load_project(project)
    assert isinstance(acc, HlsinfAccelerator)
    with np.load(cnn_qonnx.parent / "golden.npz", allow_pickle=False) as golden:
        x, y = golden["x"], golden["y_codes"]
    out = acc.run(acc.encode(x))
    assert np.array_equal(out.reshape(len(x), -1), y.reshape(len(x), -1))
    fit = json.loads((project / "fit_report.json").read_text())
    report = acc.cycles()
    assert report.latency_cycles == fit["interval_cycles"] == sum(c["cycles"] for c in fit["calls"])
    assert all(c["memory_cycles"] < c["compute_cycles"] for c in report.per_layer)


def test_resnet8_from_the_zoo_csim_bit_exact(hlsinf_lenet_projects, quantize_model):
    """ResNet-8 (widths 4, 8, 8) trained briefly on digits, 8-bit, read from QONNX: residual adds, stride-2
    convs, 1x1 shortcuts, the shortcut's own requantization (an identity call), global average pooling."""
    from potatura.boards.catalog import get_board
    from potatura.hwgen.config import HwgenConfig
    from potatura.hwgen.hlsinf.fitter import fit_engine
    from potatura.hwgen.hlsinf.project import verify_plan
    from potatura.hwgen.reader import read_qonnx
    from potatura.hwgen.stage import load_golden, qonnx_reference

    q = quantize_model("resnet8", epochs=3, widths=(4, 8, 8))
    graph = read_qonnx(q.paths["qonnx"]).graph
    cfg = HwgenConfig(backends={"hlsinf": {"ho_max": 4, "wo_max": 8}}).backend("hlsinf")
    fit = fit_engine(graph, get_board("pynq-z2"), cfg)
    kinds = {(graph.layer(c.layer).op.value, c.pool, c.add_input is not None) for c in fit.plan.calls}
    assert {("conv2d", "stride2", False), ("conv2d", "none", True), ("global_avgpool", "none", False),
            ("quant", "none", False)} <= kinds
    x, _ = load_golden(q.paths["golden"])
    csim = verify_plan(fit, graph, hlsinf_lenet_projects / "pynq-z2" / "hlsinf" / "csim", x,
                       qonnx_reference(q.paths["qonnx"], x))
    assert_bit_exact(csim.to_dict())


@pytest.mark.parametrize("board", ["zcu104", "alveo-u200"])
def test_project_files_for_zynq_and_alveo(board, tmp_path):
    """The generated HLS top compiles (g++ -fsyntax-only with hls4ml's ap_types; pragmas are for HLS), the
    Zynq block design puts the four AXI masters on HP ports, the Alveo host files list every call."""
    import shutil
    import subprocess

    from potatura.boards.catalog import get_board
    from potatura.hwgen.hlsinf.csim import ap_types_dir
    from potatura.hwgen.hlsinf.project import generate_project

    graph = resnet_graph()
    result = generate_project(graph, get_board(board), tmp_path)
    project = tmp_path / "project"
    proc = subprocess.run([shutil.which("g++"), "-std=c++14", "-fsyntax-only", "-w", f"-I{ap_types_dir()}",
                           f"-I{project / 'src'}", str(project / "src" / "hlsinf_top.cpp")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_design(tmp_path).backend_info["engine"]["cpi"] == result.fit.engine.cpi
    if board == "zcu104":
        tcl = (project / "build_overlay.tcl").read_text()
        assert "m_axi_gmem_add" in tcl and "S_AXI_HP3_FPD" in tcl
        assert (project / "driver" / "hlsinf_driver.py").is_file()
    else:
        calls = [line.split() for line in (project / "calls.txt").read_text().splitlines()]
        assert len(calls) == len(result.fit.plan.calls) and all(len(c) == 4 + 27 for c in calls)
        tensors = [line.split()[0] for line in (project / "tensors.txt").read_text().splitlines()]
        residual = [c for c in result.fit.plan.calls if c.add_input is not None]
        assert residual and all(int(calls[result.fit.plan.calls.index(c)][3]) == tensors.index(c.add_input)
                                for c in residual)
        assert "sp=hlsinf_0.act_add:DDR[0]" in (project / "connectivity.cfg").read_text()
        assert len(list((project / "weights").glob("*_filters.bin"))) == len(result.fit.plan.weights)



class _FakeBuffer(np.ndarray):
    """pynq.allocate's buffer: a numpy array with a physical address (here: a key of the fake DDR)."""

    def flush(self):
        pass

    def invalidate(self):
        pass


def _fake_pynq(lib, driver_args):
    """A stand-in for the pynq package: allocate() in a fake DDR; an Overlay whose hlsinf_0, on ap_start, runs
    the engine's C simulation with the registers the driver wrote (read back as the 32/64-bit registers
    hold them) on the buffers their addresses name."""
    import ctypes
    import types

    ddr: dict = {}

    def allocate(shape, dtype):
        buf = np.zeros(shape, dtype=dtype).view(_FakeBuffer)
        buf.physical_address = 0x1000_0000 + 0x100_0000 * len(ddr)
        ddr[buf.physical_address] = buf
        return buf

    def signed(value, bits):
        return value - (1 << bits) if value >= 1 << (bits - 1) else value

    def ptr(a):
        return a.ctypes.data_as(ctypes.POINTER(ctypes.c_longlong))

    class Engine:
        def __init__(self):
            self.register_map = types.SimpleNamespace()
            self.starts = 0

        def write(self, offset, value):
            if offset != 0 or not value & 1:
                return
            regs = vars(self.register_map)
            args = np.array([signed(regs[n], 64 if n.startswith("clip") else 32) for n in driver_args], dtype=np.int64)
            arrays = [ddr[regs[n]].astype(np.int64) for n in ("act_in", "filters", "bias", "act_add", "act_out")]
            rc = lib.hlsinf_call(*(x for a in arrays for x in (ptr(a), a.size)), ptr(args), args.size)
            assert rc == 0
            ddr[regs["act_out"]][:] = arrays[-1]
            self.starts += 1

        def read(self, offset):
            return 0x2 | 0x4  # ap_done, ap_idle

    class Overlay:
        def __init__(self, bitfile):
            self.hlsinf_0 = Engine()

    return types.SimpleNamespace(allocate=allocate, Overlay=Overlay)


def test_pynq_driver_runs_the_plan_bit_exact(hlsinf_lenet_projects, cnn_qonnx, monkeypatch):
    """The project's PYNQ driver (as copied to the board) against a stand-in pynq whose engine is the csim
    library: register names and order, buffer types, GHWC packing, the loop over calls; bit-exact outputs."""
    import importlib.util
    import sys

    from potatura.hwgen.hlsinf.csim import compile_engine
    from potatura.hwgen.hlsinf.planner import Plan

    project = hlsinf_lenet_projects / "pynq-z2" / "hlsinf" / "project"
    spec = importlib.util.spec_from_file_location("hlsinf_driver", project / "driver" / "hlsinf_driver.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    plan = Plan.from_dict(json.loads((project / "plan.json").read_text()))
    lib, _ = compile_engine(plan.engine, hlsinf_lenet_projects / "pynq-z2" / "hlsinf" / "csim")
    monkeypatch.setitem(sys.modules, "pynq", _fake_pynq(lib, driver.ARGS))
    drv = driver.HlsinfDriver("overlay/hlsinf.bit", project)
    with np.load(cnn_qonnx.parent / "golden.npz", allow_pickle=False) as golden:
        x, y = golden["x_codes"][:20], golden["y_codes"][:20]
    out = drv.run(x.reshape(len(x), 8, 8, 1))
    assert np.array_equal(out.reshape(len(x), -1), y.reshape(len(x), -1))
    assert drv.ip.starts == 20 * len(plan.calls)

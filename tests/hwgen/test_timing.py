"""The fitter's cycles come from the simulator; the simulator's sized FIFO depths go into the project."""

import re

from potatura.boards.catalog import get_board
from potatura.hw.ir import load_design
from potatura.hwgen.hls4ml.fitter import fit_network
from potatura.hwgen.hls4ml.lowering import hls_name, read_network
from potatura.hwgen.hls4ml.project import fifo_depth_targets
from potatura.hwgen.hls4ml.timing import SimCycles, design_for
from potatura.sim.api import Accelerator, design_cycles, sized_fifo_depths
from potatura.sim.schedule import Network

from .conftest import assert_bit_exact


def test_fit_cycles_are_the_simulated_design(cnn_qonnx):
    net = read_network(cnn_qonnx)
    board = get_board("pynq-z2")
    fit = fit_network(net, board, "io_stream")
    sim = design_cycles(design_for(net.graph, board, "io_stream", fit.layer_choices()))
    assert (fit.latency_cycles, fit.interval_cycles) == (sim["latency_cycles"], sim["interval_cycles"])
    assert fit.to_dict()["cycles"].startswith("simulated") and "cycles simulated" in fit.table()
    # per layer: the busiest module of the layer in the simulator's schedule of the chosen design
    network = Network(design_for(net.graph, board, "io_stream", fit.layer_choices()))
    for f in fit.layers:
        modules = [m for name, m in zip(network.module_layer, network.modules)
                   if name == f.layer.name and m.op not in ("axi_in", "axi_out")]
        busiest = max((sum(s.busy for s in m.program) for m in modules), default=0)
        assert f.estimate.cycles == busiest, f.layer.name
    # io_parallel: each conv/dense layer's cycles are its initiation interval in the simulator
    par = fit_network(net, board, "io_parallel")
    par_sim = design_cycles(design_for(net.graph, board, "io_parallel", par.layer_choices()))
    assert par.interval_cycles == par_sim["interval_cycles"] and par.latency_cycles == par_sim["latency_cycles"]


def test_layer_schedules_are_cached_and_follow_the_reuse_factor(cnn_qonnx):
    net = read_network(cnn_qonnx)
    model = SimCycles(net.graph, get_board("zcu104"))
    dense = next(layer for layer in net.compute_layers if layer.op.value == "dense")
    conv = next(layer for layer in net.compute_layers if layer.op.value == "conv2d")
    assert model(dense, "io_parallel", "Latency", 2)[0] == 2  # dense_latency at II = RF
    assert model(dense, "io_parallel", "Latency", 4)[0] == 4
    top, left, bottom, right = conv.pads
    padded = (conv.in_shape[0] + top + bottom) * (conv.in_shape[1] + left + right)
    assert model(conv, "io_stream", "Latency", 1)[0] == padded  # one padded pixel per cycle at II = RF = 1
    before = model.schedules_built
    model(dense, "io_parallel", "Latency", 2)
    model(conv, "io_stream", "Latency", 1)
    assert model.schedules_built == before  # cached per (layer, io type, strategy, RF)
    fit_network(net, get_board("zcu104"), "io_stream", cycles_model=model)
    relu = next(layer for layer in net.layers if layer.op.value == "relu")
    built = model.schedules_built
    model(relu, "io_stream")
    assert model.schedules_built == built  # layers without weights: scheduled all at once


def test_project_fifo_depths_are_the_simulators_sized_ones(cnn_flow, cnn_report):
    run_dir, outcomes = cnn_flow
    where = run_dir / outcomes["hwgen"].outputs["pynq-z2.hls4ml"]
    design = load_design(where)
    # the depths design.json holds are the simulator's sizing of the design with hls4ml's defaults
    default = dict(design.fifo_depths)
    for layer in design.graph.layers:
        if layer.op.value not in ("flatten",):
            shape = layer.out_shape
            default[layer.name] = (shape[0] * shape[1]) if len(shape) == 3 else 1
    sized = Accelerator(design).size_fifos()
    for key, depth in sized.items():
        assert design.fifo_depths[key] == depth, key
    assert sized == sized_fifo_depths(design)
    assert any(design.fifo_depths[k] < default[k] for k in sized if k in default)  # smaller than hls4ml's
    assert design.backend_info["fifo_depths"].startswith("sized by potatura.sim")
    # ... and they are the stream pragmas of the generated C++
    cpp = (where / "project" / "firmware" / "potatura_accel.cpp").read_text()
    pragma = dict(re.findall(r"#pragma HLS STREAM variable=(\w+) depth=(\d+)", cpp))
    calls = {name: out for out, name in re.findall(r"nnet::\w+<[^>]*>\(\w+, (\w+)[^;]*;\s*//\s*(\w+)", cpp)}
    targets = fifo_depth_targets_from_design(design)
    checked = 0
    for key, hls_layer in targets.items():
        if hls_layer in calls and calls[hls_layer] in pragma:
            assert int(pragma[calls[hls_layer]]) == design.fifo_depths[key], key
            checked += 1
    assert checked >= 5
    axi = (where / "project" / "firmware" / "potatura_accel_axi.cpp").read_text()
    assert f"variable=in_local depth={design.fifo_depths[design.graph.input.layer]}" in axi
    # the depths change no value: csim stays bit-exact
    assert_bit_exact(cnn_report["projects"][0]["csim"])
    fit_md = (where / "fit_report.md").read_text()
    assert "cycles simulated" in fit_md


def fifo_depth_targets_from_design(design):
    class _Net:
        layers = design.graph.layers

    return fifo_depth_targets(_Net())


def test_hls_names_of_targets(cnn_qonnx):
    net = read_network(cnn_qonnx)
    targets = fifo_depth_targets(net)
    conv = next(layer for layer in net.compute_layers if layer.op.value == "conv2d" and any(layer.pads))
    assert targets[f"{conv.name}_pad"] == "zp2d_" + hls_name(conv)
    assert net.graph.input.layer not in targets


def test_hls4ml_default_depths_on_request(cnn_qonnx, tmp_path):
    """hwgen.backends.hls4ml.fifo_depths: hls4ml keeps hls4ml's depths (the producing layer's pixels)."""
    from potatura.hwgen.hls4ml.project import generate_project

    net = read_network(cnn_qonnx)
    generate_project(net, get_board("zcu104"), tmp_path / "p", io_type="io_stream", fifo_depths="hls4ml")
    design = load_design(tmp_path / "p")
    conv0 = design.graph.compute_layers[0]
    assert design.fifo_depths[conv0.name] == conv0.out_shape[0] * conv0.out_shape[1]
    assert design.backend_info["fifo_depths"].startswith("hls4ml 1.3 default")
    cpp = (tmp_path / "p" / "project" / "firmware" / "potatura_accel.cpp").read_text()
    depths = {int(d) for d in re.findall(r"#pragma HLS STREAM variable=\w+ depth=(\d+)", cpp)}
    assert conv0.out_shape[0] * conv0.out_shape[1] in depths

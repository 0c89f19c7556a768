"""Simulator outputs equal hls4ml's C simulation on every sample (MLP and LeNet-5, io_parallel and io_stream).

The projects are the hwgen session fixtures (each compiled once); the simulator loads them from
their design.json, as `potatura sim` does.
"""

import contextlib
import io

from pathlib import Path

import numpy as np
import pytest

from potatura.sim.api import load_project


def csim_outputs(hls_model, x_nchw, acc):
    """hls4ml's compiled C simulation on the accelerator's float inputs (channels-last)."""
    x = np.asarray(x_nchw, dtype=np.float32)
    if x.ndim == 4 and len(acc.input_shape) == 3:
        x = x.transpose(0, 2, 3, 1)
    x = np.ascontiguousarray(x.reshape(len(x), *acc.input_shape), dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):  # hls4ml prints its progress
        return np.asarray(hls_model.predict(x), dtype=np.float64).reshape(len(x), -1)


def test_mlp_resource_io_parallel_matches_csim(mlp_resource_project):
    _, net, x, reference, result = mlp_resource_project
    acc = load_project(result.out_dir)
    assert acc.network.io_type == "io_parallel"
    y = acc.decode(acc.run(acc.encode(x))).reshape(len(x), -1)
    csim = csim_outputs(result.hls_model, x, acc)
    assert len(x) >= 100 and np.unique(y).size > 10
    assert np.array_equal(y, csim)
    assert np.array_equal(y, np.asarray(reference, dtype=np.float64).reshape(len(x), -1))


def _accelerator_inputs(x_nchw, acc):
    x = np.asarray(x_nchw, dtype=np.float32)
    if x.ndim == 4 and len(acc.input_shape) == 3:
        x = x.transpose(0, 2, 3, 1)
    return x.reshape(len(x), *acc.input_shape)


def test_lenet5_io_stream_matches_csim(cnn_flow):
    """The demo's LeNet-5 (pruned, simplified, 8 bits) as hwgen built it: io_stream, the fitter's RFs."""
    from potatura.sim.csim import csim_predict

    run_dir, outcomes = cnn_flow
    project = next(Path(p) for k, p in outcomes["hwgen"].outputs.items() if k.startswith("pynq-z2"))
    project = project if project.is_absolute() else run_dir / project
    acc = load_project(project)
    assert acc.network.io_type == "io_stream"
    assert any(layer["op"] == "conv2d" for layer in acc.cycles(2, size_fifos=False).per_layer)
    with np.load(run_dir / outcomes["quant"].outputs["golden"]) as g:
        x = g["x"]
    y = acc.decode(acc.run(acc.encode(x))).reshape(len(x), -1)
    csim = csim_predict(project, _accelerator_inputs(x, acc), int(np.prod(acc.output_shape)))
    assert len(x) >= 100 and np.unique(y).size > 10
    assert np.array_equal(y, csim)


def _lenet_project(cnn_flow):
    run_dir, outcomes = cnn_flow
    project = next(Path(p) for k, p in outcomes["hwgen"].outputs.items() if k.startswith("pynq-z2"))
    return project if project.is_absolute() else run_dir / project


def _busy(module) -> int:
    return sum(step.busy for step in module.program)


def test_doubling_reuse_factors_of_the_lenet5(cnn_flow):
    """io_stream: the interval is the busiest module's cycles per sample; doubling every RF moves it by
    exactly what that module's program (pixels x RF for a Latency conv) predicts."""
    import dataclasses

    from potatura.sim.api import Accelerator

    base = load_project(_lenet_project(cnn_flow))
    doubled_choices = {name: (dict(c, reuse_factor=2 * c["reuse_factor"]) if "reuse_factor" in c else c)
                       for name, c in base.design.layer_choices.items()}
    doubled = Accelerator(dataclasses.replace(base.design, layer_choices=doubled_choices))
    for acc in (base, doubled):
        r = acc.cycles(batch=4, size_fifos=False)
        assert r.interval_cycles == max(_busy(m) for m in acc.network.modules)
    r1, r2 = base.cycles(batch=4, size_fifos=False), doubled.cycles(batch=4, size_fifos=False)
    assert r2.interval_cycles > r1.interval_cycles and r2.latency_cycles > r1.latency_cycles
    for m1, m2 in zip(base.network.modules, doubled.network.modules):
        if m1.op == "conv2d" and m1.info.get("strategy") == "latency":
            assert m2.ii == 2 * m1.ii  # II per input pixel = RF
            assert _busy(m2) - _busy(m1) == m1.trip_count * m1.ii


@pytest.mark.slow
@pytest.mark.parametrize("model,board,io_type,strategy,reuse_factor", [
    ("mlp", "zcu104", "io_stream", "latency", 2),  # fully unrolled at RF 2 it needs more LUTs than a pynq-z2
    ("cnn", "zcu104", "io_parallel", "latency", 2),  # at RF 2 with the calibrated LUT margin it no longer fits a pynq-z2
])
def test_other_io_types_and_reuse_factors_match_csim(model, board, io_type, strategy, reuse_factor, mlp_quant,
                                                     cnn_flow, tmp_path):
    """One more project each (compiled here): the MLP streamed, the LeNet-5 in io_parallel, RF 2."""
    from potatura.boards.catalog import get_board
    from potatura.hwgen.hls4ml.lowering import read_network
    from potatura.hwgen.hls4ml.project import generate_project
    from potatura.hwgen.stage import load_golden, qonnx_reference
    from potatura.sim.csim import csim_predict

    if model == "mlp":
        qonnx, golden = mlp_quant.paths["qonnx"], mlp_quant.paths["golden"]
    else:
        run_dir, outcomes = cnn_flow
        qonnx = run_dir / outcomes["quant"].outputs["qonnx"]
        golden = run_dir / outcomes["quant"].outputs["golden"]
    net = read_network(qonnx)
    x, _ = load_golden(golden)
    x = x[:100]
    result = generate_project(net, get_board(board), tmp_path / board / "hls4ml", io_type=io_type,
                              strategy=strategy, reuse_factor=reuse_factor, x_nchw=x,
                              reference=qonnx_reference(qonnx, x))
    acc = load_project(result.out_dir)
    assert acc.network.io_type == io_type
    assert any(c.get("reuse_factor") == reuse_factor for c in acc.design.layer_choices.values())
    y = acc.decode(acc.run(acc.encode(x))).reshape(len(x), -1)
    csim = csim_predict(result.out_dir, _accelerator_inputs(x, acc), int(np.prod(acc.output_shape)))
    assert np.unique(y).size > 10
    assert np.array_equal(y, csim)

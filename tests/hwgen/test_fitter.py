"""The fitter: valid reuse factors only, designs within the board budget, a clear error when nothing fits."""

import math

import pytest

from potatura.boards.catalog import get_board, load_catalog
from potatura.errors import ConfigError
from potatura.hwgen.hls4ml.compat import hls4ml_valid_reuse_factors
from potatura.hwgen.hls4ml.fitter import (
    FitError,
    bram18_blocks,
    estimate_layer,
    fit_network,
    fit_or_raise,
    valid_reuse_factors,
)
from potatura.hwgen.hls4ml.lowering import hls_name, read_network
from potatura.hwgen.hls4ml.timing import SimCycles


@pytest.mark.parametrize("n_in,n_out", [(9, 4), (36, 16), (64, 32), (144, 10), (7, 13)])
def test_valid_reuse_factors_are_hls4ml_own(n_in, n_out):
    assert list(valid_reuse_factors(n_in, n_out)) == hls4ml_valid_reuse_factors(n_in, n_out)


def test_bram18_blocks_pick_the_best_aspect_ratio():
    assert bram18_blocks(36, 512) == 1
    assert bram18_blocks(8, 2048) == 1  # 9 x 2048
    assert bram18_blocks(72, 600) == 4  # 2 wide x 2 deep at 36 x 512
    assert bram18_blocks(1, 16385) == 2


@pytest.mark.parametrize("board", [b for b in load_catalog()])
def test_choices_are_valid_and_fit_every_board(cnn_qonnx, board):
    net = read_network(cnn_qonnx)
    fit = fit_network(net, get_board(board), "io_stream", 0.8)
    assert fit.fits
    budget = fit.budget
    for r in ("lut", "ff", "dsp", "bram18"):
        assert fit.totals[r] <= budget[r] == math.floor(get_board(board).resources()[r] * 0.8)
    for f in fit.layers:
        if f.layer.has_weights:
            assert f.estimate.reuse_factor in valid_reuse_factors(f.layer.n_in, f.layer.n_out)
            assert f.estimate.strategy in ("Latency", "Resource")


def test_pynq_z2_and_zcu104_get_different_parallelism(cnn_qonnx):
    net = read_network(cnn_qonnx)
    small = fit_network(net, get_board("pynq-z2"), "io_stream")
    large = fit_network(net, get_board("zcu104"), "io_stream")
    assert small.fits and large.fits
    assert small.reuse_factors() != large.reuse_factors()
    assert large.totals["multipliers"] > small.totals["multipliers"]
    assert all(large.reuse_factors()[k] <= v for k, v in small.reuse_factors().items())
    # the bigger board runs at least as fast (simulated cycles)
    assert large.latency_cycles <= small.latency_cycles


def test_multipliers_follow_hls4ml_multiplier_limit(cnn_qonnx):
    net = read_network(cnn_qonnx)
    cycles = SimCycles(net.graph, get_board("pynq-z2"))
    for layer in net.compute_layers:
        n, zeros = layer.n_weights, layer.n_zeros
        for rf in valid_reuse_factors(layer.n_in, layer.n_out)[:4]:
            latency = estimate_layer(layer, "io_stream", "zynq-7000", "Latency", rf, cycles)
            resource = estimate_layer(layer, "io_stream", "zynq-7000", "Resource", rf, cycles)
            assert latency.multipliers == math.ceil(n / rf) - zeros // rf  # zero weights removed
            assert resource.multipliers == math.ceil(n / rf)  # Resource keeps them
            # 8-bit operands: LUT multipliers, no DSP (below the DSP width)
            assert latency.dsp == 0 and latency.lut > 0


def test_wide_operands_use_dsps(cnn_qonnx):
    net = read_network(cnn_qonnx)
    layer = net.compute_layers[0]
    import dataclasses

    wide = dataclasses.replace(layer, weight_type=dataclasses.replace(layer.weight_type, width=16, integer=8),
                               input_type=dataclasses.replace(layer.input_type, width=16, integer=8))
    est = estimate_layer(wide, "io_stream", "zynq-7000", "Latency", 1, SimCycles(net.graph, get_board("pynq-z2")))
    assert est.dsp == est.multipliers > 0


def test_reuse_factor_overrides(cnn_qonnx):
    net = read_network(cnn_qonnx)
    board = get_board("zcu104")
    conv0 = net.compute_layers[0]
    fixed = fit_network(net, board, "io_stream", reuse_factor={hls_name(conv0): 3})
    assert fixed.reuse_factors()[hls_name(conv0)] == 3
    valid = ", ".join(map(str, valid_reuse_factors(conv0.n_in, conv0.n_out)))
    assert valid == "1, 3, 9, 18, 36"  # 9x4: hls4ml rejects 2, 4, 6, 12
    with pytest.raises(ConfigError, match=f"5 is not a valid reuse factor for layer Conv2D_Conv_0 \\(9x4\\); valid: {valid}$"):
        fit_network(net, board, "io_stream", reuse_factor={hls_name(conv0): 5})
    with pytest.raises(ConfigError, match="unknown layer"):
        fit_network(net, board, "io_stream", reuse_factor={"conv9": 1})
    snapped = fit_network(net, board, "io_stream", reuse_factor=5)
    for f in snapped.layers:
        if f.layer.has_weights:
            assert f.estimate.reuse_factor in valid_reuse_factors(f.layer.n_in, f.layer.n_out)
            assert (f.estimate.reuse_factor == 5) == (f.note == "")


def test_too_big_for_pynq_z2_at_any_reuse_factor(quantize_model):
    """A 64-1024-1024-10 MLP: 8 Mbit of 8-bit weights, more than pynq-z2's block RAM at any RF."""
    big = quantize_model("lenet300", epochs=1, hidden=(1024, 1024))
    net = read_network(big.paths["qonnx"])
    with pytest.raises(FitError) as err:
        fit_or_raise(net, get_board("pynq-z2"), "io_parallel")
    msg = str(err.value)
    assert "does not fit pynq-z2 at any reuse factor within 80% of the device" in msg
    assert "over budget: " in msg and "bram18" in msg
    assert "| Dense_MatMul_1 | dense | Resource | " in msg  # the table, at the cheapest configuration
    # the named board is the smallest catalog board the fitter accepts
    fitting = [b for b in load_catalog().values() if fit_network(net, b, "io_parallel").fits]
    smallest = min(fitting, key=lambda b: (b.lut, b.dsp, b.bram18))
    assert f"the smallest catalog board it fits (estimated): {smallest.name}" in msg
    assert smallest.name not in ("pynq-z1", "pynq-z2", "ultra96-v2", "kv260")

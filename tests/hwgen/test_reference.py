"""Exact reference for wide types (issue 11 item 10): accumulators over 24 bits are compared with the
simulator's integer execution, not the float32 QONNX executor, and the report says which."""

import numpy as np
import torch

from potatura.artifacts import read_json


def test_16_bit_mlp_is_checked_against_the_exact_reference(digits, tmp_path):
    from potatura.hwgen.config import HwgenConfig
    from potatura.hwgen.reader import read_qonnx
    from potatura.hwgen.stage import REFERENCE_EXACT, exact_reference, load_golden, qonnx_reference, run_hwgen
    from potatura.models import build_model
    from potatura.quant.config import QuantConfig
    from potatura.quant.pipeline import quantize

    from .conftest import _train

    torch.manual_seed(0)
    model = _train(build_model("lenet300", (1, 8, 8), 10, hidden=(16, 16)), digits, epochs=2)
    quant = quantize(model, digits, QuantConfig(calibration_samples=128, weight_bits=16, act_bits=16),
                     tmp_path / "quant", seed=0)
    graph = read_qonnx(quant.paths["qonnx"]).graph
    assert not all(layer.accum_type.float_exact(24) for layer in graph.compute_layers)  # wide accumulators
    x, _ = load_golden(quant.paths["golden"])
    x = x[:120]
    exact = exact_reference(graph, x)
    float32 = qonnx_reference(quant.paths["qonnx"], x).reshape(len(x), -1)
    assert np.any(exact != float32)  # the float32 executor rounds somewhere: it cannot be the reference here
    assert np.max(np.abs(exact - float32)) < 1e-3 * np.max(np.abs(exact))  # ... but it is the same model

    out = tmp_path / "hwgen"
    run_hwgen(HwgenConfig(boards=["zcu104"], csim_samples=120, backends={"hls4ml": {"io_type": "io_parallel"}}),
              quant.paths["qonnx"], quant.paths["golden"], out)
    report = read_json(out / "report.json")
    assert report["reference"]["kind"] == REFERENCE_EXACT
    assert report["reference"]["qonnx_float32_equal_samples"] < report["reference"]["samples"] == 120
    csim = report["projects"][0]["csim"]
    assert csim["exact_matches"] == csim["samples"] == 120 and csim["max_abs_difference"] == 0.0
    assert REFERENCE_EXACT in (out / "report.md").read_text()

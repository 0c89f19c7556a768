"""hls4ml C simulation (g++) against the QONNX integer reference: bit-exact on every sample.

The compiled projects are the session fixtures of conftest.py (one io_stream CNN from the real
flow, one io_parallel MLP with the Resource strategy); nothing here compiles again.
"""

import numpy as np

from potatura.artifacts import file_sha256, read_json
from potatura.hwgen.hls4ml_backend import check_types, run_csim
from potatura.hwgen.project import qonnx_reference

from .conftest import assert_bit_exact


def test_cnn_after_simplify_is_bit_exact_in_csim(cnn_flow, cnn_report):
    run_dir, outcomes = cnn_flow
    simplify = read_json(run_dir / "simplify" / "summary.json")
    assert simplify["parameters_after"] < simplify["parameters_before"]  # the model was really made smaller
    (project,) = cnn_report["projects"]
    assert project["board"] == "pynq-z2" and project["io_type"] == "io_stream" and project["fits"]
    assert_bit_exact(project["csim"])
    # the fitter had to share multipliers on pynq-z2: the bit-exact design is not just RF 1 everywhere
    assert max(project["reuse_factors"].values()) > 1
    golden = np.load(run_dir / outcomes["quant"].outputs["golden"])
    assert project["csim"]["samples"] == len(golden["x"])
    assert cnn_report["golden"]["consistent"] and cnn_report["quant_json"]["consistent"]


def test_cnn_project_files(cnn_flow, cnn_report):
    run_dir, outcomes = cnn_flow
    where = run_dir / outcomes["hwgen"].outputs["pynq-z2.hls4ml"]
    project = where / "project"
    manifest = read_json(where / "manifest.json")
    assert manifest["part"] == "xc7z020clg400-1" and manifest["clock_mhz"] == 100
    assert manifest["input"]["type"].startswith("ap_fixed<8,") and "AP_RND_CONV,AP_SAT" in manifest["input"]["type"]
    for name, digest in manifest["files"].items():
        assert file_sha256(project / name) == digest
    tcl = (project / "build_overlay.tcl").read_text()
    assert 'set part "xc7z020clg400-1"' in tcl and "set fclk_mhz 100" in tcl and "CONFIG.c_include_sg {0}" in tcl
    assert "overlay/${overlay_name}.hwh" in tcl and "processing_system7" in tcl
    make = (project / "Makefile").read_text()
    assert "build_prj.tcl" in make and "-source build_overlay.tcl" in make
    assert (project / "firmware" / "potatura_accel_axi.cpp").is_file()
    assert (project / "axi_stream_driver.py").is_file()
    fit = read_json(where / "fit_report.json")
    assert fit["figures"] == "estimated" and fit["fits"]
    assert "not requested" in manifest["build"]["message"]


def test_mlp_io_parallel_resource_is_bit_exact(mlp_resource_project):
    qonnx, net, x, reference, result = mlp_resource_project
    assert result.fit.io_type == "io_parallel"
    assert {f.estimate.strategy for f in result.fit.layers if f.layer.has_weights} == {"Resource"}
    assert_bit_exact(result.csim.to_dict())
    assert check_types(net, result.hls_model) == []


def test_mlp_csim_exact_on_saturating_and_worst_case_inputs(mlp_resource_project):
    """Inputs that saturate the input quantizer, sit on rounding ties, or drive the first layer's
    accumulators to their extremes: no wrap-around, same rounding as QONNX."""
    qonnx, net, x, _, result = mlp_resource_project
    first = net.compute_layers[0]
    lsb = first.input_type.lsb
    lo, hi = first.input_type.min_code * lsb, first.input_type.max_code * lsb
    w = first.weight_codes  # (n_in, n_out)
    rng = np.random.default_rng(0)
    rows = [np.where(w[:, j] > 0, hi, lo) for j in range(w.shape[1])]
    rows += [np.where(w[:, j] > 0, lo, hi) for j in range(w.shape[1])]
    rows += list(rng.choice([-100.0, 100.0, 0.5 * lsb, -1.5 * lsb, 2.5 * lsb], size=(32, w.shape[0])))
    xs = np.asarray(rows, dtype=np.float32).reshape(-1, *x.shape[1:])
    reference = qonnx_reference(qonnx, xs)
    csim, y = run_csim(result.hls_model, net, xs, reference)
    assert csim.samples == len(xs) == 2 * w.shape[1] + 32
    assert csim.exact_matches == csim.samples, csim
    assert np.abs(y).max() > 0

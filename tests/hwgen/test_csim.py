"""hls4ml C simulation (g++) against the QONNX integer reference: bit-exact on every sample.

The compiled projects are the session fixtures of conftest.py (one io_stream CNN from the real
flow, one io_parallel MLP with the Resource strategy); nothing here compiles again.
"""

import numpy as np

from potatura.artifacts import file_sha256, read_json
from potatura.hw.ir import load_design
from potatura.hwgen.hls4ml.convert import check_types, run_csim
from potatura.hwgen.hls4ml.lowering import read_network
from potatura.hwgen.stage import qonnx_reference

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
    assert cnn_report["golden"]["x_codes"] == "consistent"


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


def test_cnn_project_holds_its_design_and_the_stage_indexes_it(cnn_flow, cnn_report, cnn_qonnx):
    run_dir, outcomes = cnn_flow
    (entry,) = read_json(run_dir / outcomes["hwgen"].outputs["index"])
    assert entry["board"] == "pynq-z2" and entry["backend"] == "hls4ml" and entry["path"] == "hwgen/pynq-z2/hls4ml"
    assert entry["fits"] and entry["csim"]["exact_matches"] == entry["csim"]["samples"] > 0
    design = load_design(run_dir / entry["path"])
    assert (design.backend, design.board, design.clock_mhz) == ("hls4ml", "pynq-z2", 100.0)
    assert design.backend_info["io_type"] == "io_stream" and design.backend_info["project_name"] == "potatura_accel"
    assert design.graph == read_network(cnn_qonnx).graph  # the lowered graph, weights included, exactly
    (project,) = cnn_report["projects"]
    chosen = {c["hls4ml_name"]: c["reuse_factor"] for c in design.layer_choices.values() if "reuse_factor" in c}
    assert chosen == project["reuse_factors"]
    # every stream, the input and the zero padding of a padded conv included (depths: tests/hwgen/test_timing.py)
    conv0 = design.graph.compute_layers[0]
    assert set(design.fifo_depths) == {layer.name for layer in design.graph.layers} | {f"{conv0.name}_pad"}
    assert 1 <= design.fifo_depths[conv0.name] <= conv0.out_shape[0] * conv0.out_shape[1]


def test_golden_holds_integer_codes_on_the_designs_grids(cnn_flow):
    run_dir, outcomes = cnn_flow
    design = load_design(run_dir / "hwgen" / "pynq-z2" / "hls4ml")
    t_in, t_out = design.graph.input.type, design.graph.output.type
    with np.load(run_dir / outcomes["quant"].outputs["golden"], allow_pickle=False) as g:
        assert g["x_codes"].dtype == np.int64 and g["x_codes"].shape == g["x"].shape
        assert int(g["x_exponent"]) == -t_in.frac and int(g["y_exponent"]) == -t_out.frac
        expected = np.clip(np.rint(g["x"].astype(np.float64) * 2.0 ** t_in.frac), t_in.min_code, t_in.max_code)
        assert np.array_equal(g["x_codes"], expected)
        assert np.array_equal(g["y_codes"] * 2.0 ** int(g["y_exponent"]), g["y"].astype(np.float64))
        assert g["y_codes"].min() >= t_out.min_code and g["y_codes"].max() <= t_out.max_code


def test_golden_codes_of_another_model_are_refused(cnn_flow, tmp_path):
    import pytest

    from potatura.errors import DataError
    from potatura.hw.types import FixedType
    from potatura.hwgen.stage import check_input_codes

    run_dir, outcomes = cnn_flow
    golden = run_dir / outcomes["quant"].outputs["golden"]
    t = load_design(run_dir / "hwgen" / "pynq-z2" / "hls4ml").graph.input.type
    with np.load(golden, allow_pickle=False) as g:
        arrays = {k: g[k] for k in g.files}
    assert check_input_codes(golden, arrays["x"], t) == "consistent"
    other = FixedType(t.signed, t.width, t.integer + 1, t.rounding, t.saturation)  # another input grid
    with pytest.raises(DataError, match="do not encode x in the model's input type"):
        check_input_codes(golden, arrays["x"], other)
    np.savez(tmp_path / "g.npz", **dict(arrays, x_codes=arrays["x_codes"] + 3))
    with pytest.raises(DataError, match="the golden file does not belong to this model"):
        check_input_codes(tmp_path / "g.npz", arrays["x"], t)

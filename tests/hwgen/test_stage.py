"""The hwgen stage and command: caching, per-board projects, build files, reports, clear errors."""

import copy
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from potatura.artifacts import read_json
from potatura.boards.catalog import get_board
from potatura.config import load_config
from potatura.errors import ConfigError, UnsupportedError
from potatura.flow import run_flow
from potatura.hwgen.hls4ml.convert import check_types
from potatura.hwgen.hls4ml.lowering import read_network
from potatura.hwgen.hls4ml.project import generate_project, vendor_tools
from potatura.hwgen.reports import parse_csynth_xml, parse_utilization
from potatura.hwgen.stage import cross_check_quant_json

from .conftest import CNN_FLOW


def test_unchanged_flow_skips_hwgen(cnn_flow):
    run_dir, outcomes = cnn_flow
    assert outcomes["hwgen"].status == "done"
    cfg = load_config(None, dict(CNN_FLOW, runs_dir=str(run_dir.parent)))
    again = run_flow(cfg, show_progress=False)
    assert [o.status for o in again] == ["skipped"] * 4
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["stages"]["hwgen"]["status"] == "done"
    assert set(manifest["stages"]["hwgen"]["outputs"]) == {"pynq-z2.hls4ml", "report", "summary", "index"}


def test_unknown_board_in_the_flow_file():
    with pytest.raises(ConfigError, match=r"hwgen.boards: unknown board\(s\) 'pynq-z3'; known boards: pynq-z1, "):
        load_config(None, {"hwgen": {"boards": ["pynq-z3"]}})


def test_zcu104_project_gets_its_own_part_and_us_plus_block_design(cnn_qonnx, tmp_path):
    net = read_network(cnn_qonnx)
    result = generate_project(net, get_board("zcu104"), tmp_path / "zcu104", build=True)
    project = tmp_path / "zcu104" / "project"
    assert 'set part "xczu7ev-ffvc1156-2-e"' in (project / "project.tcl").read_text()
    assert "Part: xczu7ev-ffvc1156-2-e" in (project / "hls4ml_config.yml").read_text()
    tcl = (project / "build_overlay.tcl").read_text()
    assert "zynq_ultra_ps_e" in tcl and 'set family "zynq-ultrascale+"' in tcl
    # hls4ml's own block design (for its ZCU102 template's part) is not left beside build_overlay.tcl
    assert not (project / "design.tcl").exists()
    assert not any("xczu9eg" in p.read_text(errors="replace") for p in project.glob("*.tcl"))
    assert "allocate(shape=y_shape, dtype=out_dtype)" in (project / "axi_stream_driver.py").read_text()
    if not all(vendor_tools(get_board("zcu104")).values()):
        assert not result.build.ran and "not on PATH" in result.build.message
        assert read_json(tmp_path / "zcu104" / "fit_report.json")["figures"] == "estimated"
    assert result.csim is None and not (tmp_path / "zcu104" / "csim.json").exists()


def test_alveo_project_has_the_vpp_flow(cnn_qonnx, tmp_path):
    net = read_network(cnn_qonnx)
    generate_project(net, get_board("alveo-u50"), tmp_path / "u50")
    project = tmp_path / "u50" / "project"
    make = (project / "Makefile").read_text()
    platform = get_board("alveo-u50").platform
    assert f"PLATFORM ?= {platform}" in make and "$(VPP) -t hw --platform $(PLATFORM)" in make
    assert "--kernel_frequency 300" in make
    assert (project / "design.tcl").is_file() and not (project / "build_overlay.tcl").exists()
    assert 'set part "xcu50-fsvh2104-2-e"' in (project / "project.tcl").read_text()


def test_type_differences_are_caught(mlp_resource_project):
    _, net, _, _, result = mlp_resource_project
    changed = copy.deepcopy(net)
    layer = changed.compute_layers[0]
    layer.accum_type = dataclasses.replace(layer.accum_type, width=layer.accum_type.width + 1,
                                           integer=layer.accum_type.integer + 1)
    problems = check_types(changed, result.hls_model)
    assert len(problems) == 1 and "Dense_MatMul_0" in problems[0] and "accum" in problems[0]


def test_quant_json_gate_and_cross_check(mlp_quant, tmp_path):
    net = read_network(mlp_quant.paths["qonnx"]).graph
    ok = cross_check_quant_json(net, mlp_quant.paths["quant_json"])
    assert ok["consistent"] and ok["tensors_checked"] >= 7
    info = read_json(mlp_quant.paths["quant_json"])
    info["hardware_ready"] = False
    info["hardware_problems"] = ["float biases in Gemm_0"]
    bad = tmp_path / "quant.json"
    bad.write_text(json.dumps(info))
    with pytest.raises(UnsupportedError, match="cannot go to the hls4ml backend: float biases in Gemm_0"):
        cross_check_quant_json(net, bad)


CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion><Version>2019.2</Version></ReportVersion>
  <UserAssignments><unit>ns</unit><ProductFamily>zynq</ProductFamily><Part>xc7z020-clg400-1</Part>
    <TopModelName>potatura_accel_axi</TopModelName><TargetClockPeriod>10.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><unit>ns</unit><EstimatedClockPeriod>8.634</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><unit>clock cycles</unit><Best-caseLatency>412</Best-caseLatency>
      <Average-caseLatency>412</Average-caseLatency><Worst-caseLatency>415</Worst-caseLatency>
      <Interval-min>101</Interval-min><Interval-max>103</Interval-max></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates><Resources><BRAM_18K>14</BRAM_18K><DSP48E>3</DSP48E><FF>12045</FF><LUT>30112</LUT>
    <URAM>0</URAM></Resources></AreaEstimates>
</profile>
"""

UTILIZATION = """+----------------------------+-------+-------+-----------+-------+
|          Site Type         |  Used | Fixed | Available | Util% |
+----------------------------+-------+-------+-----------+-------+
| Slice LUTs                 | 28311 |     0 |     53200 | 53.22 |
|   LUT as Logic             | 27100 |     0 |     53200 | 50.94 |
| Slice Registers            | 15022 |     0 |    106400 | 14.12 |
+----------------------------+-------+-------+-----------+-------+
|     Site Type     | Used | Fixed | Available | Util% |
| Block RAM Tile    |  7.5 |     0 |       140 |  5.36 |
|   RAMB36/FIFO*    |    5 |     0 |       140 |  3.57 |
| DSPs              |    3 |     0 |       220 |  1.36 |
"""


def test_vendor_reports_are_parsed(tmp_path):
    (tmp_path / "csynth.xml").write_text(CSYNTH)
    rep = parse_csynth_xml(tmp_path / "csynth.xml")
    assert (rep["lut"], rep["ff"], rep["dsp"], rep["bram18"], rep["uram"]) == (30112, 12045, 3, 14, 0)
    assert (rep["latency_worst_cycles"], rep["interval_max_cycles"], rep["estimated_clock_ns"]) == (415, 103, 8.634)
    (tmp_path / "util.rpt").write_text(UTILIZATION)
    util = parse_utilization(tmp_path / "util.rpt")
    assert (util["lut"], util["ff"], util["dsp"], util["bram18"]) == (28311, 15022, 3, 15)


def test_hwgen_command_on_files(mlp_quant, tmp_path):
    out = tmp_path / "hw"
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "potatura", "hwgen", "--qonnx", str(mlp_quant.paths["qonnx"]),
                           "--out", str(out), "--board", "kv260", "--set", "hwgen.max_utilization=0.5"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hwgen kv260/hls4ml: io_parallel" in proc.stdout and "csim not run" in proc.stdout
    report = read_json(out / "report.json")
    assert report["projects"][0]["budget"]["lut"] == int(get_board("kv260").lut * 0.5)
    bad = subprocess.run([sys.executable, "-m", "potatura", "hwgen", "--qonnx", str(mlp_quant.paths["qonnx"]),
                          "--out", str(out), "--board", "pynq-z3"], capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "unknown board(s) 'pynq-z3'" in bad.stderr


@pytest.mark.vivado
def test_build_with_vendor_tools(cnn_qonnx, tmp_path):
    """Runs HLS synthesis, block design and bitstream: needs vivado_hls (or vitis_hls) and vivado on PATH."""
    board = get_board("pynq-z2")
    assert all(vendor_tools(board).values()), "vivado_hls/vitis_hls, vivado and make must be on PATH"
    result = generate_project(read_network(cnn_qonnx), board, tmp_path / "build", build=True)
    assert result.build.ran and result.build.message == "built", result.build.message
    assert "csynth" in result.build.reports and "utilization" in result.build.reports
    assert result.fit.source.startswith("implemented")
    overlay = tmp_path / "build" / "project" / "overlay"
    assert (overlay / "potatura_accel.bit").is_file() and (overlay / "potatura_accel.hwh").is_file()


def test_one_board_failing_does_not_stop_the_others_nor_delete_good_projects(cnn_qonnx, tmp_path, monkeypatch):
    """Forced RF 1 + Latency: the CNN fits zcu104 but not pynq-z2; each board is reported (issue 11 items 7, 8)."""
    from potatura.hwgen import stage as hwgen_stage
    from potatura.hwgen.config import HwgenConfig
    from potatura.hwgen.hls4ml import convert
    from potatura.hwgen.stage import run_hwgen

    cfg = HwgenConfig(boards=["pynq-z2", "zcu104"], csim=False,
                      backends={"hls4ml": {"io_type": "io_stream", "reuse_factor": 1, "strategy": "latency"}})
    out = tmp_path / "hwgen"
    run_hwgen(cfg, cnn_qonnx, None, out)
    report = read_json(out / "report.json")
    assert [p["board"] for p in report["projects"]] == ["zcu104"]
    (failed,) = report["failed"]
    assert failed["board"] == "pynq-z2" and failed["status"] == "does not fit"
    # the user forced the reuse factor: the error says so instead of "at any reuse factor"
    assert "with the setting you forced (hwgen.backends.hls4ml.reuse_factor: 1; hwgen.backends.hls4ml.strategy: " \
           "latency)" in failed["error"] and "at any reuse factor" not in failed["error"]
    assert [e["board"] for e in read_json(out / "index.json")] == ["zcu104"]
    line = hwgen_stage.headline(out)
    assert "zcu104/hls4ml: " in line and "pynq-z2/hls4ml: does not fit" in line
    assert "| pynq-z2 | hls4ml | does not fit |" in (out / "report.md").read_text()

    # A later run whose only project fails after the fit leaves the earlier project as it was.
    good = out / "zcu104" / "hls4ml"
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise convert.CsimError("hwgen: mock conversion failure")

    monkeypatch.setattr(convert, "convert", broken)
    with pytest.raises(convert.CsimError, match="mock conversion failure"):
        run_hwgen(HwgenConfig(boards=["zcu104"], csim=False), cnn_qonnx, None, out)
    after = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}
    assert after == before
    report = read_json(out / "report.json")
    assert report["projects"] == [] and report["failed"][0]["status"] == "failed"
    assert report["failed"][0]["partial"] == "zcu104/.hls4ml.partial"


def test_headline_after_a_build_prints_the_measured_figures(tmp_path):
    from potatura.hwgen.reports import measured_figures
    from potatura.hwgen.stage import headline

    (tmp_path / "csynth.xml").write_text(CSYNTH)
    (tmp_path / "util.rpt").write_text(UTILIZATION)
    measured = measured_figures({"csynth": parse_csynth_xml(tmp_path / "csynth.xml"),
                                 "utilization": parse_utilization(tmp_path / "util.rpt")})
    assert measured["lut"] == 28311 and measured["resources"].startswith("implemented")
    assert (measured["latency_cycles"], measured["interval_cycles"]) == (415, 103)
    project = {"board": "pynq-z2", "backend": "hls4ml", "fits": True, "csim": None, "measured": measured,
               "totals_estimated": {"multipliers": 1, "lut": 99999, "bram18": 1}, "interval_cycles": 100,
               "cycles": "simulated (potatura.sim)"}
    stage_dir = tmp_path / "hwgen"
    stage_dir.mkdir()
    (stage_dir / "report.json").write_text(json.dumps({"projects": [project]}))
    line = headline(stage_dir)
    assert "28,311 LUT, 3 DSP, 15 BRAM18 (implemented)" in line and "interval 103 cycles (synthesized)" in line
    assert "99,999" not in line  # not the estimate
    assert measured_figures({}) is None

"""The sim stage and command on a hand-built project (design.json + index.json + golden.npz)."""

import numpy as np
import pytest
from typer.testing import CliRunner

from potatura.artifacts import read_json, write_json
from potatura.hw.ir import save_design
from potatura.sim.api import load_project
from potatura.sim.config import SimConfig
from potatura.sim.stage import headline, run_sim
from tests.sim.designs import lenet_design


@pytest.fixture
def run_dir(tmp_path):
    """A run directory with hwgen/index.json -> one project, and quant/golden.npz whose last sample is wrong."""
    project = tmp_path / "hwgen" / "pynq-z2" / "hls4ml"
    save_design(lenet_design("io_stream", conv_rf=2), project)
    write_json(tmp_path / "hwgen" / "index.json", [{"board": "pynq-z2", "backend": "hls4ml",
                                                    "path": "hwgen/pynq-z2/hls4ml", "fits": True}])
    write_json(tmp_path / "hwgen" / "report.json", {"projects": []})
    acc = load_project(project)
    x = np.random.default_rng(0).integers(-128, 128, (20, 8, 8, 1))
    y = acc.run(x)
    y[-1, 0] += 1
    (tmp_path / "quant").mkdir()
    np.savez(tmp_path / "quant" / "golden.npz", x_codes=x, y_codes=y)
    return tmp_path


def test_stage_reports_cycles_fifos_and_the_outputs_check(run_dir):
    out = run_dir / "sim"
    outputs = run_sim(SimConfig(batch=4), run_dir / "hwgen", run_dir / "quant" / "golden.npz", out)
    report = read_json(outputs["pynq-z2.hls4ml"])
    check = report["outputs"]
    assert check["checked"] and check["samples"] == 20 and check["exact_matches"] == 19
    assert check["max_difference_codes"] == 1.0
    cycles = report["cycles"]
    assert cycles["interval_cycles"] == 64 * 2  # the conv at RF 2 per input pixel is the bottleneck
    assert cycles["latency_seconds"] == pytest.approx(cycles["latency_cycles"] / 100e6)
    assert {m["name"] for m in cycles["per_layer"]} == {"axi_in", "conv", "relu", "pool", "dense", "axi_out"}
    assert all(f["sized_depth"] >= 1 for f in cycles["fifos"])
    md = (out / "pynq-z2" / "hls4ml" / "report.md").read_text()
    assert "| conv | conv | conv2d | 2 |" in md and "sized depth" in md
    line = headline(out)
    assert "19/20" in line and f"interval {cycles['interval_cycles']:,} cycles" in line


def test_sim_command_on_one_project(run_dir, tmp_path):
    from potatura.cli import app

    result = CliRunner().invoke(app, ["sim", "--project", str(run_dir / "hwgen" / "pynq-z2" / "hls4ml"),
                                      "--golden", str(run_dir / "quant" / "golden.npz"), "--batch", "3",
                                      "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    assert "outputs bit-exact 19/20" in result.output
    assert read_json(tmp_path / "one" / "report.json")["cycles"]["batch"] == 3


def test_missing_design_is_one_clear_error(tmp_path):
    from potatura.errors import DataError

    write_json(tmp_path / "hwgen" / "index.json", [{"board": "pynq-z2", "backend": "hls4ml",
                                                    "path": "hwgen/pynq-z2/hls4ml", "fits": True}])
    with pytest.raises(DataError, match="design.json"):
        run_sim(SimConfig(), tmp_path / "hwgen", None, tmp_path / "sim")

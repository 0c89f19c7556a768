"""The deploy stage (bundles + emulated deployment + headline) and `potatura deploy --check`."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from typer.testing import CliRunner

from potatura.artifacts import read_json
from potatura.deploy.config import DeployConfig
from potatura.deploy.stage import headline, run_deploy
from potatura.sim.api import load_project


def test_stage_deploys_to_the_emulated_board_and_reports_the_headline(project, tmp_path):
    cfg = DeployConfig(golden_samples=16, batch_sizes=[1, 4], iterations=2, warmup=1)
    projects = [{"board": "pynq-z2", "backend": "hls4ml", "path": project, "fits": True},
                {"board": "zcu104", "backend": "hls4ml", "path": project, "fits": False},
                {"board": "alveo-u50", "backend": "hls4ml", "path": project, "fits": True}]
    outputs = run_deploy(cfg, projects, project / "golden.npz", tmp_path)
    assert (tmp_path / "pynq-z2" / "hls4ml" / "manifest.json").is_file()
    record = read_json(outputs["pynq-z2.hls4ml.result"])
    assert record["golden"]["exact"] == record["golden"]["samples"] == 16
    cycles = load_project(project).cycles(1).total_cycles
    assert record["benchmark"]["rows"][0]["hardware_cycles"] == [cycles]
    report = read_json(outputs["report"])
    assert [s.split(":")[0] for s in report["skipped"]] == ["zcu104/hls4ml", "alveo-u50/hls4ml"]
    line = headline(tmp_path)
    assert line.startswith("pynq-z2/hls4ml: golden 16/16 bit-exact on the emulated board; hardware-only latency "
                           f"{cycles / 100:.2f} us (batch 1, emulated, {cycles:,} simulated cycles at 100 MHz)")


def test_bundle_only_writes_bundles_and_runs_nothing(project, tmp_path):
    cfg = DeployConfig(target="bundle-only")
    run_deploy(cfg, [{"board": "pynq-z2", "backend": "hls4ml", "path": project, "fits": True}],
               project / "golden.npz", tmp_path)
    assert headline(tmp_path) == "pynq-z2/hls4ml: bundle written (bitstream placeholder: not built)"
    assert not (tmp_path / "pynq-z2" / "hls4ml.result.json").exists()


def test_cli_check_against_the_emulated_board_writes_junit(bundle, tmp_path):
    from potatura.cli import app

    junit = tmp_path / "hil.xml"
    result = CliRunner().invoke(app, ["deploy", "--check", "emulated", "--bundle", str(bundle), "--soak-seconds",
                                      "0.5", "--junit", str(junit), "--set", f"runs_dir={tmp_path}",
                                      "--set", "deploy.iterations=2", "--set", "deploy.batch_sizes=[1,2]"])
    assert result.exit_code == 0, result.output
    assert "golden      PASS" in result.output and "24/24 bit-exact" in result.output
    root = ET.parse(junit).getroot()
    assert root.get("tests") == "4" and root.get("failures") == "0"

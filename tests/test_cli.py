"""The potatura command: help everywhere, demo on the embedded default, stage subcommands."""

import json
import subprocess
import sys

import pytest

from potatura.flow import available_stages


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "potatura", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["demo", "--help"], ["boards", "--help"]]
                         + [[s, "--help"] for s in available_stages()])
def test_help_everywhere_with_an_example(args):
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "xample" in proc.stdout, proc.stdout


def test_demo_command_shortened(tmp_path):
    """The demo command's plumbing, with plain training for 3 epochs (the full demo is slow)."""
    proc = _cli("demo", "--runs-dir", str(tmp_path), "--set", "train.method=none", "--set", "train.epochs=3",
                "--set", "stages=[train]")
    assert proc.returncode == 0, proc.stderr
    assert f"run directory: {tmp_path / 'demo'}" in proc.stdout.replace("\n", "")
    summary = json.loads((tmp_path / "demo" / "train" / "summary.json").read_text())
    assert summary["model"] == "lenet5" and summary["dataset"] == "digits" and summary["epochs"] == 3
    assert summary["test_accuracy"] > 0.85


@pytest.mark.slow
def test_full_demo_prunes_and_verifies(tmp_path):
    """The README's main job exactly: every stage on digits, checked at each rung."""
    proc = _cli("demo", cwd=tmp_path)  # exactly as scripts/demo runs it: runs/ relative to the cwd
    assert proc.returncode == 0, proc.stderr
    assert "run directory: runs/demo" in proc.stdout
    run = tmp_path / "runs" / "demo"
    train = json.loads((run / "train" / "summary.json").read_text())
    assert train["test_accuracy"] >= 0.95 and train["remaining_parameters_pct"] < 50
    simplify = json.loads((run / "simplify" / "summary.json").read_text())
    assert simplify["parameters_after"] < simplify["parameters_before"] / 2
    assert simplify["validation"]["argmax_agreement"] == 1.0
    quant = json.loads((run / "quant" / "summary.json").read_text())
    assert quant["reference_check"]["exact_matches"] == quant["reference_check"]["samples"] > 0
    assert quant["hardware_ready"] is True
    hwgen = json.loads((run / "hwgen" / "report.json").read_text())
    csim = hwgen["projects"][0]["csim"]
    assert csim["exact_matches"] == csim["samples"] > 0
    sim = json.loads((run / "sim" / "pynq-z2" / "hls4ml" / "report.json").read_text())
    assert sim["outputs"]["exact_matches"] == sim["outputs"]["samples"] > 0
    assert sim["cycles"]["latency_cycles"] > 0 and sim["cycles"]["interval_cycles"] > 0
    deploy = json.loads((run / "deploy" / "pynq-z2" / "hls4ml.result.json").read_text())
    assert deploy["target"] == "emulated" and deploy["golden"]["exact"] == deploy["golden"]["samples"] > 0
    assert deploy["golden"]["timing"]["source"] == "emulated"
    latency = json.loads((run / "bench" / "latency.json").read_text())
    kinds = {r["name"]: r["kind"] for r in latency["results"]}
    assert kinds["fpga pynq-z2/hls4ml simulated"] == "simulated" and kinds["torch float"] == "measured"
    assert (run / "bench" / "report.html").stat().st_size > 10_000
    for stage in ("train", "simplify", "quant", "hwgen", "sim", "deploy", "bench"):
        assert f"{stage}:" in proc.stdout
    assert "report runs/demo/bench/report.html" in proc.stdout.replace("\n", " ")


def test_bad_set_option_is_one_line():
    proc = _cli("demo", "--set", "train.epochs")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --set 'train.epochs': expected KEY=VALUE, e.g. train.epochs=3"]


@pytest.mark.parametrize("args,message", [
    (["simplify", "--out", "x.pt"], "error: --out: only used with --model"),
    (["quant", "--out", "d"], "error: --out: only used with --model"),
    (["hwgen", "--golden", "g.npz"], "error: --golden: only used with --qonnx"),
])
def test_file_mode_options_without_their_file_are_errors(tmp_path, args, message):
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_stage_without_its_upstream_writes_nothing(tmp_path):
    proc = _cli("quant", cwd=tmp_path)
    assert proc.returncode == 2 and "needs stage 'train'" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_demo_set_options_choose_the_run_directory(tmp_path):
    proc = _cli("demo", "--set", f"runs_dir={tmp_path}", "--set", "name=mine", "--set", "train.method=none",
                "--set", "train.epochs=1", "--set", "stages=[train]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mine" / "train" / "model.pt").is_file()

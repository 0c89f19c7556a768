"""The potatura command: help everywhere, demo on the embedded default, stage subcommands."""

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


def test_demo_trains_lenet5_on_digits(tmp_path):
    """The README's main job, shortened: a few epochs of the embedded default."""
    proc = _cli("demo", "--runs-dir", str(tmp_path), "--set", "train.epochs=3", "--set", "stages=[train]")
    assert proc.returncode == 0, proc.stderr
    assert f"run directory: {tmp_path / 'demo'}" in proc.stdout.replace("\n", "")
    import json

    summary = json.loads((tmp_path / "demo" / "train" / "summary.json").read_text())
    assert summary["model"] == "lenet5" and summary["dataset"] == "digits" and summary["epochs"] == 3
    assert summary["test_accuracy"] > 0.85


def test_bad_set_option_is_one_line():
    proc = _cli("demo", "--set", "train.epochs")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --set 'train.epochs': expected KEY=VALUE, e.g. train.epochs=3"]

"""PSP-entropy on a hand-computed toy case, sharpness, and `potatura analyze`."""

import math

import pytest
import torch
from torch import nn

from potatura.train.psp import binary_entropy_bits, psp_entropy, psp_positive_fractions, sharpness


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(1, 3)
        self.fc2 = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0], [-1.0], [0.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))  # neuron 2 is pruned (zero weights)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_psp_entropy_hand_computed():
    # class 0: x = 1, -1, 2, -3 -> neuron 0 (PSP = x) positive for 2 of 4: p = 1/2 -> 1 bit
    # class 1: x = 1, 2         -> neuron 0 positive for 2 of 2: p = 1 -> clamped 0.9999
    # neuron 1 (PSP = -x): class 0 p = 1/2, class 1 p = 0 -> clamped 1e-4
    x = torch.tensor([[1.0], [-1.0], [2.0], [-3.0], [1.0], [2.0]])
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    model = Toy()
    fractions = psp_positive_fractions(model, x, y, 2, layers=[("fc1", model.fc1)])["fc1"]
    assert fractions.tolist() == [[0.5, 0.5, 1.0], [1.0, 0.0, 1.0]]
    h_clamped = -(0.9999 * math.log2(0.9999) + 1e-4 * math.log2(1e-4))  # 0.00147 bits
    result = psp_entropy(model, x, y, 2)
    assert list(result) == ["fc1"]  # the head is not analysed
    entropy = result["fc1"]["entropy"].tolist()
    assert entropy == pytest.approx([1.0 + h_clamped, 1.0 + h_clamped, 2 * h_clamped])
    assert result["fc1"]["alive"].tolist() == [True, True, False]
    assert float(binary_entropy_bits(torch.tensor(0.5))) == pytest.approx(1.0)


def test_conv_units_are_channel_positions():
    conv = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        conv[0].weight.fill_(1.0)
        conv[0].bias.zero_()
    x = torch.randn(10, 1, 2, 2)
    y = torch.randint(0, 2, (10,))
    r = psp_entropy(conv, x, y, 2)["0"]
    assert r["entropy"].shape == (8,) and r["alive"].all()


def test_sharpness_grows_with_alpha_and_is_zero_at_zero():
    torch.manual_seed(0)
    model = Toy()
    x, y = torch.randn(64, 1), torch.randint(0, 2, (64,))
    assert sharpness(model, x, y, alpha=0.0, trials=3)["mean_increase"] == 0.0
    small = sharpness(model, x, y, alpha=0.01, trials=20)["mean_increase"]
    large = sharpness(model, x, y, alpha=0.5, trials=20)["mean_increase"]
    assert large > small
    # the pruned neuron's zero weights stay zero under the relative perturbation: its PSP is unchanged
    assert torch.equal(model.fc1.weight[2], torch.zeros(1))


def test_potatura_analyze_command(tmp_path):
    import json
    import os
    import subprocess
    import sys

    flow = tmp_path / "flow.yaml"
    flow.write_text(f"name: a\nseed: 0\nruns_dir: {tmp_path / 'runs'}\nstages: [train]\nmodel:\n  name: lenet5\n"
                    "  options: {channels: [4, 8], hidden: 16}\ntrain:\n  method: none\n  epochs: 2\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-m", "potatura", "train", str(flow)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    run = tmp_path / "runs" / "a"
    # The command as potatura.train.cli registers it (the root CLI loads that module for `analyze`).
    import typer
    from typer.testing import CliRunner

    from potatura.errors import ConfigError
    from potatura.train.cli import register

    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["analyze", str(run), "--trials", "2"])
    assert res.exit_code == 0, res.output
    assert "conv1: 256 units, mean PSP entropy" in res.output and "sharpness: loss" in res.output
    report = json.loads((run / "analyze" / "analysis.json").read_text())
    assert set(report["entropy"]["layers"]) == {"conv1", "conv2", "fc1"}
    assert report["entropy"]["layers"]["conv1"]["units"] == 4 * 8 * 8
    assert report["sharpness"]["trials"] == 2 and len(report["sharpness"]["increases"]) == 2
    assert (run / "analyze" / "entropy.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "nope")])
    assert isinstance(bad.exception, ConfigError) and "not found" in str(bad.exception)
    # And through the root command (potatura.cli lists `analyze` with this module).
    root = subprocess.run([sys.executable, "-m", "potatura", "analyze", str(run), "--trials", "1",
                           "--max-samples", "40"], capture_output=True, text=True, env=env)
    assert root.returncode == 0, root.stderr
    assert json.loads((run / "analyze" / "analysis.json").read_text())["samples"] == 40
    missing = subprocess.run([sys.executable, "-m", "potatura", "analyze", str(tmp_path / "nope")],
                             capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "config.yaml not found" in missing.stderr

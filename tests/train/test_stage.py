"""The train stage in a flow: outputs, sparsity report, plots; `potatura train` options and errors."""

import json
import subprocess
import sys

import pytest

from potatura.config import load_config
from potatura.flow import run_flow
from potatura.models import load_model_file

FLOW = """
name: prune
seed: 1
runs_dir: {runs}
stages: [train]
model:
  name: lenet5
  options: {{channels: [6, 12], hidden: 32}}
train:
  method: {method}
  epochs: 14
  pwe: 1
  twt: 0.3
  lmbda: 0.01
  finetune_epochs: 2
"""


def _flow(tmp_path, method="serene"):
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(runs=tmp_path / "runs", method=method))
    return path


def test_serene_stage_writes_pruned_model_and_sparsity(tmp_path):
    outcomes = run_flow(load_config(_flow(tmp_path)))
    assert [(o.name, o.status) for o in outcomes] == [("train", "done")]
    out = tmp_path / "runs" / "prune" / "train"
    assert set(outcomes[0].outputs) == {"model", "metrics", "summary", "data_stats", "sparsity", "curves"}
    summary = json.loads((out / "summary.json").read_text())
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert summary["method"] == "serene" and summary["sensitivity"] == "bounded"
    assert summary["preset"] == "lenet5/digits"
    assert summary["pruning_rounds"], "pwe 1 on 12 pruning epochs must give threshold rounds"
    model, payload = load_model_file(out / "model.pt")
    assert payload["spec"]["name"] == "lenet5" and payload["spec"]["options"] == {"channels": [6, 12], "hidden": 32}
    # the counts in the reports are the counts of the saved weights
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    assert summary["nonzero_parameters"] == nonzero < summary["parameters"]
    fc1_alive = int(model.fc1.weight.detach().ne(0).any(dim=1).sum())
    assert summary["neurons_per_layer"]["fc1"] == [fc1_alive, 32]
    layers = {l["name"]: l for l in sparsity["layers"]}
    assert layers["fc2"]["head"] and layers["fc2"]["neurons_remaining"] == 10
    assert layers["conv1"]["macs"] == 6 * 1 * 3 * 3 * 8 * 8  # 3x3 kernel, padding 1 on 8x8 digits
    assert layers["conv1"]["macs_remaining"] == int(model.conv1.weight.ne(0).sum()) * 64
    assert sparsity["network"]["parameters_remaining_pct"] == pytest.approx(100 * nonzero / summary["parameters"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 14 and all("remaining_neurons_pct" in m for m in metrics)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["test_accuracy"] > 0.5


def test_potatura_train_command_options_and_errors(tmp_path):
    flow = _flow(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "potatura", "train", str(flow), "--lmbda", "-1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2, bad.stderr
    lines = [l for l in bad.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "train.lmbda: lambda must be a finite number >= 0" in lines[0], bad.stderr
    bad = subprocess.run([sys.executable, "-m", "potatura", "train", str(flow), "--pwe", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "pwe 0 never detects a plateau" in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "potatura", "train", str(flow), "--method", "none", "--epochs", "2"],
                        capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert ok.returncode == 0, ok.stderr
    summary = json.loads((tmp_path / "runs" / "prune" / "train" / "summary.json").read_text())
    assert summary["method"] == "none" and summary["epochs"] == 2
    assert summary["remaining_parameters_pct"] == 100.0

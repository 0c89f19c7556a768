"""The simplify stage in a flow, and `potatura simplify --model` on one file."""

import json

import pytest
import torch

import subprocess
import sys

from potatura.config import load_config
from potatura.errors import UnsupportedError
from potatura.flow import run_flow
from potatura.models import load_model_file, save_model_file
from potatura.simplify import BiasMap, SimplifiedGraphModule
from tests.simplify.masks import mask_model, prunable_layers

FLOW = """
name: simp
seed: 1
runs_dir: {runs}
stages: [train, simplify]
data:
  limit_train: 300
model:
  name: {model}
  options: {options}
train:
  method: none
  epochs: 1
  finetune_epochs: 0
simplify:
  bias_maps: {bias_maps}
"""


def _trained_and_masked(tmp_path, model="vgg-small", options="{width: 0.5, hidden: 32}", bias_maps="allow"):
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW.format(runs=tmp_path / "runs", model=model, options=options, bias_maps=bias_maps))
    cfg = load_config(flow)
    run_flow(cfg, only=["train"])
    path = cfg.run_dir() / "train" / "model.pt"
    trained, payload = load_model_file(path)
    rates = ["half"] * len(prunable_layers(trained))
    mask_model(trained, rates, seed=0)
    save_model_file(path, trained, spec=payload["spec"])  # as if training had pruned half the neurons
    _record_as_trained(cfg.run_dir(), path)
    return cfg, trained


def _record_as_trained(run_dir, path):
    """The manifest takes the masked file as train's output (the runner refuses changed inputs)."""
    from potatura.artifacts import tree_sha256

    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["stages"]["train"]["outputs"]["model"]["sha256"] = tree_sha256(path)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_stage_writes_a_smaller_model_with_the_same_logits(tmp_path):
    cfg, masked = _trained_and_masked(tmp_path)
    [outcome] = run_flow(cfg, only=["simplify"])
    assert outcome.status == "done" and set(outcome.outputs) == {"model", "summary"}
    run_dir = cfg.run_dir()
    summary = json.loads((run_dir / "simplify" / "summary.json").read_text())
    small, payload = load_model_file(run_dir / "simplify" / "model.pt")
    assert payload["extra"]["input_shape"] == [1, 8, 8]
    assert isinstance(small, SimplifiedGraphModule) and not small.training  # survives torch.save/load
    assert summary["parameters_after"] == sum(p.numel() for p in small.parameters()) < summary["parameters_before"]
    assert summary["macs_after"] < summary["macs_before"]
    v = summary["validation"]
    assert v["relative_logit_difference"] <= 1e-5 and v["argmax_agreement"] == 1.0
    assert v["accuracy_before"] == v["accuracy_after"] and "validation samples" in v["measured"]
    assert [r["layer"] for r in summary["layers"]][:2] == ["features.0", "features.3"]
    assert all(r["out_after"] <= r["out_before"] for r in summary["layers"])
    maps = {b["layer"] for b in summary["bias_map_layers"]}
    assert maps == {n.rsplit("_bias_map", 1)[0] for n, m in small.named_modules() if isinstance(m, BiasMap)}
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5 * float(masked(x).abs().max()))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["simplify"]["status"] == "done"


def test_stage_refuses_bias_maps_when_told_and_writes_no_model(tmp_path):
    cfg, _ = _trained_and_masked(tmp_path, bias_maps="refuse")
    with pytest.raises(UnsupportedError, match="needs a per-position bias map"):
        run_flow(cfg, only=["simplify"])
    assert not (cfg.run_dir() / "simplify" / "model.pt").exists()
    manifest = json.loads((cfg.run_dir() / "manifest.json").read_text())
    assert manifest["stages"]["simplify"]["status"] == "failed"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "potatura", *args], capture_output=True, text=True)


def test_cli_simplifies_one_model_file(tmp_path):
    cfg, masked = _trained_and_masked(tmp_path, model="lenet5", options="{}")
    source = cfg.run_dir() / "train" / "model.pt"
    out = tmp_path / "small.pt"
    proc = _cli("simplify", "--model", str(source), "--out", str(out), "--samples", "32")
    assert proc.returncode == 0, proc.stderr
    assert "parameters 39760 ->" in proc.stdout
    small, _ = load_model_file(out)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["validation"]["samples"] == 32 and "random inputs" in summary["validation"]["measured"]
    assert summary["parameters_after"] < summary["parameters_before"]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)


def test_cli_without_an_input_shape_is_a_one_line_error(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    path = tmp_path / "m.pt"
    save_model_file(path, model)
    proc = _cli("simplify", "--model", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: the file does not record its input shape; pass --input-shape C,H,W"]
    proc = _cli("simplify", "--model", str(path), "--input-shape", "1,x")
    assert proc.returncode == 2 and "expected C,H,W (e.g. 1,28,28) or F" in proc.stderr, proc.stderr
    proc = _cli("simplify", "--model", str(path), "--input-shape", "3,8,8")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "simplify: the model does not run on an input of shape (1, 3, 8, 8)" in proc.stderr

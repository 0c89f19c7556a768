"""The quant step on a trained, pruned LeNet-5 (digits): PTQ, QAT, artifacts, hardware gate, stage."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from potatura.artifacts import read_json, write_json
from potatura.config import load_config
from potatura.data import load_dataset
from potatura.errors import DataError, UnsupportedError
from potatura.flow import StageContext
from potatura.models import build_model, save_model_file
from potatura.quant import stage as quant_stage
from potatura.quant.config import QuantConfig
from potatura.quant.export import to_channels_last, gemm_to_matmul
from potatura.quant.hardware import require_hardware_ready
from potatura.quant.pipeline import load_brevitas_model, quantize
from potatura.quant.reference import execute_qonnx, run_torch
from potatura.train.config import TrainConfig
from potatura.train.loop import TrainLoop, evaluate, seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_dataset(load_config(None).data, seed=0)


@pytest.fixture(scope="module")
def pruned_lenet5(digits):
    """LeNet-5 trained 8 epochs on digits, then 30% of each weight tensor pruned by magnitude."""
    seed_everything(0)
    model = build_model("lenet5", digits.input_shape, digits.num_classes)
    TrainLoop(model, digits, TrainConfig(method="none", preset="off", epochs=8), seed=0).run()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_((p.abs() > p.abs().flatten().quantile(0.3)).float())
    return model.eval()


def test_ptq_keeps_accuracy_and_golden_is_the_qonnx_output(tmp_path, digits, pruned_lenet5):
    out = quantize(pruned_lenet5, digits, QuantConfig(), tmp_path, seed=0)
    acc = out.summary["accuracy"]["test"]
    assert acc["input"] > 0.9
    assert abs(acc["ptq"] - acc["input"]) <= 0.01  # 8-bit PTQ: within a point on 360 test digits
    assert out.check.exact and out.check.samples == len(digits.y_val)
    assert out.summary["hardware_ready"] and out.quant_info["hardware_problems"] == []
    assert set(out.paths) == {"qonnx", "quant_json", "golden", "brevitas_model", "summary"}

    golden = np.load(out.paths["golden"])
    assert golden["x"].dtype == np.float32 and golden["x"].shape == (len(digits.y_val), 1, 8, 8)
    assert golden["y"].dtype == np.float32 and golden["y"].shape == (len(digits.y_val), 10)
    np.testing.assert_array_equal(golden["labels"], digits.y_val.numpy())
    np.testing.assert_array_equal(golden["x"], digits.x_val.numpy())
    # y is what the QONNX file computes, and what the Brevitas model computes, bit for bit
    np.testing.assert_array_equal(execute_qonnx(out.paths["qonnx"], golden["x"], 64), golden["y"])
    np.testing.assert_array_equal(run_torch(out.model, golden["x"]), golden["y"])
    assert np.mean(golden["y"].argmax(1) == golden["labels"]) == pytest.approx(out.summary["accuracy"]["val"]["ptq"])

    info = read_json(out.paths["quant_json"])
    assert info["input"]["shape"] == [1, 1, 8, 8] and info["output"]["shape"] == [1, 10]
    acc_bound = info["output"]["accumulator"]
    assert acc_bound["fixed_point"]["width"] == acc_bound["bit_width"] <= 32
    # every golden output is an integer multiple of the output scale within the accumulator range
    ints = golden["y"] / info["output"]["scale"]
    np.testing.assert_array_equal(ints, np.round(ints))
    assert np.abs(ints).max() <= acc_bound["max_abs_int"]


def test_brevitas_model_file_round_trips(tmp_path, digits, pruned_lenet5):
    out = quantize(pruned_lenet5, digits, QuantConfig(bias_correction=True, check_samples=50), tmp_path, seed=0)
    model, payload = load_brevitas_model(out.paths["brevitas_model"])
    x = digits.x_test[:100]
    np.testing.assert_array_equal(run_torch(model, x), run_torch(out.model, x))
    assert out.check.exact and out.check.samples == 50


def test_qat_keeps_pruned_weights_exactly_zero(tmp_path, digits, pruned_lenet5):
    zeros = {n: (p == 0) for n, p in pruned_lenet5.named_parameters() if p.dim() > 1}
    cfg = QuantConfig(weight_bits=4, act_bits=4, qat_epochs=2, check_samples=64)
    out = quantize(pruned_lenet5, digits, cfg, tmp_path, seed=0)
    params = dict(out.model.named_parameters())
    changed = 0
    for name, mask in zeros.items():
        assert mask.sum() > 0
        assert torch.all(params[name][mask] == 0), name
        changed += int((params[name][~mask] != dict(pruned_lenet5.named_parameters())[name][~mask]).sum())
    assert changed > 0  # QAT did train the surviving weights
    assert out.summary["pruned_weights_kept_zero"]
    # and the zeros reach the QONNX weights (the hardware's weight memory)
    from qonnx.core.modelwrapper import ModelWrapper

    graph = ModelWrapper(str(out.paths["qonnx"]))
    weight_tensors = [t for t in out.quant_info["tensors"].values() if t["role"] == "weight"]
    for t, (name, mask) in zip(weight_tensors, zeros.items()):
        w = graph.get_initializer(t["input"])
        assert np.all(w[mask.numpy()] == 0), name
    assert out.check.exact
    assert out.summary["accuracy"]["test"]["qat"] >= out.summary["accuracy"]["test"]["ptq"] - 0.01


def test_float_scales_are_refused_for_hardware(tmp_path, digits, pruned_lenet5):
    out = quantize(pruned_lenet5, digits, QuantConfig(scale="float", bias_bits=None, check_samples=32), tmp_path, seed=0)
    assert not out.summary["hardware_ready"]
    problems = " ".join(out.quant_info["hardware_problems"])
    assert "not powers of two" in problems and "float biases" in problems
    with pytest.raises(UnsupportedError, match="cannot go to hls4ml: scales that are not powers of two"):
        require_hardware_ready(out.paths["quant_json"], backend="hls4ml")


def test_hardware_gate_reads_quant_json(tmp_path, digits, pruned_lenet5):
    out = quantize(pruned_lenet5, digits, QuantConfig(check_samples=16), tmp_path, seed=0)
    info = require_hardware_ready(out.paths["quant_json"], backend="hls4ml")
    assert info["hardware_ready"] is True
    with pytest.raises(DataError, match="quant.json not found"):
        require_hardware_ready(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        require_hardware_ready(tmp_path / "bad.json")
    tampered = dict(info, hardware_ready=False, hardware_problems=["float biases in Conv_0"])
    write_json(tmp_path / "tampered.json", tampered)
    with pytest.raises(UnsupportedError, match="float biases in Conv_0"):
        require_hardware_ready(tmp_path / "tampered.json")


def test_backend_passes_preserve_the_outputs(tmp_path, digits, pruned_lenet5):
    out = quantize(pruned_lenet5, digits, QuantConfig(check_samples=16), tmp_path, seed=0)
    x = digits.x_val[:8].numpy()
    y = execute_qonnx(out.paths["qonnx"], x, 8)
    nhwc = to_channels_last(out.paths["qonnx"])
    assert nhwc.get_tensor_shape(nhwc.graph.input[0].name) == [1, 8, 8, 1]
    np.testing.assert_array_equal(execute_qonnx(nhwc, x.transpose(0, 2, 3, 1), 1), y)
    matmul = gemm_to_matmul(out.paths["qonnx"])
    ops = [n.op_type for n in matmul.graph.node]
    assert "Gemm" not in ops and "MatMul" in ops
    np.testing.assert_array_equal(execute_qonnx(matmul, x, 8), y)


def _context(tmp_path, cfg, inputs):
    out_dir = tmp_path / "run" / "quant"
    out_dir.mkdir(parents=True)
    return StageContext(cfg, tmp_path / "run", out_dir, inputs, logging.getLogger("test.quant"))


def test_stage_writes_the_named_outputs(tmp_path, digits, pruned_lenet5):
    cfg = load_config(None, {"train": {"method": "none", "preset": "off"}, "quant": {"calibration_samples": 300}})
    spec = {"name": "lenet5", "options": {}, "input_shape": [1, 8, 8], "num_classes": 10}
    save_model_file(tmp_path / "train.pt", pruned_lenet5, spec=spec)
    save_model_file(tmp_path / "simplified.pt", pruned_lenet5)  # a pickled module, as simplify writes
    ctx = _context(tmp_path, cfg, {"train": {"model": tmp_path / "train.pt"},
                                   "simplify": {"model": tmp_path / "simplified.pt"}})
    outputs = quant_stage.run(ctx)
    assert set(outputs) == {"qonnx", "quant_json", "golden", "brevitas_model", "summary"}
    assert all(p.is_file() and p.parent == ctx.out_dir for p in outputs.values())
    summary = read_json(outputs["summary"])
    assert summary["calibration_samples"] == 300
    assert summary["accuracy"]["test"]["float"] == pytest.approx(evaluate(pruned_lenet5, digits.x_test, digits.y_test)["accuracy"])
    assert summary["reference_check"]["exact_matches"] == summary["reference_check"]["samples"] == len(digits.y_val)
    assert quant_stage.STAGE.needs == ("train", "simplify")
    assert quant_stage.STAGE.config_sections == ("data", "model", "train", "simplify", "quant")


class WithSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.squash = nn.Sigmoid()

    def forward(self, x):
        return self.squash(self.fc(x.flatten(1)))


def test_stage_names_an_unsupported_layer(tmp_path):
    save_model_file(tmp_path / "odd.pt", WithSigmoid())
    ctx = _context(tmp_path, load_config(None), {"simplify": {"model": tmp_path / "odd.pt"}})
    with pytest.raises(UnsupportedError, match=r"layer 'squash' \(Sigmoid\) is not supported"):
        quant_stage.run(ctx)
    assert not any(ctx.out_dir.iterdir())  # nothing half-written

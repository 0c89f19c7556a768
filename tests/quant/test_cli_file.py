"""`potatura quant --model FILE`: one model file, outside a flow."""

import subprocess
import sys

import torch

from potatura.models import build_model, save_model_file


def test_quant_command_on_a_model_file(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 10, hidden=(16, 8)).eval()
    save_model_file(tmp_path / "m.pt", model, spec={"name": "lenet300", "options": {"hidden": [16, 8]},
                                                    "input_shape": [1, 8, 8], "num_classes": 10})
    proc = subprocess.run([sys.executable, "-m", "potatura", "quant", "--model", str(tmp_path / "m.pt"),
                           "--out", str(tmp_path / "q")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.replace("\n", " ")
    assert "QONNX == Brevitas on 144/144 validation samples; hardware-ready" in out, proc.stdout
    assert f"quant: outputs in {tmp_path / 'q'}" in out
    assert (tmp_path / "q" / "model.qonnx.onnx").is_file() and (tmp_path / "q" / "golden.npz").is_file()

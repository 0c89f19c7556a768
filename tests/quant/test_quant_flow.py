"""train -> simplify -> quant through the flow runner on digits (the demo's path, kept short)."""

import numpy as np

from potatura.artifacts import read_json
from potatura.config import load_config
from potatura.flow import run_flow


def test_flow_train_simplify_quant(tmp_path):
    cfg = load_config(None, {"name": "q", "runs_dir": str(tmp_path), "stages": ["train", "simplify", "quant"],
                             "train": {"method": "none", "epochs": 4, "preset": "off"},
                             "quant": {"calibration_samples": 256}})
    outcomes = run_flow(cfg, show_progress=False)
    assert [o.name for o in outcomes] == ["train", "simplify", "quant"]
    assert all(o.status == "done" for o in outcomes)
    quant = outcomes[-1].outputs
    assert set(quant) == {"qonnx", "quant_json", "golden", "brevitas_model", "summary"}
    summary = read_json(tmp_path / "q" / quant["summary"])
    assert summary["reference_check"]["exact"] and summary["hardware_ready"]
    acc = summary["accuracy"]["test"]
    assert acc["float"] > 0.8 and abs(acc["quantized"] - acc["float"]) <= 0.02
    golden = np.load(tmp_path / "q" / quant["golden"])
    assert len(golden["y"]) == summary["reference_check"]["samples"]
    # unchanged inputs: the second run skips every stage
    again = run_flow(cfg, show_progress=False)
    assert [o.status for o in again] == ["skipped"] * 3

"""The whole flow on digits up to deploy: the emulated board runs quant's golden set bit-exact (slow)."""

from __future__ import annotations

import pytest

from potatura.artifacts import read_json

FLOW = {
    "name": "deploy", "stages": ["train", "simplify", "quant", "hwgen", "sim", "deploy"],
    "model": {"name": "lenet5", "options": {"channels": [8, 32], "hidden": 32}},
    "train": {"method": "magnitude-oneshot", "target_neurons_pct": 50, "epochs": 6, "finetune_epochs": 3,
              "preset": "off", "lr": 0.05},
    "quant": {"calibration_samples": 256},
    "hwgen": {"boards": ["pynq-z2"]},
    "deploy": {"golden_samples": 32, "batch_sizes": [1, 8], "iterations": 3, "warmup": 1},
}


@pytest.mark.slow
def test_flow_deploys_the_cnn_bit_exact_on_the_emulated_board(tmp_path):
    from potatura.config import load_config
    from potatura.deploy.stage import headline
    from potatura.flow import run_flow
    from potatura.sim.api import load_project

    cfg = load_config(None, dict(FLOW, runs_dir=str(tmp_path)))
    run_flow(cfg, show_progress=False)
    deploy_dir = cfg.run_dir() / "deploy"
    record = read_json(deploy_dir / "pynq-z2" / "hls4ml.result.json")
    assert record["golden_provenance"]["y"].startswith("golden.npz y_codes")  # quant's integer reference
    assert record["golden"]["exact"] == record["golden"]["samples"] == 32
    acc = load_project(cfg.run_dir() / "hwgen" / "pynq-z2" / "hls4ml")
    assert record["benchmark"]["rows"][1]["hardware_cycles"] == [acc.cycles(8).total_cycles]
    assert "golden 32/32 bit-exact on the emulated board" in headline(deploy_dir)

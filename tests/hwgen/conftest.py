"""Shared, session-scoped hwgen fixtures: each hls4ml C simulation is compiled once.

- cnn_flow: the real flow on scikit-learn's digits: train a LeNet-5 (8, 32 channels, 32 hidden),
  prune half the neurons of every layer (one-shot structured magnitude), simplify (LeNet-5 with
  4, 16 channels, 16 hidden), quantize to 8 bits, hwgen on pynq-z2 (io_stream, one compile).
- mlp_quant: a LeNet-300-style MLP (64-32-16-10) trained on digits and quantized to 8 bits.
- mlp_resource_project: that MLP as an io_parallel project with the Resource strategy (one compile).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from potatura.artifacts import read_json

CNN_FLOW = {
    "name": "hw", "stages": ["train", "simplify", "quant", "hwgen"],
    "model": {"name": "lenet5", "options": {"channels": [8, 32], "hidden": 32}},
    "train": {"method": "magnitude-oneshot", "target_neurons_pct": 50, "epochs": 6, "finetune_epochs": 3,
              "preset": "off", "lr": 0.05},
    "quant": {"calibration_samples": 256},
    "hwgen": {"boards": ["pynq-z2"]},
}


@pytest.fixture(scope="session")
def digits():
    from potatura.config import DataConfig
    from potatura.data import load_dataset

    return load_dataset(DataConfig(), seed=0)


@pytest.fixture(scope="session")
def cnn_flow(tmp_path_factory):
    """(run directory, {stage: outcome}) of train -> simplify -> quant -> hwgen on digits."""
    from potatura.config import load_config
    from potatura.flow import run_flow

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, dict(CNN_FLOW, runs_dir=str(runs)))
    outcomes = run_flow(cfg, show_progress=False)
    return cfg.run_dir(), {o.name: o for o in outcomes}


@pytest.fixture(scope="session")
def cnn_qonnx(cnn_flow) -> Path:
    run_dir, outcomes = cnn_flow
    return run_dir / outcomes["quant"].outputs["qonnx"]


@pytest.fixture(scope="session")
def cnn_report(cnn_flow) -> dict:
    run_dir, outcomes = cnn_flow
    return read_json(run_dir / outcomes["hwgen"].outputs["report"])


def _train(model: torch.nn.Module, data, epochs: int, lr: float = 0.1, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data.x_train))
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def quantize_model(digits, tmp_path_factory):
    """quantize_model(name, **options) -> QuantOutcome of a zoo model trained briefly on digits, 8-bit."""
    from potatura.models import build_model
    from potatura.quant.config import QuantConfig
    from potatura.quant.pipeline import quantize

    cache = {}

    def make(name: str, epochs: int = 8, **options):
        key = (name, epochs, tuple(sorted((k, str(v)) for k, v in options.items())))
        if key not in cache:
            torch.manual_seed(0)
            model = _train(build_model(name, (1, 8, 8), 10, **options), digits, epochs)
            out = tmp_path_factory.mktemp(f"quant-{name}")
            cache[key] = quantize(model, digits, QuantConfig(calibration_samples=256), out, seed=0)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def mlp_quant(quantize_model):
    return quantize_model("lenet300", hidden=(32, 16))


@pytest.fixture(scope="session")
def mlp_resource_project(mlp_quant, tmp_path_factory):
    """The MLP on pynq-z2, io_parallel, Resource strategy (fitter's RFs), compiled and csim-checked."""
    from potatura.boards.catalog import get_board
    from potatura.hwgen.hls4ml.lowering import read_network
    from potatura.hwgen.hls4ml.project import generate_project
    from potatura.hwgen.stage import load_golden, qonnx_reference

    net = read_network(mlp_quant.paths["qonnx"])
    x, _ = load_golden(mlp_quant.paths["golden"])
    reference = qonnx_reference(mlp_quant.paths["qonnx"], x)
    result = generate_project(net, get_board("pynq-z2"), tmp_path_factory.mktemp("mlp") / "pynq-z2" / "hls4ml",
                              io_type="io_parallel", strategy="resource", x_nchw=x, reference=reference,
                              keep_model=True)
    return mlp_quant.paths["qonnx"], net, x, reference, result


def assert_bit_exact(csim: dict) -> None:
    assert csim["samples"] >= 100
    assert csim["exact_matches"] == csim["samples"], csim
    assert csim["max_abs_difference"] == 0.0
    assert np.isclose(csim["argmax_agreement"], 1.0)

"""NNC size report through NNCodec in its own environment (the nnc extra, .venv-nnc)."""

import os

import pytest
from torch import nn

from potatura.config import DataConfig
from potatura.data import load_dataset
from potatura.quant import nnc
from potatura.train.loop import evaluate

pytestmark = pytest.mark.nnc
# CI installs the nnc environment (.ci/run runs scripts/env-board): there a missing codec is a failure.
if os.environ.get("CI") and not nnc.available():
    raise RuntimeError(f"CI: the nnc environment is missing ({nnc.nnc_python()}); .ci/run must run scripts/env-board")
needs_nnc = pytest.mark.skipif(not nnc.available(),
                               reason=f"the nnc extra is not installed ({nnc.nnc_python()} with nncodec)")

# NNCodec's default step: qp -38, qp_density 2 -> (4 + 2) * 2**(-10 - 2) (docs/algorithms.md section 7)
DEFAULT_STEP = 6 * 2.0 ** -12


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(), seed=0)


def _trained_lenet5(digits, pruned_zoo_model):
    from potatura.quant.calibrate import KeepPrunedWeightsZero, weight_masks
    from potatura.train.config import TrainConfig
    from potatura.train.loop import TrainLoop

    model = pruned_zoo_model("lenet5").train()
    hook = KeepPrunedWeightsZero(weight_masks(model))
    TrainLoop(model, digits, TrainConfig(method="none", preset="off", epochs=6), hooks=[hook]).run()
    return model.eval()


@needs_nnc
def test_nnc_codes_a_pruned_model_and_decodes_it(tmp_path, digits, pruned_zoo_model):
    model = _trained_lenet5(digits, pruned_zoo_model)
    report = nnc.compress(model, digits, tmp_path)
    assert report["codec"]["settings"]["qp"] == -38 and report["codec"]["settings"]["qp_density"] == 2
    assert (tmp_path / "model.nnc").stat().st_size == report["bitstream_bytes"]
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
    assert report["float32_bytes"] == 4 * report["parameters"]
    # pruned (zeros) and entropy coded: far below a quarter of float32
    assert report["bitstream_bytes"] < report["float32_bytes"] / 4
    assert report["max_abs_error"] <= 2 * DEFAULT_STEP
    accuracy = evaluate(model, digits.x_test, digits.y_test)["accuracy"]
    assert accuracy > 0.85
    assert abs(report["decoded_accuracy"] - accuracy) <= 0.01


@needs_nnc
def test_simplified_model_codes_smaller(tmp_path, digits, pruned_zoo_model):
    from potatura.simplify import simplify

    model = _trained_lenet5(digits, pruned_zoo_model)
    simplified = simplify(model, digits.x_val[:1]).model.eval()
    assert sum(p.numel() for p in simplified.parameters()) < sum(p.numel() for p in model.parameters())
    before = nnc.compress(model, digits, tmp_path / "pruned")
    after = nnc.compress(simplified, digits, tmp_path / "simplified")
    assert after["bitstream_bytes"] <= before["bitstream_bytes"]
    assert abs(after["decoded_accuracy"] - before["decoded_accuracy"]) <= 0.01


def test_missing_environment_is_a_clear_error(tmp_path, monkeypatch, digits):
    monkeypatch.setenv("POTATURA_NNC_PYTHON", str(tmp_path / "no-python"))
    assert not nnc.available()
    with pytest.raises(nnc.NNCError, match="NNC environment not found"):
        nnc.compress(nn.Linear(64, 10), digits, tmp_path)

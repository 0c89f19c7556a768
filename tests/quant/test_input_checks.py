"""quantize() checks that the model fits the data before any Brevitas work."""

import pytest

from potatura.errors import DataError
from potatura.models import build_model
from potatura.quant.config import QuantConfig
from potatura.quant.pipeline import quantize


def test_model_for_other_inputs_is_a_clear_error(tmp_path, digits_splits):
    model = build_model("lenet300", (1, 28, 28), 10).eval()  # 784 inputs; digits have 64
    with pytest.raises(DataError, match=r"does not accept the dataset's inputs of shape \[1, 8, 8\] \(digits\)"):
        quantize(model, digits_splits, QuantConfig(), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_model_with_too_few_outputs_is_a_clear_error(tmp_path, digits_splits):
    model = build_model("lenet300", (1, 8, 8), 4).eval()
    with pytest.raises(DataError, match=r"outputs of shape \[4\] but digits has 10 classes"):
        quantize(model, digits_splits, QuantConfig(), tmp_path)

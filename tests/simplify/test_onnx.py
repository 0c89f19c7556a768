"""The simplified zoo models export to ONNX and onnxruntime computes the same logits."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from potatura.simplify import simplify
from tests.simplify.masks import ZOO_CASES, mask_model, prunable_layers, zoo_model


@pytest.mark.parametrize("case", list(ZOO_CASES))
def test_simplified_model_exports_to_onnx_and_runs_in_onnxruntime(tmp_path, case):
    torch.manual_seed(0)
    model, shape = zoo_model(case)
    mask_model(model, ["half"] * len(prunable_layers(model)), seed=7)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(7))
    simplified = simplify(model, x).model
    path = tmp_path / f"{case}.onnx"
    torch.onnx.export(simplified, (x,), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected, masked = simplified(x).numpy(), model(x).numpy()
    scale = float(np.abs(masked).max())
    assert float(np.abs(got - expected).max()) <= 1e-5 * scale
    assert float(np.abs(got - masked).max()) <= 1e-5 * scale

"""Every zoo model: forward at several input shapes, torch.fx trace, ONNX export run by onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import fx

from potatura.errors import ConfigError
from potatura.models import available_models, build_model, load_model_file, save_model_file

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}
# The heavy ImageNet-size VGGs only on small inputs here (their size is tested by count).
CASES = [(m, s) for m in available_models() for s in SHAPES if not (m in ("vgg11", "vgg16") and s != "digits")]


def _randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("name,shape", CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_forward_trace_and_onnx(tmp_path, name, shape):
    torch.manual_seed(0)
    model = build_model(name, SHAPES[shape], 10).eval()
    _randomize_bn(model)
    x = torch.randn(2, *SHAPES[shape])
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()

    traced = fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), y, rtol=0, atol=0)
    assert any(n.op == "call_module" for n in traced.graph.nodes)

    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, y.numpy(), rtol=1e-4, atol=1e-5)


def test_sizes_follow_the_input_shape():
    small = build_model("lenet5", (1, 8, 8), 10)
    classic = build_model("lenet5", (1, 28, 28), 10)
    assert classic.conv1.kernel_size == (5, 5) and classic.fc1.in_features == 50 * 4 * 4
    assert small.conv1.kernel_size == (3, 3) and small.fc1.in_features == 50
    assert build_model("lenet300", (1, 28, 28), 10).fc1.in_features == 784
    assert build_model("resnet20", (3, 32, 32), 10).fc.in_features == 64
    n_params = lambda m: sum(p.numel() for p in m.parameters())
    assert n_params(classic) == 431080  # the classic LeNet-5 of the pruning literature (20-50-500)
    assert n_params(build_model("lenet300", (1, 28, 28), 10)) == 266610
    assert n_params(build_model("resnet20", (3, 32, 32), 10)) == 272474  # 1x1 projection shortcuts


def test_unknown_model_and_bad_options():
    with pytest.raises(ConfigError, match="unknown model 'alexnet'"):
        build_model("alexnet", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="model.options for 'lenet5'"):
        build_model("lenet5", (1, 8, 8), 10, depth=3)
    with pytest.raises(ConfigError, match="depth must be 6n\\+2"):
        build_model("resnet8", (3, 32, 32), 10, depth=9)
    with pytest.raises(ConfigError, match="too small for kernel 5"):
        build_model("lenet5", (1, 8, 8), 10, kernel_size=5)


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model("lenet5", (1, 8, 8), 10).eval()
    spec = {"name": "lenet5", "options": {}, "input_shape": [1, 8, 8], "num_classes": 10}
    save_model_file(tmp_path / "m.pt", model, spec=spec)
    back, payload = load_model_file(tmp_path / "m.pt")
    x = torch.randn(3, 1, 8, 8)
    assert payload["spec"] == spec
    torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    from potatura.errors import DataError

    with pytest.raises(DataError, match="not a readable model file"):
        load_model_file(tmp_path / "junk.pt")

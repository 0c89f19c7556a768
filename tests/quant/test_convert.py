"""Float -> Brevitas -> QONNX on every zoo model: the QONNX execution equals Brevitas exactly."""

import numpy as np
import pytest
import torch
from torch import nn

from potatura.errors import ConfigError, UnsupportedError
from potatura.quant.calibrate import calibrate_activations
from potatura.quant.config import QuantConfig
from potatura.quant.convert import to_brevitas
from potatura.quant.export import export_qonnx_file, quant_parameters, weight_layer_biases
from potatura.quant.reference import compare, execute_qonnx, run_torch

ZOO = ["lenet300", "lenet5", "vgg-small", "resnet8", "densenet-small"]


def _quantize_and_check(model, cfg, tmp_path, n=48, seed=0):
    """Convert, calibrate on random inputs, export; return (brevitas outputs, QONNX outputs, path)."""
    g = torch.Generator().manual_seed(seed)
    x_cal = torch.randn(64, 1, 8, 8, generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g)
    conversion = to_brevitas(model, cfg)
    calibrate_activations(conversion.model, x_cal)
    path = export_qonnx_file(conversion.model, (1, 8, 8), tmp_path / "model.qonnx.onnx")
    y_qonnx = execute_qonnx(path, x.numpy(), batch_size=20)  # 48 = 2 full batches + a padded one
    y_brevitas = run_torch(conversion.model, x.numpy())
    return conversion, y_brevitas, y_qonnx, path


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_quantizes_and_qonnx_equals_brevitas(tmp_path, pruned_zoo_model, name):
    model = pruned_zoo_model(name)
    conversion, y_brevitas, y_qonnx, path = _quantize_and_check(model, QuantConfig(), tmp_path)
    check = compare(y_qonnx, y_brevitas)
    assert check.samples == 48
    assert check.exact_matches == 48, check
    assert check.max_abs_difference == 0.0
    # The quantized model stays close to the float one (8-bit): same top-1 on most random inputs.
    x = torch.randn(48, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y_float = model(x).numpy()
    y_quant = run_torch(conversion.model, x.numpy())
    assert np.mean(y_float.argmax(1) == y_quant.argmax(1)) >= 0.8
    # Every bias is an integer in the graph, every scale a power of two.
    assert set(weight_layer_biases(path).values()) == {"quantized"}
    tensors = quant_parameters(path)
    assert tensors and all(t["power_of_two"] for t in tensors.values())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(conversion.folded_batchnorms) == n_bn


@pytest.mark.parametrize("name", ["vgg-small", "resnet8", "densenet-small"])
def test_simplified_zoo_model_quantizes(tmp_path, pruned_zoo_model, name):
    from potatura.simplify import simplify

    model = pruned_zoo_model(name)
    simplified = simplify(model, torch.zeros(1, 1, 8, 8), allow_bias_maps=False).model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in simplified.modules())
    conversion, y_brevitas, y_qonnx, _ = _quantize_and_check(simplified, QuantConfig(), tmp_path)
    assert conversion.folded_batchnorms == []
    check = compare(y_qonnx, y_brevitas)
    assert check.exact_matches == check.samples == 48


def _powers_of_two(values) -> bool:
    v = np.asarray(values, dtype=np.float64).ravel()
    exponents = np.log2(v)
    return bool(np.all(exponents == np.round(exponents)) and np.all(np.exp2(np.round(exponents)) == v))


@pytest.mark.parametrize("granularity", ["per-tensor", "per-channel"])
def test_power_of_two_mode_gives_exact_powers_of_two(tmp_path, pruned_zoo_model, granularity):
    cfg = QuantConfig(weight_granularity=granularity, weight_bits=6, act_bits=5)
    conversion, y_brevitas, y_qonnx, path = _quantize_and_check(pruned_zoo_model("resnet8"), cfg, tmp_path)
    tensors = quant_parameters(path)
    scales = [t["scale"] for t in tensors.values()]
    assert all(_powers_of_two(s) for s in scales), scales
    weights = [t for t in tensors.values() if t["role"] == "weight"]
    assert {t["bit_width"] for t in weights} == {6}
    assert {t["bit_width"] for t in tensors.values() if t["role"] == "activation"} == {5}
    if granularity == "per-channel":
        assert all(isinstance(t["scale"], list) and len(t["scale"]) == t["shape"][0] for t in weights)
    # a fixed-point type for every tensor: <W, I> with W the bit width
    assert all(t["fixed_point"]["width"] == t["bit_width"] for t in tensors.values())
    assert compare(y_qonnx, y_brevitas).exact


def test_float_scales_are_not_powers_of_two(tmp_path, pruned_zoo_model):
    _, _, _, path = _quantize_and_check(pruned_zoo_model("lenet5"), QuantConfig(scale="float", bias_bits=None), tmp_path)
    tensors = quant_parameters(path)
    assert not all(t["power_of_two"] for t in tensors.values())
    assert all(t["fixed_point"] is None for t in tensors.values() if not t["power_of_two"])
    assert set(weight_layer_biases(path).values()) == {"float"}


def test_layer_overrides_set_bit_widths(tmp_path, pruned_zoo_model):
    cfg = QuantConfig(layers={"conv1": {"weight_bits": 4}, "relu1": {"act_bits": 6}, "input_quant": {"act_bits": 7}})
    _, _, _, path = _quantize_and_check(pruned_zoo_model("lenet5"), cfg, tmp_path)
    tensors = quant_parameters(path)
    weight_bits = [t["bit_width"] for t in tensors.values() if t["role"] == "weight"]
    assert weight_bits == [4, 8, 8, 8]  # conv1, conv2, fc1, fc2 in graph order
    acts = [t["bit_width"] for t in tensors.values() if t["role"] == "activation"]
    assert acts[:2] == [7, 6]  # input, relu1


def test_unknown_layer_override_is_a_config_error(pruned_zoo_model):
    with pytest.raises(ConfigError, match="quant.layers: unknown layer 'conv9'.*conv1"):
        to_brevitas(pruned_zoo_model("lenet5"), QuantConfig(layers={"conv9": {"weight_bits": 4}}))


class _WithSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return self.gate(self.fc(x.flatten(1)))


class _PreActivationBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(144, 10)

    def forward(self, x):
        return self.fc(self.bn(self.relu(self.conv(x))).flatten(1))


class _ConstantAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.offset = nn.Parameter(torch.ones(2, 8, 8))

    def forward(self, x):
        return (self.conv(x) + self.offset).flatten(1)


class _Tanh(nn.Module):
    def forward(self, x):
        return torch.tanh(x).flatten(1)


def test_unsupported_layer_is_named():
    with pytest.raises(UnsupportedError, match=r"layer 'gate' \(Sigmoid\) is not supported.*Supported: Conv2d"):
        to_brevitas(_WithSigmoid().eval(), QuantConfig())


def test_unsupported_function_is_named():
    with pytest.raises(UnsupportedError, match=r"operation 'tanh' \(tanh\) is not supported"):
        to_brevitas(_Tanh().eval(), QuantConfig())


def test_batchnorm_after_relu_asks_for_simplify():
    with pytest.raises(UnsupportedError, match=r"layer 'bn' \(BatchNorm2d\).*run the simplify stage first"):
        to_brevitas(_PreActivationBN().eval(), QuantConfig())


def test_constant_add_is_refused_with_the_reason():
    with pytest.raises(UnsupportedError, match=r"offset.*per-position bias map"):
        to_brevitas(_ConstantAdd().eval(), QuantConfig())


def test_simplify_bias_map_is_refused_for_hardware():
    from potatura.simplify import BiasMap

    class WithBiasMap(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.conv_bias_map = BiasMap(torch.zeros(2, 8, 8))
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(self.conv_bias_map(self.conv(x)).flatten(1))

    with pytest.raises(UnsupportedError, match=r"layer 'conv_bias_map' \(BiasMap\).*per-position bias map.*simplify.bias_maps: refuse"):
        to_brevitas(WithBiasMap().eval(), QuantConfig())


def test_float_model_is_left_untouched(pruned_zoo_model):
    model = pruned_zoo_model("resnet8")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conversion = to_brevitas(model, QuantConfig())
    calibrate_activations(conversion.model, torch.randn(16, 1, 8, 8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

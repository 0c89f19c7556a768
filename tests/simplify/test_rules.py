"""The rules of simplify one by one, on small hand-built models with known answers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from potatura.errors import UnsupportedError
from potatura.simplify import BiasMap, simplify


def _same(reference, simplified, x, tol=1e-5):
    reference.eval()
    with torch.no_grad():
        a, b = reference(x), simplified(x)
    scale = float(a.abs().max())
    assert float((a - b).abs().max()) <= tol * max(scale, 1e-3)
    assert torch.equal(a.argmax(1), b.argmax(1))


def _randomize_bn(model, seed=0, shift=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5 + shift)
    return model.eval()


def _kill(layer, channels):
    with torch.no_grad():
        layer.weight[channels] = 0


def _module_of(gm, name):
    return gm.get_submodule(name)


class Residual(nn.Module):
    """relu(bn_a(conv_a(x))) -> block: relu(bn_b(conv_b(h)) + h) -> pool -> fc."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv_b, self.bn_b = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 4)

    def forward(self, x):
        h = F.relu(self.bn_a(self.conv_a(x)))
        h = F.relu(self.bn_b(self.conv_b(h)) + h)
        return self.fc(torch.flatten(self.pool(h), 1))


def test_residual_channel_dead_in_one_branch_is_kept_dead_in_all_is_removed():
    torch.manual_seed(0)
    # BN shifts of about -3: removed neurons output relu(negative) = 0, so no constant (and no
    # bias map or kept constant channel) is involved, only the residual grouping.
    model = _randomize_bn(Residual(), shift=-3.0)
    _kill(model.conv_a, [1, 4])  # dead in the stem branch only (1) and in both branches (4)
    _kill(model.conv_b, [4, 5])  # dead in the residual branch only (5) and in both (4)
    x = torch.randn(4, 3, 6, 6)
    result = simplify(model, x[:1])
    _same(model, result.model, x)
    [add] = result.summary["residual_adds"]
    assert (add["channels_before"], add["channels_after"]) == (6, 5)
    assert _module_of(result.model, "conv_a").out_channels == 5  # channel 1 stays, as a constant
    assert _module_of(result.model, "conv_b").out_channels == 5
    assert _module_of(result.model, "fc").in_features == 5


def test_channel_whose_weights_sum_to_zero_is_live():
    """The reference tests 'is zero' with a signed sum and would delete this live channel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    with torch.no_grad():
        w = torch.randint(-4, 5, (1, 3, 3), generator=torch.Generator().manual_seed(1)).float() / 8
        w[0, 2, 2] = 0
        w[0, 2, 2] = -w.sum()  # multiples of 1/8: the signed sum is exactly 0
        model[0].weight[2] = w
    filt = model[0].weight.detach()[2]
    assert float(filt.sum()) == 0.0 and float(filt.abs().sum()) > 0
    _kill(model[0], [0])
    x = torch.randn(8, 1, 6, 6)
    result = simplify(model, x[:1])
    assert _module_of(result.model, "0").out_channels == 3  # only the all-zero filter 0 went
    _same(model, result.model, x)


def test_zero_padding_makes_a_position_dependent_bias_map():
    torch.manual_seed(0)
    # Wide layers on a 3x3 map: the bias map (3 x 3 x 3 = 27 values) costs less than keeping the
    # constant channel (its row 8*9 + 1 in layer 0 and 3*9 columns in layer 2 = 100).
    model = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 3 * 3, 2)).eval()
    _kill(model[0], [1])
    with torch.no_grad():
        model[0].bias[1] = 0.7  # the dead neuron outputs relu(0.7) = 0.7 everywhere
    x = torch.randn(4, 8, 3, 3)
    result = simplify(model, x[:1])
    _same(model, result.model, x)
    maps = [m for m in result.model.modules() if isinstance(m, BiasMap)]
    assert len(maps) == 1 and tuple(maps[0].bias.shape) == (3, 3, 3)
    assert result.summary["bias_map_layers"] == [{"layer": "2", "shape": [3, 3, 3]}]
    assert result.summary["bias_map_note"] and result.summary["constant_channels_kept"] == []
    assert result.summary["parameters_after"] < result.summary["parameters_before"]
    corner, centre = maps[0].bias[:, 0, 0], maps[0].bias[:, 1, 1]
    assert not torch.allclose(corner, centre)  # the border sees padding zeros
    # The map is the constant's contribution: 0.7 * the kernel's taps inside the image.
    w = model[2].weight.detach()[:, 1]
    torch.testing.assert_close(maps[0].bias[:, 1, 1], 0.7 * w.sum((1, 2)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(maps[0].bias[:, 0, 0], 0.7 * w[:, 1:, 1:].sum((1, 2)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="valid only at the input size"):
        result.model(torch.randn(1, 8, 5, 5))

    with pytest.raises(UnsupportedError, match="layer '2' needs a per-position bias map"):
        simplify(model, x[:1], allow_bias_maps=False)


def test_constant_channel_is_kept_where_a_bias_map_would_cost_more():
    torch.manual_seed(0)
    # Narrow layers on a 5x5 map: a bias map would cost 3 x 5 x 5 = 75 values, keeping the constant
    # channel 2*9 + 1 (its row) + 3*9 (its columns) = 46 parameters.
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 5 * 5, 2)).eval()
    _kill(model[0], [1])
    with torch.no_grad():
        model[0].bias[1] = 0.7
    x = torch.randn(4, 2, 5, 5)
    result = simplify(model, x[:1], allow_bias_maps=False)  # no map is needed, so none is refused
    _same(model, result.model, x)
    assert not any(isinstance(m, BiasMap) for m in result.model.modules())
    assert _module_of(result.model, "0").out_channels == 4 and _module_of(result.model, "2").in_channels == 4
    assert result.summary["constant_channels_kept"] == [
        {"layer": "2", "constant_channels_kept": 1, "from": "_1", "bias_map_values_avoided": 75,
         "parameters_kept": 46, "reason": "fewer parameters than the bias map"}]
    assert result.summary["constant_channels_note"]
    assert result.summary["parameters_after"] <= result.summary["parameters_before"]


def test_constant_without_padding_or_zero_after_relu_folds_into_the_plain_bias():
    torch.manual_seed(0)
    for padding, bias in ((0, 0.7), (1, -0.7)):
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=padding),
                              nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
        _kill(model[0], [1])
        with torch.no_grad():
            model[0].bias[1] = bias
        x = torch.randn(4, 2, 5, 5)
        result = simplify(model, x[:1], allow_bias_maps=False)
        _same(model, result.model, x)
        assert not any(isinstance(m, BiasMap) for m in result.model.modules())
        assert _module_of(result.model, "2").in_channels == 3


def test_depthwise_input_and_output_go_together():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    _randomize_bn(model)
    _kill(model[0], [0, 3])  # dead before the depthwise conv: its channels 0 and 3 read constants
    _kill(model[3], [5])  # dead in the depthwise conv: producer channel 5 then feeds nothing
    x = torch.randn(4, 3, 6, 6)
    result = simplify(model, x[:1])
    _same(model, result.model, x)
    dw = _module_of(result.model, "3")
    # Channel 5 goes from all three layers. Channels 0 and 3 are constant, but the padded depthwise
    # conv makes them position-dependent: removing them needs a 5x6x6 bias map in layer 6 (180
    # values), keeping them costs less, so they stay (and the summary says so).
    assert (dw.in_channels, dw.out_channels, dw.groups) == (7, 7, 7)
    assert _module_of(result.model, "0").out_channels == 7
    assert _module_of(result.model, "6").in_channels == 7
    [kept] = result.summary["constant_channels_kept"]
    assert (kept["layer"], kept["constant_channels_kept"], kept["bias_map_values_avoided"]) == ("6", 2, 180)
    assert kept["parameters_kept"] < 180 and not result.summary["bias_map_layers"]


def test_grouped_convolution_is_kept_whole_and_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2),
                          nn.ReLU(), nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    _kill(model[0], [1, 6])
    _kill(model[4], [2])
    x = torch.randn(4, 3, 6, 6)
    result = simplify(model, x[:1])
    _same(model, result.model, x)
    grouped = _module_of(result.model, "2")
    assert (grouped.in_channels, grouped.out_channels, grouped.groups) == (8, 8, 2)
    assert _module_of(result.model, "4").out_channels == 3


class AddThenBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.bn, self.fc = nn.BatchNorm2d(6), nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        y = self.bn(F.relu(self.a(x)) + F.relu(self.b(x)))
        return self.fc(y.view(y.size(0), -1))


def test_batchnorm_after_an_add_is_sliced_and_view_flatten_follows_the_width():
    torch.manual_seed(0)
    model = _randomize_bn(AddThenBatchNorm())
    _kill(model.a, [0, 2])
    _kill(model.b, [2, 3])
    x = torch.randn(4, 3, 4, 4)
    result = simplify(model, x[:1])
    _same(model, result.model, x)
    assert result.summary["batchnorm_kept"] == ["bn"]
    assert _module_of(result.model, "bn").num_features == 5
    assert _module_of(result.model, "fc").in_features == 5 * 16  # each channel owns its 4x4 features
    assert any(n.target is torch.flatten for n in result.model.graph.nodes)


def test_linear_batchnorm1d_folds_and_a_whole_dead_layer_keeps_one_constant_unit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 6),
                          nn.ReLU(), nn.Linear(6, 3))
    _randomize_bn(model)
    _kill(model[1], [1, 5, 7])
    _kill(model[4], list(range(6)))  # every neuron of the layer is dead
    x = torch.randn(5, 3, 2, 2)
    result = simplify(model, x[:1])
    _same(model, result.model, x)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in result.model.modules())
    assert result.summary["batchnorm_folded"] == [{"layer": "1", "batchnorm": "2"}]
    assert _module_of(result.model, "4").out_features == 1
    assert _module_of(result.model, "4").in_features == 1  # its only row reads nothing: one input kept
    assert _module_of(result.model, "1").out_features == 1


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2)

    def forward(self, x):
        y = torch.softmax(F.relu(self.conv(x)), dim=1)  # mixes channels: simplify must keep them all
        return self.fc(y.mean((2, 3)))


def test_unknown_operator_keeps_its_inputs_whole():
    torch.manual_seed(0)
    model = Opaque().eval()
    _kill(model.conv, [1])
    x = torch.randn(3, 3, 5, 5)
    result = simplify(model, x[:1])
    _same(model, result.model, x)
    assert _module_of(result.model, "conv").out_channels == 4
    assert result.summary["kept_whole"]


def test_unsupported_layer_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 2), nn.Flatten())
    with pytest.raises(UnsupportedError, match=r"layer '1' \(torch.nn.modules.conv.ConvTranspose2d\) is not supported"):
        simplify(model, torch.randn(1, 1, 5, 5))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_untraceable_model_is_refused_clearly():
    with pytest.raises(UnsupportedError, match="DataDependent cannot be traced by torch.fx"):
        simplify(DataDependent(), torch.randn(1, 4))


def test_bad_example_input_is_refused():
    with pytest.raises(UnsupportedError, match="example input must be a tensor"):
        simplify(nn.Linear(4, 2), torch.randn(4))


def test_shared_layer_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(self.fc(x))

    with pytest.raises(UnsupportedError, match="layer 'fc' is called 2 times"):
        simplify(Shared(), torch.randn(1, 4))

"""simplify never returns more parameters than the masked model had, and computes its logits.

Three ways the result used to grow: a per-position bias map larger than the constant channel it
replaced, a zero bias added to a layer that had none (also by folding an affine-free BatchNorm
into it), and a weight shared by two layers split into two copies.
"""

import torch
from torch import nn

from potatura.simplify import BiasMap, count_parameters, simplify
from tests.simplify.random_archs import masked_random_net

# About 30 ms per architecture on one thread: the sweep stays well under 30 s.
RANDOM_ARCHITECTURES = 300


def _check(model, x, result):
    with torch.no_grad():
        reference, simplified = model(x), result.model(x)
    scale = float(reference.abs().max())
    assert float((reference - simplified).abs().max()) <= 1e-5 * max(scale, 1e-3)
    assert count_parameters(result.model) <= count_parameters(model)
    assert result.summary["parameters_after"] == count_parameters(result.model)


def test_random_architectures_never_grow_and_keep_their_logits():
    kept_instead, maps, tied = 0, 0, 0
    for seed in range(RANDOM_ARCHITECTURES):
        model = masked_random_net(seed)
        x = torch.randn(4, *model.input_shape, generator=torch.Generator().manual_seed(seed))
        result = simplify(model, x[:1])
        _check(model, x, result)
        kept_instead += bool(result.summary["constant_channels_kept"])
        maps += bool(result.summary["bias_map_layers"])
        tied += bool(result.summary["shared_parameters"])
    # The sweep exercises every rule it is meant to (counts for this fixed set of seeds).
    assert kept_instead > 0 and maps > 0 and tied > 0, (kept_instead, maps, tied)


def test_no_bias_is_added_to_a_layer_that_had_none():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, bias=False), nn.ReLU(), nn.Conv2d(6, 4, 3, bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4, 3, bias=False)).eval()
    with torch.no_grad():
        model[0].weight[[1, 2]] = 0  # dead, and without a bias they output 0: nothing to fold
    x = torch.randn(4, 2, 5, 5)
    result = simplify(model, x[:1])
    _check(model, x, result)
    assert [m.bias for m in result.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))] == [None] * 3
    assert count_parameters(result.model) == count_parameters(model) - 2 * (2 * 9) - 2 * (4 * 9)


def test_batchnorm_without_affine_parameters_is_not_folded_into_a_layer_without_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, bias=False), nn.BatchNorm2d(6, affine=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 3 * 3, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(4, 2, 5, 5)
    result = simplify(model, x[:1])
    _check(model, x, result)
    assert result.summary["batchnorm_folded"] == [] and result.summary["batchnorm_kept"] == ["1"]
    assert count_parameters(result.model) == count_parameters(model)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)
        self.b.weight = self.a.weight  # one tensor, two layers
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(torch.relu(self.b(torch.relu(self.a(h)))))


def test_a_weight_shared_by_two_layers_stays_one_tensor():
    torch.manual_seed(0)
    model = Tied().eval()
    with torch.no_grad():
        model.conv.weight[[0, 3]] = 0
        model.a.weight[4] = 0  # a dead row of the shared weight: both layers keep it
    x = torch.randn(4, 3, 5, 5)
    result = simplify(model, x[:1])
    _check(model, x, result)
    a, b = result.model.get_submodule("a"), result.model.get_submodule("b")
    assert a.weight is b.weight and tuple(a.weight.shape) == (6, 6)
    assert result.summary["shared_parameters"] == [{"layer": "a", "shares_with": "b"},
                                                   {"layer": "b", "shares_with": "a"}]
    assert set(result.summary["kept_whole"]) >= {"a", "b"}
    assert not any(isinstance(m, BiasMap) for m in result.model.modules())

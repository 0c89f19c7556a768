"""BatchNorm folding has one implementation (simplify.fold), which quant uses bit for bit."""

import torch
from torch import nn

from potatura.quant import convert
from potatura.simplify.fold import fold_batchnorm_parameters


def _bn(channels: int, dims: int, affine: bool, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, affine=affine, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(channels, generator=g))
            bn.bias.copy_(torch.randn(channels, generator=g))
    return bn.eval()


def test_fold_formula_in_float64_and_quant_uses_the_same_bits():
    torch.manual_seed(0)
    cases = [(nn.Conv2d(3, 5, 3, bias=True), _bn(5, 2, True, 1)), (nn.Conv2d(3, 5, 3, bias=False), _bn(5, 2, False, 2)),
             (nn.Linear(7, 4, bias=False), _bn(4, 1, True, 3)), (nn.Linear(7, 4), _bn(4, 1, False, 4))]
    for layer, bn in cases:
        weight, bias = fold_batchnorm_parameters(layer, bn)
        assert weight.dtype == bias.dtype == torch.float64
        # The folded layer computes bn(layer(x)) (eval mode), checked in float64.
        x = torch.randn(2, *((3, 6, 6) if isinstance(layer, nn.Conv2d) else (7,)), dtype=torch.float64)
        ref = bn.double()(layer.double()(x))
        out = (torch.nn.functional.conv2d(x, weight) if isinstance(layer, nn.Conv2d) else x @ weight.T)
        out = out + bias.reshape(1, -1, *([1] * (out.dim() - 2)))
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        layer.float(), bn.float()
        q_weight, q_bias = convert._fold_bn(layer, bn)
        weight, bias = fold_batchnorm_parameters(layer, bn)
        assert torch.equal(q_weight, weight.float()) and torch.equal(q_bias, bias.float())

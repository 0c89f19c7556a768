"""Shared pieces of the quant tests: small zoo models with pruning masks and BN statistics."""

import pytest
import torch
from torch import nn

from potatura.models import build_model

DIGITS_SHAPE = (1, 8, 8)


def _prune(model: nn.Module, generator: torch.Generator, unstructured: float = 0.4) -> None:
    """Zero a random share of every weight and the first output channel of every conv/linear but
    the classifier (a structured mask), as SeReNe/LOBSTER training would leave them."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.weight.mul_((torch.rand(layer.weight.shape, generator=generator) >= unstructured).float())
            if i < len(layers) - 1 and layer.weight.shape[0] > 2:
                layer.weight[0].zero_()
                if layer.bias is not None:
                    layer.bias[0] = 0.0


def _randomize_bn(model: nn.Module, generator: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.2)
            # channel 0 is pruned (see _prune): its BN output is a negative constant, which the
            # ReLU turns into 0, as after SeReNe training, so simplify needs no per-position bias map
            m.running_mean[0] = 0.0
            m.bias.data[0] = -0.5


@pytest.fixture
def pruned_zoo_model():
    """pruned_zoo_model(name) -> an eval-mode zoo model for 1x8x8 inputs, masked, random BN stats."""

    def make(name: str, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = build_model(name, DIGITS_SHAPE, 10)
        _randomize_bn(model, g)
        _prune(model, g)
        return model.eval()

    return make

"""Masked zoo models for the simplify tests, and the parameter counts predicted from their masks.

A mask zeroes whole neurons: the weight rows/filters of Conv2d and hidden Linear layers (the
classifier keeps all its rows). Biases and BN statistics are random and non-zero, so every
removed neuron still emits a constant that simplify must fold into its consumers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from potatura.models import build_model
from potatura.models.densenet import DenseLayer, Transition

# (model, input shape) pairs kept small: the whole simplify suite must run in minutes on 2 cores.
ZOO_CASES = {
    "lenet300": (1, 8, 8),
    "lenet5": (1, 8, 8),
    "lenet5-28": (1, 28, 28),
    "vgg-small": (3, 16, 16),
    "resnet8": (3, 16, 16),
    "resnet20": (3, 8, 8),
    "densenet-small": (3, 8, 8),
}
DEAD_RATES = ("none", "quarter", "half", "most", "all-but-one")


def zoo_model(case: str) -> tuple[nn.Module, tuple[int, int, int]]:
    name = case.split("-28")[0]
    shape = ZOO_CASES[case]
    return build_model(name, shape, 10), shape


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d and hidden Linear layers, in module order (the last Linear is the classifier)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if isinstance(layers[-1][1], nn.Linear):
        layers = layers[:-1]
    return layers


def dead_count(rate: str, n: int) -> int:
    return {"none": 0, "quarter": round(0.25 * n), "half": n // 2, "most": min(n - 1, round(0.9 * n)),
            "all-but-one": n - 1}[rate]


@torch.no_grad()
def mask_model(model: nn.Module, rates: list[str], seed: int) -> dict[str, np.ndarray]:
    """Zero whole neurons (rates[i] for the i-th prunable layer), randomize BN and biases.

    Returns {layer name: alive mask [out]}; the model is modified in place and put in eval mode.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    alive: dict[str, np.ndarray] = {}
    for (name, layer), rate in zip(prunable_layers(model), rates):
        n = layer.weight.shape[0]
        mask = np.ones(n, bool)
        mask[rng.permutation(n)[:dead_count(rate, n)]] = False
        layer.weight[torch.from_numpy(~mask)] = 0
        alive[name] = mask
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.rand(c, generator=gen) - 0.5)
    model.eval()
    return alive


def _conv(layer: nn.Conv2d, cin: int, cout: int) -> int:
    kh, kw = layer.kernel_size
    return cout * cin * kh * kw + cout


def _linear(cin: int, cout: int) -> int:
    return cout * cin + cout


def predicted_parameters(case: str, model: nn.Module, alive: dict[str, np.ndarray]) -> int:
    """Conv2d/Linear weights + biases of the simplified model, from the masks alone."""
    name = case.split("-28")[0]
    if name.startswith("resnet"):
        return _predict_resnet(model, alive)
    if name.startswith("densenet"):
        return _predict_densenet(model, alive)
    return _predict_chain(model, alive)


def _predict_chain(model: nn.Module, alive: dict[str, np.ndarray]) -> int:
    """LeNets and VGG: each layer reads the alive outputs of the one before; after the flatten each
    channel owns in_features / channels features."""
    total, prev_alive, prev_channels = 0, None, None
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Conv2d):
            out = int(alive[name].sum())
            total += _conv(layer, layer.in_channels if prev_alive is None else prev_alive, out)
            prev_alive, prev_channels = out, layer.out_channels
        elif isinstance(layer, nn.Linear):
            out = int(alive[name].sum()) if name in alive else layer.out_features
            if prev_alive is None:
                cin = layer.in_features
            else:
                cin = prev_alive * (layer.in_features // prev_channels)
            total += _linear(cin, out)
            prev_alive, prev_channels = out, layer.out_features
    return total


def _predict_resnet(model: nn.Module, alive: dict[str, np.ndarray]) -> int:
    """A residual stream channel stays when it is alive in any producer of its stage: the stem (or
    the stage's projection shortcut) and every block's second convolution."""
    blocks = list(model.layers)
    stages: list[list[int]] = []  # block indices per stream group
    for i, b in enumerate(blocks):
        if i == 0 or len(b.shortcut) > 0:
            stages.append([])
        stages[-1].append(i)
    widths = []
    for s, members in enumerate(stages):
        first = blocks[members[0]]
        stream = alive["conv1"].copy() if s == 0 and len(first.shortcut) == 0 else \
            alive[f"layers.{members[0]}.shortcut.0"].copy()
        for i in members:
            stream |= alive[f"layers.{i}.conv2"]
        widths.append(int(stream.sum()))
    total = _conv(model.conv1, model.conv1.in_channels, widths[0] if len(blocks[0].shortcut) == 0
                  else int(alive["conv1"].sum()))
    stem_width = widths[0] if len(blocks[0].shortcut) == 0 else int(alive["conv1"].sum())
    width_in = stem_width
    for s, members in enumerate(stages):
        for i in members:
            b = blocks[i]
            a1 = int(alive[f"layers.{i}.conv1"].sum())
            total += _conv(b.conv1, width_in, a1) + _conv(b.conv2, a1, widths[s])
            if len(b.shortcut) > 0:
                total += _conv(b.shortcut[0], width_in, widths[s])
            width_in = widths[s]
    return total + _linear(width_in, model.fc.out_features)


def _predict_densenet(model: nn.Module, alive: dict[str, np.ndarray]) -> int:
    """A concatenation holds the alive channels of its parts; each layer reads all of them."""
    width = int(alive["stem.0"].sum())
    total = _conv(model.stem[0], model.stem[0].in_channels, width)
    for i, block in enumerate(model.blocks):
        out = int(alive[f"blocks.{i}.conv"].sum())
        total += _conv(block.conv, width, out)
        if isinstance(block, DenseLayer):
            width += out
        else:
            assert isinstance(block, Transition)
            width = out
    return total + _linear(width, model.fc.out_features)


def conv_linear_parameters(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear) for p in m.parameters())

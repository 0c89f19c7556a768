"""The one layer simplify adds to a model: a per-position bias map.

A removed neuron still emitted a constant (its bias through BN and the activation). A
consumer convolution with zero padding sees that constant everywhere except where its window
covers padding, so the constant it contributes is different at the border: a bias that
depends on position. BiasMap adds that [C, H, W] map after the convolution. It is exact, but it
fixes the input size, and a hardware backend must support it or refuse the model.
"""

from __future__ import annotations

import torch
from torch import nn


class BiasMap(nn.Module):
    """y = x + bias, with bias of shape [C, H, W] (broadcast over the batch).

    Input: [N, C, H, W] with the exact C, H, W of the map (the input size simplify was run on).
    """

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        if bias.dim() != 3:
            raise ValueError(f"BiasMap needs a [C, H, W] bias, got shape {tuple(bias.shape)}")
        # A Parameter, not a buffer: the map is part of the model's size and is counted as such.
        self.bias = nn.Parameter(bias.detach().clone())

    @property
    def channels(self) -> int:
        return int(self.bias.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3:] != self.bias.shape:
            raise ValueError(
                f"BiasMap: input of shape {tuple(x.shape)} does not match the bias map {tuple(self.bias.shape)}; "
                "a per-position bias is valid only at the input size the model was simplified for")
        return x + self.bias

    def extra_repr(self) -> str:
        c, h, w = self.bias.shape
        return f"channels={c}, height={h}, width={w}"

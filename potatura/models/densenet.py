"""A small DenseNet: dense blocks whose layers concatenate their output to their input.

Layers are conv-BN-ReLU (post-activation, unlike the original pre-activation DenseNet) so that
every BatchNorm follows the convolution it can be folded into.
"""

from __future__ import annotations

import torch
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(growth)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.relu(self.bn(self.conv(x)))], dim=1)


class Transition(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class SmallDenseNet(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, growth: int = 8,
                 layers_per_block: tuple[int, ...] = (3, 3), stem: int = 16, compression: float = 0.5):
        super().__init__()
        c, h, w = input_shape
        self.stem = nn.Sequential(nn.Conv2d(c, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        blocks: list[nn.Module] = []
        ch = stem
        for b, n_layers in enumerate(layers_per_block):
            for _ in range(n_layers):
                blocks.append(DenseLayer(ch, growth))
                ch += growth
            if b < len(layers_per_block) - 1:
                out = max(1, int(ch * compression))
                pool = min(h, w) >= 2
                blocks.append(Transition(ch, out, pool))
                if pool:
                    h, w = h // 2, w // 2
                ch = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))

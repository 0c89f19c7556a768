"""VGG-style networks with BatchNorm: conv3x3-BN-ReLU blocks, max-pool between stages."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

VGG_LAYOUTS: dict[str, list[Union[int, str]]] = {
    "vgg-small": [16, 16, "M", 32, 32, "M", 64, 64, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """Features (conv-BN-ReLU, 'M' = maxpool 2) then flatten -> fc hidden -> ReLU -> fc classes.

    A max-pool is skipped once the feature map is 1 pixel wide, so any layout fits any input
    of at least 1x1. `width` scales every channel count (rounded, at least 1).
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 layout: Union[str, Sequence[Union[int, str]]] = "vgg-small", width: float = 1.0,
                 hidden: int = 128):
        super().__init__()
        spec = VGG_LAYOUTS[layout] if isinstance(layout, str) else list(layout)
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for item in spec:
            if item == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            out = max(1, int(round(int(item) * width)))
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c * h * w, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.features(x))
        return self.fc2(self.relu(self.fc1(x)))

"""LeNet-300-100 and LeNet-5, sized from the input shape."""

from __future__ import annotations

import math

import torch
from torch import nn


class LeNet300(nn.Module):
    """Flatten -> fc 300 -> ReLU -> fc 100 -> ReLU -> fc classes."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: tuple[int, int] = (300, 100)):
        super().__init__()
        n_in = math.prod(input_shape)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(n_in, hidden[0])
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """conv 20 -> ReLU -> maxpool 2 -> conv 50 -> ReLU -> maxpool 2 -> fc 500 -> ReLU -> fc classes.

    On 28x28 and larger inputs both convolutions are the classic 5x5 without padding (28 -> 24
    -> 12 -> 8 -> 4). Smaller inputs (digits' 8x8) use 3x3 kernels, padding 1 on the first conv
    only (8 -> 8 -> 4 -> 2 -> 1): the second conv has no padding on purpose, so removing a dead
    channel of conv1 folds into a plain bias, not a per-position bias map.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: tuple[int, int] = (20, 50),
                 hidden: int = 500, kernel_size: int | None = None):
        super().__init__()
        c, h, w = input_shape
        small = min(h, w) < 28
        k = kernel_size or (3 if small else 5)
        pad1 = k // 2 if small else 0
        self.conv1 = nn.Conv2d(c, channels[0], k, padding=pad1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], k)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        h1, w1 = (h + 2 * pad1 - k + 1) // 2, (w + 2 * pad1 - k + 1) // 2
        h2, w2 = (h1 - k + 1) // 2, (w1 - k + 1) // 2
        if h2 < 1 or w2 < 1:
            raise ValueError(f"LeNet-5: input {h}x{w} is too small for kernel {k}")
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(channels[1] * h2 * w2, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(x)

"""Random small architectures with random neuron masks, for the simplify property tests.

A RandomNet is a chain of blocks drawn from a seed: plain convolutions (kernel 1 or 3, with or
without padding and bias, an optional BatchNorm with or without affine parameters, ReLU or
nothing), residual blocks, two-branch concatenations, depthwise convolutions, max pooling, and
a head (flatten + hidden Linear, or global average pooling) ending in a Linear classifier.
Some nets tie the weight of two layers of the same shape. Masks zero whole neurons; biases and
BatchNorm statistics are random, so dead neurons emit non-zero constants after the ReLU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class RandomNet(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.input_shape = (int(rng.integers(1, 4)), int(rng.integers(3, 9)), 0)
        c, h = self.input_shape[0], self.input_shape[1]
        w = h
        self.input_shape = (c, h, w)
        self.blocks = nn.ModuleList()
        self.plan: list[tuple[str, tuple[int, ...]]] = []  # (kind, indices into self.blocks)

        def conv_unit(cin: int, cout: int, k: int, padding: int, groups: int = 1) -> tuple[int, ...]:
            bias = bool(rng.random() < 0.6)
            idx = [self._add(nn.Conv2d(cin, cout, k, padding=padding, bias=bias, groups=groups))]
            if rng.random() < 0.5:
                idx.append(self._add(nn.BatchNorm2d(cout, affine=bool(rng.random() < 0.7))))
            if rng.random() < 0.8:
                idx.append(self._add(nn.ReLU()))
            return tuple(idx)

        for _ in range(int(rng.integers(1, 5))):
            kind = rng.choice(["conv", "conv", "residual", "concat", "depthwise", "pool"])
            k = int(rng.choice([1, 3])) if h >= 3 else 1
            padding = int(rng.integers(0, 2)) if k == 3 else 0
            if kind == "pool" and h >= 4:
                self.plan.append(("pool", (self._add(nn.MaxPool2d(2)),)))
                h, w = h // 2, w // 2
            elif kind == "residual":
                self.plan.append(("residual", conv_unit(c, c, 3 if h >= 3 else 1, 1 if h >= 3 else 0)))
            elif kind == "concat":
                a, b = int(rng.integers(1, 6)), int(rng.integers(1, 6))
                first = conv_unit(c, a, 1, 0)
                second = conv_unit(c, b, k, 1 if k == 3 else 0)
                self.plan.append(("concat", first + (-1,) + second))
                c = a + b
            elif kind == "depthwise":
                self.plan.append(("chain", conv_unit(c, c, k, 1 if k == 3 else 0, groups=c)))
            else:
                out = int(rng.integers(1, 10))
                self.plan.append(("chain", conv_unit(c, out, k, padding)))
                c = out
                h, w = h - (k - 1 - 2 * padding), w - (k - 1 - 2 * padding)
        classes = int(rng.integers(2, 5))
        if rng.random() < 0.5:
            hidden = int(rng.integers(2, 12))
            self.plan.append(("flatten", ()))
            self.plan.append(("chain", (self._add(nn.Linear(c * h * w, hidden, bias=bool(rng.random() < 0.7))),
                                        self._add(nn.ReLU()))))
            self.plan.append(("chain", (self._add(nn.Linear(hidden, classes)),)))
        else:
            self.plan.append(("gap", ()))
            self.plan.append(("chain", (self._add(nn.Linear(c, classes)),)))
        if rng.random() < 0.15:
            self._tie_two_layers(rng)

    def _add(self, module: nn.Module) -> int:
        self.blocks.append(module)
        return len(self.blocks) - 1

    def _tie_two_layers(self, rng) -> None:
        layers = [m for m in self.blocks if isinstance(m, (nn.Conv2d, nn.Linear))]
        by_shape: dict = {}
        for m in layers:
            by_shape.setdefault((type(m), tuple(m.weight.shape), getattr(m, "groups", 1)), []).append(m)
        pairs = [ms for ms in by_shape.values() if len(ms) > 1]
        if pairs:
            a, b = pairs[int(rng.integers(len(pairs)))][:2]
            b.weight = a.weight

    def _run(self, indices, h):
        for i in indices:
            h = self.blocks[i](h)
        return h

    def forward(self, x):
        h = x
        for kind, idx in self.plan:
            if kind == "chain" or kind == "pool":
                h = self._run(idx, h)
            elif kind == "residual":
                h = self._run(idx, h) + h
            elif kind == "concat":
                split = idx.index(-1)
                h = torch.cat([self._run(idx[:split], h), self._run(idx[split + 1:], h)], 1)
            elif kind == "flatten":
                h = torch.flatten(h, 1)
            elif kind == "gap":
                h = h.mean((2, 3))
        return h


@torch.no_grad()
def masked_random_net(seed: int) -> RandomNet:
    """A RandomNet with random dead neurons (the classifier keeps its rows) in eval mode.

    Deterministic for a seed: the layers' initial weights come from torch's RNG seeded with it
    (and the caller's RNG state is restored)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = RandomNet(seed)
    rng = np.random.default_rng(seed + 1)
    gen = torch.Generator().manual_seed(seed)
    layers = [m for m in net.blocks if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
    for m in layers:
        n = m.weight.shape[0]
        dead = rng.random(n) < rng.choice([0.0, 0.3, 0.6, 0.9])
        m.weight[torch.from_numpy(dead)] = 0
    for m in net.blocks:
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 1.5 - 0.5)
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            if m.affine:
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(c, generator=gen) - 0.3)
    return net.eval()

"""LOBSTER: loss-based sensitivity regularization (Tartaglione et al., Neural Networks 2022; arXiv 2011.09905).

A parameter's sensitivity is |g|, g = dL/dw of the current minibatch; its insensitivity
relu(1 - |g|). After the optimizer step (w' = w - eta * g for plain SGD):

    w <- w' - lambda * w' * relu(1 - |g|)

lambda is not scaled by the learning rate. Every parameter (weight, bias, BatchNorm gamma/beta)
of Linear, Conv2d and BatchNorm layers is regularized, the classifier head included.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from potatura.train.loop import TrainHook
from potatura.train.masks import layer_parameters


def parameter_insensitivity(grad: torch.Tensor) -> torch.Tensor:
    """relu(1 - |g|), elementwise."""
    return (1.0 - grad.abs()).clamp_(min=0.0)


@torch.no_grad()
def lobster_shrink_(param: torch.Tensor, insensitivity: torch.Tensor, lmbda: float) -> None:
    """w <- w - lmbda * w * Ins, in place."""
    param.mul_(1.0 - lmbda * insensitivity)


class LobsterRegularizer(TrainHook):
    """The LOBSTER update as a TrainHook. The gradient is read before the optimizer step, since an
    optimizer may fold weight decay into it."""

    def __init__(self, model: nn.Module, lmbda: float, params: Optional[dict[str, nn.Parameter]] = None):
        self.lmbda = float(lmbda)
        self.params = params if params is not None else layer_parameters(model)
        self.enabled = True
        self._insensitivity: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def after_backward(self, loop, x, y, logits, loss) -> None:
        self._insensitivity = {}
        if not self.enabled or self.lmbda == 0:
            return
        for name, p in self.params.items():
            if p.grad is not None:
                self._insensitivity[name] = parameter_insensitivity(p.grad)

    def after_step(self, loop) -> None:
        for name, ins in self._insensitivity.items():
            lobster_shrink_(self.params[name], ins, self.lmbda)
        self._insensitivity = {}

    def state_dict(self) -> dict:
        return {"enabled": self.enabled}

    def load_state_dict(self, state: dict) -> None:
        self.enabled = bool(state.get("enabled", True))

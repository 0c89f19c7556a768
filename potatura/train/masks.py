"""Which layers hold neurons, which is the classifier head, and masks that keep pruned values at 0.

A neuron is one output row of a Linear or one output filter of a Conv2d; it is pruned when its
whole weight row/filter is zero. The classifier head's outputs are the logits: never pruned.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

NEURON_LAYERS = (nn.Linear, nn.Conv2d)
PARAMETER_LAYERS = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)


def neuron_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Linear/Conv2d of `model`, in registration order, as (qualified name, module)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, NEURON_LAYERS)]


def head_name(model: nn.Module, example: Optional[torch.Tensor] = None) -> str:
    """Name of the Linear/Conv2d whose output is the model's output (the classifier head).

    With `example` (one input batch) the head is found by running the model and matching the
    output tensor; without it, the last registered Linear/Conv2d (true for every zoo model).
    """
    layers = neuron_layers(model)
    if not layers:
        raise ValueError("the model has no Linear or Conv2d layer")
    if example is not None:
        outputs: dict[str, torch.Tensor] = {}
        handles = [m.register_forward_hook(lambda mod, i, o, n=n: outputs.__setitem__(n, o)) for n, m in layers]
        try:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                out = model(example)
            model.train(was_training)
        finally:
            for h in handles:
                h.remove()
        for name, tensor in outputs.items():
            if tensor is out:
                return name
    return layers[-1][0]


def prunable_neuron_layers(model: nn.Module, head: Optional[str] = None) -> list[tuple[str, nn.Module]]:
    """Linear/Conv2d layers whose neurons may be pruned: all but the classifier head."""
    head = head or head_name(model)
    return [(n, m) for n, m in neuron_layers(model) if n != head]


def alive_neurons(module: nn.Module) -> torch.Tensor:
    """Bool [out_features or out_channels]: True where the weight row/filter has a non-zero entry."""
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1).ne(0).any(dim=1)


def weight_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight tensors of every Linear/Conv2d, by qualified parameter name."""
    return {f"{n}.weight": m.weight for n, m in neuron_layers(model)}


def layer_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter (weights, biases, BN gamma/beta) of Linear, Conv2d and BatchNorm layers."""
    out: dict[str, nn.Parameter] = {}
    for name, m in model.named_modules():
        if isinstance(m, PARAMETER_LAYERS):
            for pname, p in m.named_parameters(recurse=False):
                out[f"{name}.{pname}" if name else pname] = p
    return out


class ZeroMask:
    """Keeps pruned parameters at exactly zero through further training.

    The mask is rebuilt from the values (zero = pruned) by refresh() - after each pruning round
    and at each epoch end - and re-applied after every optimizer step, together with the
    momentum buffers so that a pruned weight does not carry a stale velocity. Until the first
    refresh nothing is masked: a parameter that merely starts at zero (BatchNorm's beta) trains.
    """

    def __init__(self, params: dict[str, nn.Parameter]):
        self.params = params
        self.pruned: dict[str, torch.Tensor] = {}

    def refresh(self) -> None:
        self.pruned = {n: p.detach().eq(0) for n, p in self.params.items()}

    @torch.no_grad()
    def apply(self, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        for name, pruned in self.pruned.items():
            p = self.params[name]
            p.masked_fill_(pruned, 0.0)
            if optimizer is not None:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.masked_fill_(pruned, 0.0)

    def pruned_count(self) -> int:
        return int(sum(int(m.sum()) for m in self.pruned.values()))

    def state_dict(self) -> dict:
        return {"pruned": {n: m.clone() for n, m in self.pruned.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.pruned = {n: m.clone() for n, m in state.get("pruned", {}).items() if n in self.params}


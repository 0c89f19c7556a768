"""Sparsity statistics per layer and for the whole network: neurons, parameters, MACs.

MACs are multiply-accumulates for one input sample (counted, not measured): a Linear does one per
weight, a Conv2d one per weight per output position. `macs_remaining` counts the non-zero weights
only, i.e. what a sparse execution of the masked model computes; the simplify stage reports the
MACs of the really smaller dense model.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from potatura.train.loop import TrainHook
from potatura.train.masks import alive_neurons, head_name, neuron_layers


def output_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Output positions per sample (H_out * W_out for Conv2d, 1 for Linear) of every Linear/Conv2d."""
    positions: dict[str, int] = {}
    layers = neuron_layers(model)

    def record(name):
        def hook(module, inputs, output):
            positions[name] = int(output[0, 0].numel()) if output.dim() > 2 else 1
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in layers]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return positions


def sparsity_report(model: nn.Module, input_shape: tuple[int, ...], head: Optional[str] = None,
                    positions: Optional[dict[str, int]] = None) -> dict:
    """Per-layer and network totals of neurons, parameters and MACs (see the module docstring).

    Network `neurons` count the prunable layers only (the head's outputs are the logits);
    network `parameters` count every parameter of the model (BatchNorm too).
    """
    head = head or head_name(model)
    positions = positions or output_positions(model, input_shape)
    # A model shrunk during training (potatura.train.shrink) counts against its architecture's sizes:
    # the neurons it removed count as pruned.
    shrunk = getattr(model, "_potatura_shrink_sizes", None) or {"layers": {}}
    layers = []
    for name, m in neuron_layers(model):
        w = m.weight.detach()
        size = shrunk["layers"].get(name)
        weight_numel = math.prod(size["weight"]) if size else w.numel()
        params = weight_numel + ((size["weight"][0] if size else m.bias.numel()) if m.bias is not None else 0)
        nonzero = int(w.ne(0).sum()) + (int(m.bias.detach().ne(0).sum()) if m.bias is not None else 0)
        pos = positions.get(name, 1)
        layers.append({
            "name": name,
            "type": type(m).__name__,
            "head": name == head,
            "neurons": int(size["neurons"] if size else w.shape[0]),
            "neurons_remaining": int(alive_neurons(m).sum()),
            "parameters": int(params),
            "parameters_remaining": nonzero,
            "macs": int(weight_numel * pos),
            "macs_remaining": int(w.ne(0).sum()) * pos,
        })
    total_params = shrunk.get("parameters") or sum(p.numel() for p in model.parameters())
    nonzero_params = sum(int(p.detach().ne(0).sum()) for p in model.parameters())
    prunable = [l for l in layers if not l["head"]]
    neurons = sum(l["neurons"] for l in prunable)
    neurons_remaining = sum(l["neurons_remaining"] for l in prunable)
    macs = sum(l["macs"] for l in layers)
    macs_remaining = sum(l["macs_remaining"] for l in layers)

    def pct(a: int, b: int) -> float:
        return 100.0 * a / b if b else 100.0

    return {
        "layers": layers,
        "network": {
            "parameters": int(total_params),
            "parameters_remaining": int(nonzero_params),
            "parameters_remaining_pct": pct(nonzero_params, total_params),
            "neurons": neurons,
            "neurons_remaining": neurons_remaining,
            "neurons_remaining_pct": pct(neurons_remaining, neurons),
            "macs": macs,
            "macs_remaining": macs_remaining,
            "macs_remaining_pct": pct(macs_remaining, macs),
        },
        "counted": "neurons, parameters and MACs counted from the weights (MACs per input sample)",
    }


def neurons_per_layer(report: dict) -> dict[str, list[int]]:
    """{layer name: [remaining, total]} from a sparsity_report."""
    return {l["name"]: [l["neurons_remaining"], l["neurons"]] for l in report["layers"]}


class SparsityMetrics(TrainHook):
    """A TrainHook adding remaining_parameters_pct / remaining_neurons_pct / remaining_macs_pct to
    each epoch's metrics (for methods without a pruning schedule, which adds them itself)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], head: Optional[str] = None):
        self.model = model
        self.input_shape = tuple(input_shape)
        self.head = head or head_name(model)
        self._positions = output_positions(model, self.input_shape)

    def on_epoch_end(self, loop, metrics: dict) -> None:
        if "remaining_parameters_pct" in metrics:
            return
        net = sparsity_report(self.model, self.input_shape, self.head, self._positions)["network"]
        metrics["remaining_parameters_pct"] = net["parameters_remaining_pct"]
        metrics["remaining_neurons_pct"] = net["neurons_remaining_pct"]
        metrics["remaining_macs_pct"] = net["macs_remaining_pct"]

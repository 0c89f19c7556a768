"""One-shot structured magnitude pruning: the baseline SeReNe is compared with.

Each prunable layer keeps its `keep` output neurons of largest L1 norm (sum of |w| over the
weight row/filter); the others get a zero weight row and a zero bias, so simplify removes them
as dead neurons with no constant to propagate. The masks then keep them at zero while the
model is fine-tuned. The classifier head is never pruned.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from potatura.errors import ConfigError
from potatura.train.loop import TrainHook
from potatura.train.masks import ZeroMask, neuron_layers, prunable_neuron_layers


def neuron_l1_norms(module: nn.Module) -> torch.Tensor:
    """[out]: L1 norm of each output neuron's weight row/filter."""
    w = module.weight.detach()
    return w.abs().reshape(w.shape[0], -1).sum(dim=1)


def keep_counts(model: nn.Module, head: str, keep: Optional[dict[str, int]] = None,
                keep_pct: Optional[float] = None) -> dict[str, int]:
    """Neurons to keep per prunable layer: `keep` by name, else round(keep_pct % of each layer), >= 1."""
    layers = dict(prunable_neuron_layers(model, head))
    if keep:
        unknown = [n for n in keep if n not in layers]
        if unknown:
            heads = " (the classifier head is never pruned)" if head in unknown else ""
            raise ConfigError(f"train.keep_neurons: unknown layers {unknown}{heads}; prunable layers: {', '.join(layers)}")
        counts = {n: int(keep[n]) for n in keep}
        too_many = {n: (c, layers[n].weight.shape[0]) for n, c in counts.items() if c > layers[n].weight.shape[0]}
        if too_many:
            raise ConfigError(f"train.keep_neurons: more neurons than the layer has {too_many} (asked, has)")
        return counts
    if keep_pct is None:
        raise ConfigError("magnitude pruning needs keep_neurons or target_neurons_pct")
    return {n: max(1, int(round(m.weight.shape[0] * keep_pct / 100.0))) for n, m in layers.items()}


@torch.no_grad()
def prune_lowest_l1_(model: nn.Module, counts: dict[str, int]) -> dict[str, list[int]]:
    """Zero the weight rows and biases of all but the `counts[name]` largest-L1 neurons of each layer.

    Neurons already at zero count as pruned. Ties keep the lower index. Returns {name: kept indices}.
    """
    layers = dict(neuron_layers(model))
    kept = {}
    for name, keep in counts.items():
        module = layers[name]
        norms = neuron_l1_norms(module)
        order = torch.argsort(norms, descending=True, stable=True)
        keep_idx = order[:keep]
        drop = torch.ones(norms.numel(), dtype=torch.bool, device=norms.device)
        drop[keep_idx] = False
        module.weight[drop] = 0.0
        if module.bias is not None:
            module.bias[drop] = 0.0
        kept[name] = sorted(int(i) for i in keep_idx)
    return kept


class OneShotMagnitudePruning(TrainHook):
    """Prune once (before training when at_epoch is 0, else after that epoch), then fine-tune with masks."""

    def __init__(self, model: nn.Module, head: str, counts: dict[str, int], at_epoch: int = 0):
        self.model = model
        self.counts = counts
        self.at_epoch = at_epoch
        layers = dict(neuron_layers(model))
        params = {}
        for name in counts:
            params[f"{name}.weight"] = layers[name].weight
            if layers[name].bias is not None:
                params[f"{name}.bias"] = layers[name].bias
        self.mask = ZeroMask(params)
        self.done = False
        self.kept: dict[str, list[int]] = {}

    def prune(self, loop=None) -> None:
        self.kept = prune_lowest_l1_(self.model, self.counts)
        self.mask.refresh()
        if loop is not None:
            self.mask.apply(loop.optimizer)
        self.done = True

    def on_train_start(self, loop) -> None:
        if self.at_epoch == 0 and not self.done:
            self.prune(loop)

    def after_step(self, loop) -> None:
        if self.done:
            self.mask.apply(loop.optimizer)

    def on_epoch_end(self, loop, metrics: dict) -> None:
        if not self.done and int(metrics["epoch"]) >= self.at_epoch:
            self.prune(loop)
            metrics["pruned"] = "one-shot L1"

    def on_shrink(self, loop, removal: dict) -> None:
        if self.done:
            self.mask.refresh()  # the removed rows are gone; the rest of the mask is the zeros left

    def state_dict(self) -> dict:
        return {"done": self.done, "kept": self.kept, "mask": self.mask.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.done = bool(state["done"])
        self.kept = dict(state["kept"])
        self.mask.load_state_dict(state["mask"])

"""From the `train` section to the hooks that implement its pruning method."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from potatura.train.config import TrainConfig
from potatura.train.lobster import LobsterRegularizer
from potatura.train.loop import TrainHook
from potatura.train.magnitude import OneShotMagnitudePruning, keep_counts
from potatura.train.masks import head_name, layer_parameters, prunable_neuron_layers, weight_parameters
from potatura.train.neq import NEqFreezing
from potatura.train.schedule import PruningSchedule
from potatura.train.serene import SereneRegularizer
from potatura.train.shrink import ShrinkDuringTraining
from potatura.train.stats import SparsityMetrics


@dataclass
class PruningSetup:
    """The hooks to pass to TrainLoop, and the one that knows how pruning went (or None)."""

    hooks: list[TrainHook] = field(default_factory=list)
    schedule: Optional[PruningSchedule] = None
    oneshot: Optional[OneShotMagnitudePruning] = None
    neq: Optional[NEqFreezing] = None
    shrink: Optional[ShrinkDuringTraining] = None
    head: str = ""


def build_pruning(cfg: TrainConfig, model: nn.Module, input_shape: tuple[int, ...],
                  log: Optional[logging.Logger] = None, seed: int = 0) -> PruningSetup:
    """Hooks for cfg.method (and cfg.neq) on `model` (inputs of shape (C, H, W) without the batch)."""
    head = head_name(model)
    setup = PruningSetup(head=head)
    if cfg.neq is not None:
        # First: its after_step restores frozen neurons right after the optimizer step, before a
        # pruning method's shrink or masks act on every neuron.
        setup.neq = NEqFreezing(model, cfg.neq, input_shape, head=head, seed=seed, log=log)
        setup.hooks.append(setup.neq)
    if cfg.method in ("serene", "lobster"):
        if cfg.method == "serene":
            regularizer = SereneRegularizer(model, cfg.lmbda, cfg.sensitivity, head=head,
                                            bn_sensitivity=cfg.bn_sensitivity, normalize=cfg.sensitivity_norm,
                                            every=cfg.sensitivity_every)
            threshold_params = weight_parameters(model)
        else:
            regularizer = LobsterRegularizer(model, cfg.lmbda)
            threshold_params = layer_parameters(model)
        neuron_weights = ({f"{n}.weight": m.weight for n, m in prunable_neuron_layers(model, head)}
                          if cfg.threshold == "neurons+parameters" else None)
        setup.schedule = PruningSchedule(
            model, regularizer, threshold_params, weight_parameters(model), input_shape, head,
            pwe=cfg.pwe, twt=cfg.twt, epochs=cfg.epochs, finetune_epochs=cfg.effective_finetune_epochs(),
            target_parameters_pct=cfg.target_parameters_pct, target_neurons_pct=cfg.target_neurons_pct, log=log,
            # Only a constant or plateau LR leaves the LR to the schedule; cosine/step keep their own curve.
            anneal_finetune_lr=cfg.lr_schedule in ("constant", "plateau"),
            neuron_weights=neuron_weights, neuron_share=cfg.neuron_share)
        setup.hooks.append(setup.schedule)
    elif cfg.method == "magnitude-oneshot":
        counts = keep_counts(model, head, cfg.keep_neurons, cfg.target_neurons_pct)
        setup.oneshot = OneShotMagnitudePruning(model, head, counts, at_epoch=cfg.oneshot_epoch)
        setup.hooks.append(setup.oneshot)
    setup.hooks.append(SparsityMetrics(model, input_shape, head))
    if cfg.shrink_every:
        # Last: it removes the neurons the other hooks have just declared dead this epoch.
        setup.shrink = ShrinkDuringTraining(model, input_shape, head, cfg.shrink_every, log=log)
        setup.hooks.append(setup.shrink)
    return setup

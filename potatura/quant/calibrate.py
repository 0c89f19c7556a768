"""PTQ (activation calibration, bias correction) and QAT for a Brevitas model.

Calibration and bias correction are Brevitas's own context managers (brevitas.graph.calibrate);
QAT is potatura's training loop with a hook that keeps pruned weights exactly zero, so the
pruning survives quantization.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from potatura.train.loop import TrainHook, TrainLoop, TrainResult


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]


@torch.no_grad()
def calibrate_activations(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                          on_batch: Optional[Callable[[int], None]] = None) -> None:
    """Set every activation scale from statistics of `x` [N, C, H, W] (Brevitas calibration_mode)."""
    from brevitas.graph.calibrate import calibration_mode

    model.eval()
    with calibration_mode(model):
        for batch in _batches(x, batch_size):
            model(batch)
            if on_batch:
                on_batch(len(batch))
    model.eval()


@torch.no_grad()
def correct_biases(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Add to each bias the mean difference between the float and quantized layer outputs on `x`
    (Brevitas bias_correction_mode)."""
    from brevitas.graph.calibrate import bias_correction_mode

    model.eval()
    with bias_correction_mode(model):
        for batch in _batches(x, batch_size):
            model(batch)
    model.eval()


def weight_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: bool mask of its non-zero entries} for every conv/linear weight."""
    return {name: p.detach() != 0 for name, p in model.named_parameters()
            if name.endswith("weight") and p.dim() >= 2}


class KeepPrunedWeightsZero(TrainHook):
    """Re-applies the pruning masks after every optimizer step: pruned weights stay exactly 0."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    def apply(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                params[name].mul_(mask)

    def on_train_start(self, loop: TrainLoop) -> None:
        self.apply(loop.model)

    def after_step(self, loop: TrainLoop) -> None:
        self.apply(loop.model)


def fine_tune(model: nn.Module, data, train_cfg, epochs: int, lr: float, batch_size: Optional[int] = None,
              seed: int = 0, masks: Optional[dict[str, torch.Tensor]] = None, checkpoint_dir: Optional[Path] = None,
              log: Optional[logging.Logger] = None, on_epoch: Optional[Callable[[dict], None]] = None) -> TrainResult:
    """Quantization-aware training of a calibrated Brevitas model for `epochs` epochs.

    `train_cfg` is the flow's train section (optimizer settings); epochs, lr and batch size are
    replaced by the QAT ones and the schedule is cosine. `masks` default to the current zeros.
    """
    from potatura.train.config import TrainConfig

    base = train_cfg if train_cfg is not None else TrainConfig()
    cfg = base.model_copy(update={"epochs": epochs, "lr": lr, "lr_schedule": "cosine", "checkpoint": None,
                                  "batch_size": batch_size or base.batch_size})
    hook = KeepPrunedWeightsZero(masks if masks is not None else weight_masks(model))
    loop = TrainLoop(model, data, cfg, seed=seed, checkpoint_dir=checkpoint_dir, hooks=[hook], log=log, on_epoch=on_epoch)
    result = loop.run()
    hook.apply(model)
    model.eval()
    return result

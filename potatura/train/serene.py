"""SeReNe: sensitivity-based regularization of neurons (Tartaglione et al., TNNLS; arXiv 2102.03773).

z_n, the post-synaptic potential (PSP) of neuron n, is the output of its Linear/Conv2d before
BatchNorm and activation; y_k (k = 1..C) are the logits and alpha = 1/C.

    full      S_n = alpha * sum_k |dy_k/dz_n|        one backward per class (batched with vmap)
    bounded   S_n = alpha * |sum_k dy_k/dz_n|        one backward of ones(y) on the same graph
    local     Ins_n = 1 if mean(z_n) <= 0 else 0      no backward

Derivatives are taken per sample and per spatial position, reduced by absolute value, then
averaged over the batch (and over positions for a Conv2d). After each optimizer step every
weight of neuron n shrinks by the same factor:

    W[n, ...] <- W[n, ...] - lambda * relu(1 - S_n) * W[n, ...]

so an insensitive neuron decays as a whole. Biases are not regularized (as in the reference).
The classifier head is not regularized: its outputs are the logits.

Where the reference code differs, potatura follows the paper: bounded sensitivity of a conv
layer is a per-channel mean (the reference keeps channel 0 only, a stray index), and full
sensitivity carries no extra 1/B factor (the reference averages the logits over the batch
first, which makes S ~ 0 and the method plain weight decay).

A model with BatchNorm in training mode couples the samples of a batch through the batch
statistics, so autograd of the summed logits on the training graph gives, for sample b,
sum_b' dy_b'/dz_b: cross-sample paths the paper's per-sample derivative dy_b/dz_b does not have
(measured 0.43-0.56x the per-sample value at batch 32-100). bn_sensitivity "per-sample" (the
default) follows the paper: one extra forward of the batch in which every BatchNorm normalizes
with this batch's statistics held fixed (detached), so samples are independent and the summed
backward gives each sample's own derivative; "batch" keeps the derivative through the batch
statistics (potatura <= 0.1). Models without BatchNorm in training mode are the same either way
and pay nothing extra.

potatura's variants (off by default; docs/algorithms.md section 3): normalize "layer-max" uses
relu(1 - S_n / max_m S_m) over the layer's neurons (the paper's S is <= 0.008 on a trained LeNet-5,
so relu(1 - S) ~ 1 for every neuron); every N > 1 computes the sensitivity every N-th step and
shrinks with the latest one in between.

NeuronLOBSTER (the variant in the same reference code) uses the loss instead of the outputs:
s_n = |EMA_0.9(mean over batch and positions of the per-sample dL/dz_n)|, Ins_n = relu(1 - s_n),
and shrinks the neuron's bias too. It needs no extra backward: a tensor hook reads dL/dz during
the ordinary loss backward.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from potatura.train.loop import TrainHook
from potatura.train.masks import prunable_neuron_layers


def per_neuron_mean(t: torch.Tensor) -> torch.Tensor:
    """[B, N, *spatial] -> [N]: mean over the batch and every spatial position."""
    return t.mean(dim=[0, *range(2, t.dim())])


def bounded_sensitivity(logits: torch.Tensor, psps: list[torch.Tensor]) -> list[torch.Tensor]:
    """alpha * mean_{b,pos} |sum_k dy_k/dz_n| for each PSP tensor [B, N, ...]; one backward, graph kept."""
    num_classes = logits.shape[1]
    grads = torch.autograd.grad(logits, psps, grad_outputs=torch.ones_like(logits), retain_graph=True,
                                allow_unused=True)
    # The gradients are fresh tensors owned here: abs_ in place saves a copy of each PSP-sized map.
    return [_reduce_or_zero(g, z, lambda g: per_neuron_mean(g.abs_())) / num_classes for g, z in zip(grads, psps)]


def full_sensitivity(logits: torch.Tensor, psps: list[torch.Tensor], batched: bool = True) -> list[torch.Tensor]:
    """alpha * mean_{b,pos} sum_k |dy_k/dz_n|; C backward passes (one vmapped call when `batched`), graph kept."""
    batch, num_classes = logits.shape
    if batched:
        # grad_outputs[k] selects class k in every sample: row k of the batched backward is dy_k/dz.
        one_hot = torch.eye(num_classes, dtype=logits.dtype, device=logits.device).unsqueeze(1).expand(num_classes, batch, num_classes)
        grads = torch.autograd.grad(logits, psps, grad_outputs=one_hot, retain_graph=True,
                                    is_grads_batched=True, allow_unused=True)
        return [_reduce_or_zero(g, z, lambda g: per_neuron_mean(g.abs().sum(0))) / num_classes
                for g, z in zip(grads, psps)]
    totals = [torch.zeros_like(z) for z in psps]
    for k in range(num_classes):
        select = torch.zeros_like(logits)
        select[:, k] = 1.0
        grads = torch.autograd.grad(logits, psps, grad_outputs=select, retain_graph=True, allow_unused=True)
        for total, g in zip(totals, grads):
            if g is not None:
                total.add_(g.abs())
    return [per_neuron_mean(t) / num_classes for t in totals]


def local_insensitivity(psps: list[torch.Tensor]) -> list[torch.Tensor]:
    """1.0 where the batch-and-space mean of z_n is <= 0, else 0.0 (one value per neuron)."""
    return [per_neuron_mean(z.detach()).le(0).to(z.dtype) for z in psps]


def insensitivity(sensitivity: torch.Tensor) -> torch.Tensor:
    """relu(1 - S)."""
    return (1.0 - sensitivity).clamp_(min=0.0)


def layer_max_normalized(sensitivity: torch.Tensor) -> torch.Tensor:
    """S / max S over the layer's neurons (potatura's variant "layer-max"; all-zero stays zero)."""
    top = sensitivity.max() if sensitivity.numel() else sensitivity.new_zeros(())
    return sensitivity / top if float(top) > 0 else sensitivity


@torch.no_grad()
def shrink_neurons_(weight: torch.Tensor, neuron_insensitivity: torch.Tensor, lmbda: float) -> None:
    """W[n, ...] <- W[n, ...] - lmbda * Ins_n * W[n, ...], in place (Ins: [out])."""
    factor = 1.0 - lmbda * neuron_insensitivity
    weight.mul_(factor.view(-1, *([1] * (weight.dim() - 1))))


def _reduce_or_zero(g: Optional[torch.Tensor], z: torch.Tensor, reduce) -> torch.Tensor:
    # A PSP that does not reach the logits (a dead branch) has no gradient: sensitivity 0.
    if g is None:
        return torch.zeros(z.shape[1], dtype=z.dtype, device=z.device)
    return reduce(g)


class PSPRecorder:
    """Forward hooks keeping the outputs z of the given layers during training forward passes.

    Only forwards with autograd on and the module in training mode are recorded, so evaluation
    passes (no_grad, eval mode) never hold tensors. With keep_loss_grad, a tensor hook also keeps
    dL/dz when the ordinary backward passes through z.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], keep_loss_grad: bool = False):
        self.layers = layers
        self.keep_loss_grad = keep_loss_grad
        self.psps: dict[str, torch.Tensor] = {}
        self.loss_grads: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def attach(self) -> None:
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers]

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    def clear(self) -> None:
        self.psps.clear()
        self.loss_grads.clear()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not (module.training and torch.is_grad_enabled() and output.requires_grad):
                return
            self.psps[name] = output
            if self.keep_loss_grad:
                output.register_hook(lambda g: self.loss_grads.__setitem__(name, g))
        return hook

    def ordered(self) -> list[torch.Tensor]:
        missing = [n for n, _ in self.layers if n not in self.psps]
        if missing:
            raise RuntimeError(f"SeReNe: no output recorded for layers {missing} in this forward pass")
        return [self.psps[n] for n, _ in self.layers]


BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


class FixedBatchStatistics:
    """Context: every training-mode BatchNorm of `model` normalizes with the statistics of the batch
    it sees, detached (no gradient through mean/var, running statistics not updated)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, BATCHNORMS) and m.training]

    @staticmethod
    def _forward(module):
        def forward(x):
            dims = [0, *range(2, x.dim())]
            mean = x.detach().mean(dims)
            var = x.detach().var(dims, unbiased=False)  # what training-mode normalization divides by
            return nn.functional.batch_norm(x, mean, var, module.weight, module.bias, False, 0.0, module.eps)
        return forward

    def __enter__(self):
        for m in self.layers:
            m.forward = self._forward(m)
        return self

    def __exit__(self, *exc):
        for m in self.layers:
            del m.forward


def has_training_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, BATCHNORMS) and m.training for m in model.modules())


class SereneRegularizer(TrainHook):
    """The SeReNe update as a TrainHook: sensitivity on each minibatch, neuron shrink after each step.

    `enabled` switches the regularizer off (the fine-tuning phase) without removing it.
    """

    def __init__(self, model: nn.Module, lmbda: float, sensitivity: str = "bounded", head: Optional[str] = None,
                 ema_decay: float = 0.9, batched_full: bool = True, bn_sensitivity: str = "per-sample",
                 normalize: str = "none", every: int = 1):
        if sensitivity not in ("bounded", "full", "local", "neuron-lobster"):
            raise ValueError(f"unknown SeReNe sensitivity {sensitivity!r}")
        if bn_sensitivity not in ("per-sample", "batch"):
            raise ValueError(f"unknown BatchNorm sensitivity mode {bn_sensitivity!r} (per-sample | batch)")
        if normalize not in ("none", "layer-max"):
            raise ValueError(f"unknown sensitivity normalization {normalize!r} (none | layer-max)")
        if every < 1:
            raise ValueError(f"sensitivity_every must be >= 1, got {every}")
        self.bn_sensitivity = bn_sensitivity
        self.normalize = normalize
        self.every = int(every)
        self._steps = 0
        self._latest: Optional[list[torch.Tensor]] = None  # the insensitivity reused between computations
        self.model = model
        self.lmbda = float(lmbda)
        self.sensitivity = sensitivity
        self.layers = prunable_neuron_layers(model, head)
        self.ema_decay = ema_decay
        self.batched_full = batched_full
        self.enabled = True
        self.recorder = PSPRecorder(self.layers, keep_loss_grad=sensitivity == "neuron-lobster")
        self.neuron_insensitivity: Optional[list[torch.Tensor]] = None
        self.ema: dict[str, torch.Tensor] = {}

    # -- hook --------------------------------------------------------------------------------
    def on_run_start(self, loop) -> None:
        self.recorder.attach()

    def on_run_end(self, loop) -> None:
        self.recorder.detach()

    def before_backward(self, loop, x, y, logits, loss) -> None:
        self.neuron_insensitivity = None
        if not self.enabled or self.lmbda == 0:
            return
        if self.sensitivity in ("bounded", "full") and self.every > 1:
            step, self._steps = self._steps, self._steps + 1
            if step % self.every and self._latest is not None:
                self.neuron_insensitivity = self._latest
                return
        if self.sensitivity in ("bounded", "full") and self.bn_sensitivity == "per-sample" \
                and has_training_batchnorm(self.model):
            # The paper's per-sample derivative: a forward with the batch statistics held fixed
            # (the recorder keeps that forward's PSPs; the training graph is left as it is).
            with FixedBatchStatistics(self.model):
                logits = self.model(x)
        psps = self.recorder.ordered()
        if self.sensitivity in ("bounded", "full"):
            sens = (bounded_sensitivity(logits, psps) if self.sensitivity == "bounded"
                    else full_sensitivity(logits, psps, self.batched_full))
            if self.normalize == "layer-max":
                sens = [layer_max_normalized(s) for s in sens]
            self.neuron_insensitivity = [insensitivity(s) for s in sens]
            self._latest = self.neuron_insensitivity if self.every > 1 else None
        elif self.sensitivity == "local":
            self.neuron_insensitivity = local_insensitivity(psps)

    def after_backward(self, loop, x, y, logits, loss) -> None:
        if not self.enabled or self.lmbda == 0 or self.sensitivity != "neuron-lobster":
            return
        batch = x.shape[0]
        ins = []
        for name, _ in self.layers:
            g = self.recorder.loss_grads.get(name)
            # L is the batch mean, so B * dL/dz_b is the per-sample loss gradient.
            mean_grad = per_neuron_mean(g.detach()) * batch if g is not None else None
            prev = self.ema.get(name)
            if mean_grad is not None:
                self.ema[name] = mean_grad if prev is None else self.ema_decay * prev + (1 - self.ema_decay) * mean_grad
            ins.append(insensitivity(self.ema[name].abs()) if name in self.ema else None)
        self.neuron_insensitivity = ins

    @torch.no_grad()
    def after_step(self, loop) -> None:
        if self.neuron_insensitivity is not None:
            for (name, module), ins in zip(self.layers, self.neuron_insensitivity):
                if ins is None:
                    continue
                shrink_neurons_(module.weight, ins, self.lmbda)
                if self.sensitivity == "neuron-lobster" and module.bias is not None:
                    module.bias.mul_(1.0 - self.lmbda * ins)
        self.neuron_insensitivity = None
        self.recorder.clear()

    def on_shrink(self, loop, removal: dict) -> None:
        """NeuronLOBSTER's running means follow the neurons shrinking during training kept."""
        self._latest = None  # sized for the neurons before the shrink: recomputed at the next step
        for name, (_, keep, _, _) in removal.items():
            if name in self.ema:
                self.ema[name] = self.ema[name][keep.to(self.ema[name].device)]

    def state_dict(self) -> dict:
        state = {"enabled": self.enabled, "ema": {k: v.clone() for k, v in self.ema.items()}}
        if self.every > 1:
            state["steps"] = self._steps
            state["latest"] = [t.clone() for t in self._latest] if self._latest is not None else None
        return state

    def load_state_dict(self, state: dict) -> None:
        self.enabled = bool(state.get("enabled", True))
        self.ema = {k: v.clone() for k, v in state.get("ema", {}).items()}
        self._steps = int(state.get("steps", 0))
        latest = state.get("latest")
        self._latest = [t.clone() for t in latest] if latest is not None else None

"""The pruning schedule shared by LOBSTER and SeReNe: plateau detector + threshold bisection.

Each epoch: train (the regularizer shrinks weights every step), evaluate, then the plateau
detector looks at the validation loss. An epoch is "good" when its loss is below the best loss
times 1.01; a good epoch resets a counter, and the best loss and weights update on strict
improvement only. When the counter reaches PWE (or the loss is NaN) the model rolls back to the
best weights; a plateau then starts one threshold round:

    bound B = L_val(current) * (1 + TWT)
    T_min, T_max = smallest, largest non-zero |w| over the weight tensors; T_mean = mean over
    layers of each layer's mean non-zero |w|
    try T_mean: below B -> search [T_mean, T_max], else [T_min, T_mean]
    bisect: c = (a + b) / 2, a = c if L(c) <= B else b = c, until |L(a) - L(b)| < 0.05 B or c
    moves by <= 1e-10; apply T = a for good: p <- 0 where |p| < T.

With `threshold: neurons+parameters` (potatura's variant, docs/algorithms.md section 3) a round
first runs the same bisection on the L2 norms of the prunable neurons' incoming weights (zeroing
whole neurons) with the bound L_val * (1 + neuron_share * TWT), then the parameter round above.

L(T) is the validation loss with every thresholded parameter below T zeroed (then restored).
T = a always meets the bound (L(T_min) is the current loss). After a round the detector's best
becomes the pruned model, so a later rollback never brings pruned weights back; rollbacks also
re-apply the mask for the same reason.

Pruning ends at a target (remaining parameters % or neurons %) or when only `finetune_epochs`
of the budget are left; fine-tuning then trains with the masks and without the regularizer,
and (anneal_finetune_lr) with the LR going from its value at that point to 0 along a half
cosine: pruning runs at a constant LR, so the LR decay a dense baseline gets happens here.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from potatura.train.loop import TrainHook, evaluate
from potatura.train.masks import ZeroMask
from potatura.train.stats import output_positions, sparsity_report


def _finite_or_inf(x: float) -> float:
    return x if math.isfinite(x) else math.inf


class PlateauDetector:
    """Validation-loss plateau detection with rollback to the best weights (patience = PWE epochs)."""

    def __init__(self, patience: int, tolerance: float = 0.01):
        if patience < 1:
            raise ValueError(f"plateau patience must be >= 1, got {patience}")
        self.patience = patience
        self.tolerance = tolerance
        self.best_loss = math.inf
        self.best_state: Optional[dict] = None
        self.counter = 0

    def step(self, loss: float, model: nn.Module) -> str:
        """Feed one epoch's validation loss; returns "plateau" or "nan" (both rolled back) or "ok"."""
        if not math.isfinite(loss):
            self._rollback(model)
            self.counter = 0
            return "nan"
        good = loss < self.best_loss * (1.0 + self.tolerance)
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = _copy_state(model)
        self.counter = 0 if good else self.counter + 1
        if self.counter >= self.patience:
            self._rollback(model)
            self.counter = 0
            return "plateau"
        return "ok"

    def reset(self, loss: float, model: nn.Module) -> None:
        """Make the current model the best (after a pruning round changed it)."""
        self.best_loss = loss if math.isfinite(loss) else math.inf
        self.best_state = _copy_state(model)
        self.counter = 0

    def _rollback(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_state": self.best_state, "counter": self.counter}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_state = state["best_state"]
        self.counter = int(state["counter"])


def _copy_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def magnitude_statistics(weights: Iterable[torch.Tensor]) -> Optional[tuple[float, float, float]]:
    """(T_min, T_mean, T_max) over the non-zero |w| of the given tensors; None if all are zero.

    T_mean is the mean over tensors of each tensor's mean non-zero magnitude.
    """
    mins, means, maxs = [], [], []
    for w in weights:
        mags = w.detach().abs()
        mags = mags[mags > 0]
        if mags.numel():
            mins.append(float(mags.min()))
            means.append(float(mags.mean()))
            maxs.append(float(mags.max()))
    if not means:
        return None
    return min(mins), sum(means) / len(means), max(maxs)


@torch.no_grad()
def zero_below_(params: Iterable[torch.Tensor], threshold: float) -> int:
    """p <- 0 where |p| < threshold, in place; returns how many non-zero values were zeroed."""
    zeroed = 0
    for p in params:
        below = p.abs() < threshold
        zeroed += int((below & p.ne(0)).sum())
        p.masked_fill_(below, 0.0)
    return zeroed


@dataclass
class ThresholdSearch:
    threshold: float
    val_loss: float        # validation loss with the threshold applied
    bound: float
    evaluations: int
    t_min: float
    t_mean: float
    t_max: float
    trials: list = field(default_factory=list)  # [(T, loss)] in the order tried


@torch.no_grad()
def _search(tensors: Sequence[torch.Tensor], stats: Optional[tuple[float, float, float]],
            zero_below: Callable[[Sequence[torch.Tensor], float], int], val_loss: Callable[[], float], bound: float,
            rel_tol: float, min_step: float, max_trials: int) -> Optional[ThresholdSearch]:
    """The paper's bisection for any "zero what is below T" operation on `tensors`, with the
    statistics (T_min, T_mean, T_max) it starts from. Every trial restores the tensors."""
    if stats is None:
        return None
    t_min, t_mean, t_max = stats
    backup = [t.detach().clone() for t in tensors]
    trials: list[tuple[float, float]] = []

    def loss_at(t: float) -> float:
        zero_below(tensors, t)
        loss = _finite_or_inf(float(val_loss()))
        for p, b in zip(tensors, backup):
            p.copy_(b)
        trials.append((t, loss))
        return loss

    loss_mean = loss_at(t_mean)
    if loss_mean <= bound:
        a, b, loss_a, loss_b = t_mean, t_max, loss_mean, loss_at(t_max)
    else:
        a, b, loss_a, loss_b = t_min, t_mean, loss_at(t_min), loss_mean
    previous_c: Optional[float] = None
    while abs(loss_a - loss_b) >= rel_tol * bound and len(trials) < max_trials:
        c = (a + b) / 2
        if previous_c is not None and abs(c - previous_c) <= min_step:
            break
        previous_c = c
        loss_c = loss_at(c)
        if loss_c <= bound:
            a, loss_a = c, loss_c
        else:
            b, loss_b = c, loss_c
    return ThresholdSearch(a, loss_a, bound, len(trials), t_min, t_mean, t_max, trials)


def bisect_threshold(params: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], val_loss: Callable[[], float],
                     bound: float, rel_tol: float = 0.05, min_step: float = 1e-10, max_trials: int = 64,
                     ) -> Optional[ThresholdSearch]:
    """Largest global magnitude threshold found by bisection whose validation loss is <= bound.

    params: the tensors a threshold zeroes; weights: the tensors the statistics come from;
    val_loss(): the validation loss of the model as it is. Leaves params unchanged. None when
    every weight is already zero.
    """
    return _search(params, magnitude_statistics(weights), zero_below_, val_loss, bound, rel_tol, min_step, max_trials)


def neuron_norms(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each neuron's incoming weights (a Linear row, a Conv2d filter): [out]."""
    return weight.detach().reshape(weight.shape[0], -1).norm(dim=1)


def neuron_norm_statistics(weights: Iterable[torch.Tensor]) -> Optional[tuple[float, float, float]]:
    """(T_min, T_mean, T_max) over the non-zero neuron norms, T_mean the mean of each layer's mean."""
    return magnitude_statistics(neuron_norms(w) for w in weights)


@torch.no_grad()
def zero_neurons_below_(weights: Iterable[torch.Tensor], threshold: float) -> int:
    """Zero every neuron (whole weight row/filter) whose L2 norm is below threshold; returns how many
    live neurons were zeroed."""
    zeroed = 0
    for w in weights:
        norms = neuron_norms(w)
        below = norms < threshold
        zeroed += int((below & norms.gt(0)).sum())
        w[below] = 0.0
    return zeroed


def bisect_neuron_threshold(weights: Sequence[torch.Tensor], val_loss: Callable[[], float], bound: float,
                            rel_tol: float = 0.05, min_step: float = 1e-10, max_trials: int = 64,
                            ) -> Optional[ThresholdSearch]:
    """The paper's bisection with neurons instead of parameters: the largest threshold T on the L2 norm
    of a neuron's incoming weights such that zeroing every neuron below T keeps the validation loss
    <= bound. Statistics over the live neurons of `weights` (the prunable layers, not the head).
    Leaves the weights unchanged; None when no neuron is alive."""
    return _search(weights, neuron_norm_statistics(weights), zero_neurons_below_, val_loss, bound, rel_tol,
                   min_step, max_trials)


class PruningSchedule(TrainHook):
    """Regularizer + masks + plateau detector + threshold rounds + targets, as one TrainHook.

    regularizer: a SereneRegularizer or LobsterRegularizer (any hook with an `enabled` flag).
    threshold_params: what a threshold zeroes (and the mask keeps at zero); stat_weights: the
    weight tensors the threshold statistics come from.
    """

    def __init__(self, model: nn.Module, regularizer: Optional[TrainHook], threshold_params: dict[str, nn.Parameter],
                 stat_weights: dict[str, nn.Parameter], input_shape: tuple[int, ...], head: str,
                 pwe: int, twt: float, epochs: int, finetune_epochs: int = 0,
                 target_parameters_pct: Optional[float] = None, target_neurons_pct: Optional[float] = None,
                 val_loss: Optional[Callable[[], float]] = None, log: Optional[logging.Logger] = None,
                 anneal_finetune_lr: bool = True, neuron_weights: Optional[dict[str, nn.Parameter]] = None,
                 neuron_share: float = 0.5):
        self.model = model
        self.regularizer = regularizer
        self.threshold_params = threshold_params
        self.stat_weights = stat_weights
        # threshold "neurons+parameters": each round first zeroes whole neurons of these weights (the
        # prunable layers) within neuron_share of the tolerated loss rise, then thresholds parameters.
        self.neuron_weights = neuron_weights
        self.neuron_share = neuron_share
        self.input_shape = tuple(input_shape)
        self.head = head
        self.twt = twt
        self.epochs = epochs
        self.finetune_epochs = finetune_epochs
        self.target_parameters_pct = target_parameters_pct
        self.target_neurons_pct = target_neurons_pct
        self.val_loss = val_loss
        self.log = log or logging.getLogger("potatura.train")
        self.detector = PlateauDetector(pwe) if pwe > 0 else None
        self.mask = ZeroMask(threshold_params)
        self.phase = "prune"  # prune -> finetune -> done
        self.finetune_start: Optional[int] = None
        self.anneal_finetune_lr = anneal_finetune_lr
        self.finetune_base_lrs: Optional[list[float]] = None
        self.stop_reason: Optional[str] = None
        self.rounds: list[dict] = []
        self._positions = output_positions(model, self.input_shape)

    # -- delegation ----------------------------------------------------------------------------
    def _regularizing(self) -> bool:
        return self.regularizer is not None and self.phase == "prune"

    def on_run_start(self, loop) -> None:
        if self.regularizer is not None:
            self.regularizer.enabled = self.phase == "prune"
            self.regularizer.on_run_start(loop)

    def on_run_end(self, loop) -> None:
        if self.regularizer is not None:
            self.regularizer.on_run_end(loop)

    def on_train_start(self, loop) -> None:
        if self.regularizer is not None:
            self.regularizer.on_train_start(loop)

    def before_backward(self, loop, x, y, logits, loss) -> None:
        if self._regularizing():
            self.regularizer.before_backward(loop, x, y, logits, loss)

    def after_backward(self, loop, x, y, logits, loss) -> None:
        if self._regularizing():
            self.regularizer.after_backward(loop, x, y, logits, loss)

    def after_step(self, loop) -> None:
        if self.regularizer is not None:
            self.regularizer.after_step(loop)  # a disabled regularizer only clears what it recorded
        self.mask.apply(loop.optimizer)

    # -- epoch end -----------------------------------------------------------------------------
    def _validation_loss(self, loop) -> float:
        if self.val_loss is not None:
            return self.val_loss()
        return evaluate(self.model, loop.data.x_val, loop.data.y_val)["loss"]

    def threshold_round(self, loop, epoch: int) -> dict:
        """One bisection round on the current model; applies the threshold found for good.

        With neuron weights (threshold "neurons+parameters"), a neuron bisection with the bound
        loss * (1 + neuron_share * twt) comes first, then the parameter bisection with the round's
        bound loss * (1 + twt) on what is left: the round as a whole meets the paper's bound.
        """
        before = self._validation_loss(loop)
        bound = _finite_or_inf(before) * (1.0 + self.twt)
        record = {"epoch": epoch, "val_loss_before": before, "bound": bound}
        if self.neuron_weights:
            neuron_bound = _finite_or_inf(before) * (1.0 + self.neuron_share * self.twt)
            found = bisect_neuron_threshold(list(self.neuron_weights.values()), lambda: self._validation_loss(loop),
                                            neuron_bound)
            if found is not None:
                record.update({"neuron_threshold": found.threshold, "neuron_bound": neuron_bound,
                               "neurons_zeroed": zero_neurons_below_(list(self.neuron_weights.values()),
                                                                     found.threshold),
                               "val_loss_after_neurons": found.val_loss, "neuron_evaluations": found.evaluations})
            else:
                record.update({"neuron_threshold": 0.0, "neurons_zeroed": 0})
        params = list(self.threshold_params.values())
        search = bisect_threshold(params, list(self.stat_weights.values()), lambda: self._validation_loss(loop), bound)
        if search is None:
            record.update({"threshold": 0.0, "zeroed": 0, "evaluations": 0,
                           "val_loss_after": record.get("val_loss_after_neurons", before)})
            return record
        zeroed = zero_below_(params, search.threshold)
        record.update({"threshold": search.threshold, "zeroed": zeroed, "val_loss_after": search.val_loss,
                       "evaluations": search.evaluations, "t_min": search.t_min, "t_mean": search.t_mean,
                       "t_max": search.t_max})
        return record

    def report(self) -> dict:
        return sparsity_report(self.model, self.input_shape, head=self.head, positions=self._positions)

    def on_epoch_end(self, loop, metrics: dict) -> None:
        epoch = int(metrics["epoch"])
        if self.phase == "prune":
            if self.detector is not None:
                status = self.detector.step(metrics["val_loss"], self.model)
                if status != "ok":
                    metrics["rolled_back"] = status
                    if status == "nan":
                        loop.optimizer.state.clear()  # NaN momentum would poison the restored weights
                    self.mask.apply(loop.optimizer)  # the best weights predate later thresholds
                if status == "plateau":
                    record = self.threshold_round(loop, epoch)
                    self.rounds.append(record)
                    metrics["threshold"] = record["threshold"]
                    metrics["val_loss_after_threshold"] = record["val_loss_after"]
                    self.detector.reset(record["val_loss_after"], self.model)
                    if "neurons_zeroed" in record:
                        metrics["neurons_zeroed"] = record["neurons_zeroed"]
                    self.log.info("epoch %d: plateau, %sthreshold %.3g zeroed %d values, val loss %.4f -> %.4f "
                                  "(bound %.4f, %d evaluations)", epoch,
                                  f"neuron threshold {record['neuron_threshold']:.3g} zeroed "
                                  f"{record['neurons_zeroed']} neurons, " if "neurons_zeroed" in record else "",
                                  record["threshold"], record["zeroed"],
                                  record["val_loss_before"], record["val_loss_after"], record["bound"],
                                  record["evaluations"])
            self.mask.refresh()
            self.mask.apply(loop.optimizer)
        net = self.report()["network"]
        metrics["remaining_parameters_pct"] = net["parameters_remaining_pct"]
        metrics["remaining_neurons_pct"] = net["neurons_remaining_pct"]
        metrics["remaining_macs_pct"] = net["macs_remaining_pct"]
        metrics["phase"] = self.phase
        if self.phase == "prune":
            reached = self._target_reached(net)
            if reached or epoch >= self.epochs - self.finetune_epochs:
                self.stop_reason = reached or "epoch budget"
                self.phase = "finetune"
                self.finetune_start = epoch
                if self.regularizer is not None:
                    self.regularizer.enabled = False
                self.log.info("epoch %d: pruning ends (%s): %.2f%% parameters, %.2f%% neurons remain; "
                              "%d fine-tuning epochs", epoch, self.stop_reason, net["parameters_remaining_pct"],
                              net["neurons_remaining_pct"], self.finetune_epochs)
        if self.phase == "finetune" and epoch - self.finetune_start >= self.finetune_epochs:
            self.phase = "done"
            loop.stop = True
        elif self.phase == "finetune" and self.anneal_finetune_lr:
            self._anneal_lr(loop, epoch - self.finetune_start)

    def _anneal_lr(self, loop, done: int) -> None:
        """LR of fine-tuning epoch done+1 (of finetune_epochs): base * (1 + cos(pi * done / F)) / 2."""
        groups = loop.optimizer.param_groups
        if self.finetune_base_lrs is None:
            self.finetune_base_lrs = [g["lr"] for g in groups]
        factor = 0.5 * (1.0 + math.cos(math.pi * done / max(1, self.finetune_epochs)))
        for g, base in zip(groups, self.finetune_base_lrs):
            g["lr"] = base * factor

    def _target_reached(self, net: dict) -> Optional[str]:
        if self.target_parameters_pct is not None and net["parameters_remaining_pct"] <= self.target_parameters_pct:
            return f"target {self.target_parameters_pct:g}% parameters reached"
        if self.target_neurons_pct is not None and net["neurons_remaining_pct"] <= self.target_neurons_pct:
            return f"target {self.target_neurons_pct:g}% neurons reached"
        return None

    def on_shrink(self, loop, removal: dict) -> None:
        """Shrinking during training removed neurons: the best weights follow, the mask is rebuilt."""
        from potatura.train.shrink import shrink_state

        if self.detector is not None and self.detector.best_state is not None:
            best = self.detector.best_state
            for link, keep, consumer, shape in removal.values():
                best = shrink_state(best, link, keep, consumer, shape)
            self.detector.best_state = best
        if self.mask.pruned:
            self.mask.refresh()
        if self.regularizer is not None and hasattr(self.regularizer, "on_shrink"):
            self.regularizer.on_shrink(loop, removal)

    # -- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "phase": self.phase,
            "finetune_start": self.finetune_start,
            "finetune_base_lrs": self.finetune_base_lrs,
            "stop_reason": self.stop_reason,
            "rounds": copy.deepcopy(self.rounds),
            "mask": self.mask.state_dict(),
            "detector": self.detector.state_dict() if self.detector is not None else None,
            "regularizer": self.regularizer.state_dict() if self.regularizer is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.phase = state["phase"]
        self.finetune_start = state["finetune_start"]
        self.finetune_base_lrs = state.get("finetune_base_lrs")
        self.stop_reason = state["stop_reason"]
        self.rounds = copy.deepcopy(state["rounds"])
        self.mask.load_state_dict(state["mask"])
        if self.detector is not None and state.get("detector") is not None:
            self.detector.load_state_dict(state["detector"])
        if self.regularizer is not None and state.get("regularizer") is not None:
            self.regularizer.load_state_dict(state["regularizer"])

"""The `train` section of the flow file.

Every field has a default tuned for the embedded demo (LeNet-5 on scikit-learn's digits, SeReNe
with bounded sensitivity). With `preset: auto` the fields a flow file does not set are taken
from the built-in preset for its (model, dataset) pair (potatura/train/presets.py); fields the
flow file sets always win.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from potatura._schema import StrictModel

METHODS = ("none", "serene", "lobster", "magnitude-oneshot")
SENSITIVITIES = ("bounded", "full", "local", "neuron-lobster")


class NEqConfig(StrictModel):
    """NEq (neurons at equilibrium, Bragagnolo et al. NeurIPS 2022): freeze the updates of neurons whose
    output on a small probe split of the training set has stopped changing (docs/algorithms.md section 4)."""

    eps: float = Field(1e-3, ge=0, description="a neuron is frozen for the next epoch when |velocity| <= eps")
    mu: float = Field(0.5, ge=0, lt=1, description="velocity momentum")
    velocity: Literal["paper", "code"] = Field(
        "paper", description="paper: v_t = dphi_t - mu v_{t-1}; code (the reference implementation): "
        "r_t = dphi_t - (1 - mu) sum_{k>=1} mu^(k-1) dphi_{t-k}, from the third phi on")
    val_fraction: float = Field(0.01, gt=0, le=1, description="fraction of the training set used as the probe split "
                                "(seeded, at least min_val_samples samples; they stay in training)")
    min_val_samples: int = Field(64, ge=1, description="smallest probe split")
    layers: Literal["all", "conv"] = Field(
        "all", description="which neurons may freeze: all (Conv2d, Linear and BatchNorm channels) or conv "
        "(Conv2d and BatchNorm2d channels, the paper's choice); never the classifier head")
    baseline: Literal["neq", "random"] = Field(
        "neq", description="random: the paper's baseline, freezing random neurons of each layer at the fraction "
        "NEq would freeze")
    frozen_momentum: Literal["keep", "decay"] = Field(
        "keep", description="a frozen neuron's momentum buffer: keep (unchanged while frozen, so the neuron resumes "
        "where it stopped) or decay (multiplied by the momentum each step, as for a zero gradient: the wording of "
        "docs/algorithms.md section 4)")
    skip_min_frozen: float = Field(0.5, ge=0, le=1, description="a layer computes weight gradients of its "
                                   "active rows only when at least this fraction of its neurons is frozen (below it "
                                   "the extra indexing costs more than it saves; frozen rows are kept either way)")
    timing_batches: int = Field(3, ge=0, description="training batches timed each epoch with and without the "
                                "gradient skipping, to measure the seconds saved (0: do not measure)")


class TrainConfig(StrictModel):
    method: Literal["none", "serene", "lobster", "magnitude-oneshot"] = Field(
        "serene", description="pruning while training: none (plain SGD), serene (structured, neurons), "
        "lobster (unstructured, parameters), magnitude-oneshot (remove the lowest-L1 neurons once, fine-tune)")
    preset: Literal["auto", "off"] = Field(
        "auto", description="auto: fields this file does not set come from the preset for (model, dataset)")
    sensitivity: Literal["bounded", "full", "local", "neuron-lobster"] = Field(
        "bounded", description="SeReNe neuron sensitivity: bounded (one extra backward), full (one backward "
        "per class), local (sign of the mean post-synaptic potential), neuron-lobster (EMA of dL/dz)")
    lmbda: float = Field(1e-2, description="regularization strength lambda: each step shrinks a weight by "
                         "lambda * insensitivity * weight (not scaled by the learning rate)")
    twt: float = Field(0.3, description="threshold worsening tolerance: a pruning threshold may raise the "
                       "validation loss to at most loss * (1 + twt)")
    pwe: int = Field(2, description="plateau waiting epochs: epochs without a 1% validation-loss "
                     "improvement before a pruning threshold round (0: regularize only, never threshold)")
    target_parameters_pct: Optional[float] = Field(
        None, gt=0, le=100, description="stop pruning once at most this % of the parameters is non-zero")
    target_neurons_pct: Optional[float] = Field(
        None, gt=0, le=100, description="stop pruning once at most this % of the prunable neurons remain; "
        "for magnitude-oneshot: the % of neurons each layer keeps")
    keep_neurons: Optional[dict[str, int]] = Field(
        None, description="magnitude-oneshot: neurons to keep per layer name (e.g. {conv1: 8, fc1: 40})")
    oneshot_epoch: int = Field(0, ge=0, description="magnitude-oneshot: prune after this many epochs "
                               "(0: before training, e.g. from `checkpoint`)")
    finetune_epochs: int = Field(10, ge=0, description="epochs of plain training (masks kept, no regularizer, "
                                 "no thresholds; with a constant or plateau LR schedule the LR anneals to 0 along a half "
                                 "cosine) after pruning ends: at a target or at epochs - finetune_epochs; "
                                 "when not set in the flow file, at most a quarter of the epochs")
    epochs: int = Field(120, ge=0, description="training epochs (the whole budget, fine-tuning included)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0, description="initial learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    nesterov: bool = False
    lr_schedule: Literal["constant", "cosine", "step", "plateau"] = Field(
        "constant", description="plateau: ReduceLROnPlateau on the validation loss (the reference's choice)")
    lr_step_epochs: list[int] = Field(default_factory=list, description="epochs where step decays")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="LR factor of step and plateau schedules")
    lr_patience: int = Field(10, ge=0, description="plateau schedule: epochs without improvement before a cut")
    lr_cooldown: int = Field(50, ge=0, description="plateau schedule: epochs to wait after a cut")
    checkpoint: Optional[str] = Field(None, description="start from this model checkpoint file")
    neq: Optional[NEqConfig] = Field(None, description="NEq: freeze the updates of neurons at equilibrium "
                                     "(combines with every method; absent: off)")
    shrink_every: int = Field(0, ge=0, description="every N epochs physically remove dead neurons from the model "
                              "being trained (optimizer state carried over), so later epochs run on a smaller "
                              "network; 0: off (pruned neurons are only masked)")
    threshold: Literal["parameters", "neurons+parameters"] = Field(
        "parameters", description="what a plateau's threshold round zeroes: parameters (the papers: one global "
        "magnitude threshold on every weight) or neurons+parameters (potatura's variant: first every neuron whose "
        "incoming weights have an L2 norm below a bisected threshold, within neuron_share of the tolerated loss "
        "rise, then the parameter threshold; the round still meets the loss bound)")
    neuron_share: float = Field(0.5, gt=0, le=1, description="threshold neurons+parameters: the fraction of twt the "
                                "neuron bisection may use")
    sensitivity_norm: Literal["none", "layer-max"] = Field(
        "none", description="SeReNe bounded/full: none (the paper: insensitivity relu(1 - S)) or layer-max "
        "(potatura's variant: relu(1 - S / max S of the layer), so that the most sensitive neuron of each layer "
        "is not shrunk and the others in proportion)")
    sensitivity_every: int = Field(1, ge=1, description="SeReNe: compute the sensitivity every N steps and shrink "
                                   "with the latest one in between (1: every step, the paper)")
    bn_sensitivity: Literal["per-sample", "batch"] = Field(
        "per-sample", description="SeReNe bounded/full on models with BatchNorm: per-sample (the paper: "
        "dy_b/dz_b with the batch statistics held fixed, one extra forward per step) or batch (the derivative "
        "through the batch statistics, cross-sample terms included; potatura <= 0.1)")

    @field_validator("lmbda")
    @classmethod
    def _lmbda(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"lambda must be a finite number >= 0 (the per-step shrink strength), got {v}")
        if v >= 1:
            raise ValueError(f"lambda must be < 1: each step multiplies a weight by (1 - lambda * insensitivity), "
                             f"which would flip its sign; got {v} (the papers use 1e-6 .. 1e-2)")
        return v

    @field_validator("twt")
    @classmethod
    def _twt(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"twt must be >= 0 (the tolerated relative rise of the validation loss), got {v}")
        return v

    @field_validator("pwe")
    @classmethod
    def _pwe(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"pwe must be >= 0 (epochs to wait for a plateau; 0 disables thresholds), got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if self.method in ("serene", "lobster"):
            if self.pwe == 0 and self.twt > 0:
                raise ValueError(f"pwe 0 never detects a plateau, so no threshold is ever applied and twt {self.twt} "
                                 f"has no effect: set pwe >= 1 to prune, or twt 0 to only regularize")
            if self.finetune_epochs > self.epochs and "finetune_epochs" in self.model_fields_set:
                raise ValueError(f"finetune_epochs ({self.finetune_epochs}) exceeds epochs ({self.epochs})")
        if self.method == "magnitude-oneshot":
            if self.target_neurons_pct is None and not self.keep_neurons:
                raise ValueError("method magnitude-oneshot needs target_neurons_pct (% of neurons each layer keeps) "
                                 "or keep_neurons (neurons per layer name)")
            if self.oneshot_epoch > self.epochs:
                raise ValueError(f"oneshot_epoch ({self.oneshot_epoch}) is after the last epoch ({self.epochs})")
        if self.keep_neurons:
            bad = {k: v for k, v in self.keep_neurons.items() if v < 1}
            if bad:
                raise ValueError(f"keep_neurons must keep at least 1 neuron per layer, got {bad}")
        for name in ("sensitivity_norm", "sensitivity_every"):
            if name in self.model_fields_set and self.method != "serene" and getattr(self, name) != \
                    type(self).model_fields[name].default:
                raise ValueError(f"{name} applies to method serene only (method is {self.method!r})")
        if self.threshold != "parameters" and self.method not in ("serene", "lobster"):
            raise ValueError(f"threshold {self.threshold!r} applies to methods serene and lobster "
                             f"(method is {self.method!r})")
        if self.sensitivity != "bounded" and self.method not in ("serene",) and "sensitivity" in self.model_fields_set:
            raise ValueError(f"sensitivity {self.sensitivity!r} applies to method serene only (method is {self.method!r})")
        return self

    def effective_finetune_epochs(self) -> int:
        """finetune_epochs, capped at a quarter of the budget unless the flow file set it."""
        if "finetune_epochs" in self.model_fields_set:
            return self.finetune_epochs
        return min(self.finetune_epochs, self.epochs // 4)

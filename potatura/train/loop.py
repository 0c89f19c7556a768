"""The base training loop the pruning regularizers plug into.

SGD (momentum, weight decay, Nesterov), an LR schedule, evaluation on validation and test each
epoch, a checkpoint each epoch, and resume: a run stopped after any epoch and resumed gives the
same weights, bit for bit, as an uninterrupted run with the same seed. Batches are drawn from a
generator seeded by (seed, epoch), so resuming needs no data-loader state.

Regularizers are TrainHook objects: they see each step and each epoch end and carry their own
state into the checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from potatura.artifacts import read_torch, save_torch

CHECKPOINT = "last.pt"


class TrainHook:
    """Extension point of the loop. Every method is optional; state is saved in checkpoints.

    Order of calls: on_run_start (every run() call, after a resume restored the state),
    on_train_start (fresh runs only), then per batch before_backward, after_backward,
    after_step, per epoch on_epoch_end, and on_run_end when run() returns or fails.
    """

    def on_run_start(self, loop: "TrainLoop") -> None:
        """Install module hooks here: a resumed run never calls on_train_start."""

    def on_train_start(self, loop: "TrainLoop") -> None: ...

    def before_backward(self, loop: "TrainLoop", x: torch.Tensor, y: torch.Tensor,
                        logits: torch.Tensor, loss: torch.Tensor) -> None:
        """The forward graph is alive: extra torch.autograd.grad calls (retain_graph=True) go here."""

    def after_backward(self, loop: "TrainLoop", x: torch.Tensor, y: torch.Tensor,
                       logits: torch.Tensor, loss: torch.Tensor) -> None:
        """Gradients are populated; the optimizer has not stepped yet."""

    def after_step(self, loop: "TrainLoop") -> None:
        """The optimizer has stepped (shrink weights, re-apply masks here)."""

    def on_epoch_end(self, loop: "TrainLoop", metrics: dict) -> None:
        """`metrics` of this epoch may be extended in place; set loop.stop = True to end training."""

    def on_run_end(self, loop: "TrainLoop") -> None:
        """Remove what on_run_start installed."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    epochs_run: int
    resumed_from: int = 0
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> dict:
    """Mean cross-entropy loss and top-1 accuracy (fraction) of `model` on (x, y)."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size])
        total_loss += nn.functional.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    n = max(1, len(y))
    return {"loss": total_loss / n, "accuracy": correct / n}


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> Any:
    if cfg.lr_schedule == "plateau":
        # As in the LOBSTER/SeReNe reference: stepped on the validation loss, no improvement margin,
        # a long cooldown so that the loss jump after each pruning round does not cut the LR again.
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_gamma, patience=getattr(cfg, "lr_patience", 10),
            threshold=0.0, cooldown=getattr(cfg, "lr_cooldown", 50))
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_step_epochs), gamma=cfg.lr_gamma)
    return None


class TrainLoop:
    """One training run. `checkpoint_dir` enables per-epoch checkpoints and resume."""

    def __init__(self, model: nn.Module, data, cfg, seed: int = 0, checkpoint_dir: Optional[Path] = None,
                 hooks: Sequence[TrainHook] = (), log: Optional[logging.Logger] = None,
                 on_epoch: Optional[Callable[[dict], None]] = None, on_batch: Optional[Callable[[int, int], None]] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = "auto",
                 evaluate_test: bool = True):
        self.model = model
        self.data = data
        self.cfg = cfg
        self.seed = seed
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.hooks = list(hooks)
        self.log = log or logging.getLogger("potatura.train")
        self.on_epoch = on_epoch
        self.on_batch = on_batch
        self.optimizer = optimizer or make_optimizer(model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg) if scheduler == "auto" else scheduler
        self.evaluate_test = evaluate_test  # False: no per-epoch test pass (benchmarks test once at the end)
        self.history: list[dict] = []
        self.epoch = 0  # epochs completed
        self.stop = False

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "history": self.history,
            "hooks": [h.state_dict() for h in self.hooks],
            "stop": self.stop,
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate()},
        }

    def load_state_dict(self, state: dict) -> None:
        for hook, hs in zip(self.hooks, state.get("hooks", [])):
            if hasattr(hook, "before_load"):  # e.g. shrinking during training: resize the model first
                hook.before_load(self, hs)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        for hook, hs in zip(self.hooks, state.get("hooks", [])):
            hook.load_state_dict(hs)
        self.epoch = int(state["epoch"])
        self.stop = bool(state.get("stop", False))
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(_numpy_rng_from(state["rng"]["numpy"]))
        random.setstate(state["rng"]["python"])

    def _checkpoint_path(self) -> Optional[Path]:
        return self.checkpoint_dir / CHECKPOINT if self.checkpoint_dir else None

    def try_resume(self) -> int:
        path = self._checkpoint_path()
        if path is not None and path.is_file():
            # numpy_arrays: checkpoints of older versions hold numpy's RNG state as an array.
            self.load_state_dict(read_torch(path, "training checkpoint", numpy_arrays=True))
            self.log.info("resumed training from %s after epoch %d", path, self.epoch)
            return self.epoch
        return 0

    # -- training ------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.data.y_train), generator=gen)
        bs = self.cfg.batch_size
        return [perm[i:i + bs] for i in range(0, len(perm), bs)]

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        x_all, y_all = self.data.x_train, self.data.y_train
        total, correct, count = 0.0, 0, 0
        batches = self._batches(epoch)
        for b, idx in enumerate(batches):
            x, y = x_all[idx], y_all[idx]
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.model(x)
            loss = nn.functional.cross_entropy(logits, y)
            for h in self.hooks:
                h.before_backward(self, x, y, logits, loss)
            loss.backward()
            for h in self.hooks:
                h.after_backward(self, x, y, logits, loss)
            self.optimizer.step()
            for h in self.hooks:
                h.after_step(self)
            total += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
            if self.on_batch:
                self.on_batch(b + 1, len(batches))
        return {"train_loss": total / max(1, count), "train_accuracy": correct / max(1, count)}

    def run(self, epochs: Optional[int] = None, stop_after: Optional[int] = None) -> TrainResult:
        """Train until `epochs` (default cfg.epochs) are complete. `stop_after` ends the call after
        that many epochs of this call, as a killed run would (used to test resume)."""
        epochs = self.cfg.epochs if epochs is None else epochs
        resumed = self.try_resume()
        for h in self.hooks:
            h.on_run_start(self)
        try:
            if resumed == 0:
                for h in self.hooks:
                    h.on_train_start(self)
            self._run_epochs(epochs, stop_after)
        finally:
            for h in self.hooks:
                h.on_run_end(self)
        return TrainResult(self.model, self.history, self.epoch, resumed, stopped_early=self.stop)

    def _run_epochs(self, epochs: int, stop_after: Optional[int]) -> None:
        done_here = 0
        while self.epoch < epochs and not self.stop:
            if stop_after is not None and done_here >= stop_after:
                break
            t0 = time.perf_counter()
            metrics = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            metrics.update(self.train_epoch(self.epoch))
            metrics["train_seconds"] = time.perf_counter() - t0
            val = evaluate(self.model, self.data.x_val, self.data.y_val)
            metrics.update({"val_loss": val["loss"], "val_accuracy": val["accuracy"]})
            if self.evaluate_test:
                test = evaluate(self.model, self.data.x_test, self.data.y_test)
                metrics.update({"test_loss": test["loss"], "test_accuracy": test["accuracy"]})
            if self.scheduler is not None:
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(val["loss"])
                else:
                    self.scheduler.step()
            for h in self.hooks:
                h.on_epoch_end(self, metrics)
            if not math.isfinite(metrics["train_loss"]):
                self.log.warning("epoch %d: training loss is %s", metrics["epoch"], metrics["train_loss"])
            metrics["epoch_seconds"] = time.perf_counter() - t0
            self.history.append(metrics)
            self.epoch += 1
            done_here += 1
            path = self._checkpoint_path()
            if path is not None:
                save_torch(path, self.state_dict())
            self.log.info(
                "epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | test acc %s | %.1f s",
                metrics["epoch"], metrics["train_loss"], metrics["train_accuracy"], metrics["val_loss"],
                metrics["val_accuracy"], f"{metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics else "-",
                metrics["epoch_seconds"],
            )
            if self.on_epoch:
                self.on_epoch(metrics)


def _numpy_rng_state() -> list:
    """numpy's global RNG state as plain data and a tensor (a checkpoint holds no numpy objects)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _numpy_rng_from(state) -> tuple:
    name, keys, pos, has_gauss, cached = state
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    return (name, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached))


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    return int(sum((p != 0).sum().item() if nonzero else p.numel() for p in model.parameters()))

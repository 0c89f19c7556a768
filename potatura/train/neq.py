"""NEq: neurons at equilibrium (Bragagnolo, Tartaglione, Grangetto, NeurIPS 2022; arXiv 2207.09455).

After each epoch the model runs (eval mode) on a small probe split of the training set. For every
neuron i (an output channel of a Conv2d, Linear or BatchNorm layer; never the classifier head):

    phi_i^t   = mean over probe samples x of cos(y_i^t(x), y_i^{t-1}(x))
                (y_i = the neuron's output map flattened; cos = 1 when both are ~0, 0 when one is)
    dphi_i^t  = phi_i^t - phi_i^{t-1}                      (phi^0 = 1)
    paper:  v_i^t = dphi_i^t - mu * v_i^{t-1}               (v^0 = 0)
    code:   r_i^t = dphi_i^t - (1 - mu) * sum_{k>=1} mu^(k-1) dphi_i^{t-k}, defined from t >= 3

Neuron i is frozen for the next epoch when |v_i^t| <= eps; the set is rebuilt every epoch, so a
neuron can thaw. A frozen neuron's parameters (its weight row/filter, bias, BatchNorm gamma/beta)
are left exactly as they were by every optimizer step, and so are their momentum buffers
(frozen_momentum "keep"; "decay" multiplies them by the momentum each step instead, as a zero
gradient would).

Savings are real, not only counted: each Conv2d/Linear with at least `skip_min_frozen` of its
outputs frozen runs through a custom autograd function whose backward computes the weight and
bias gradients of the active output channels only (the input gradient still needs every
channel); below that fraction the indexing costs more than it saves and the plain backward runs. Per epoch the
hook reports the frozen fraction per layer, the backprop FLOPs skipped (counted: the weight-
gradient FLOPs of the frozen rows of the layers that took the skipping path, 2 * MACs per sample
each; the paper counts 2x forward FLOPs per frozen neuron, input gradients included, which a
frozen neuron still needs to pass back) and the seconds saved (measured:
`timing_batches` training batches timed forward+backward with and without the skipping, the
difference scaled to the epoch's batch count).

`baseline: random` is the paper's control: each layer freezes as many random neurons as NEq would.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from potatura.train.loop import TrainHook
from potatura.train.masks import head_name

NORM_FLOOR = 1e-12  # an output map whose L2 norm is below this counts as ~0 for the cosine


# -- velocity ------------------------------------------------------------------------------------
class Velocity:
    """The NEq velocity of a vector of phi values, fed one epoch at a time.

    form "paper": v_t = dphi_t - mu v_{t-1}; form "code": r_t = dphi_t - (1 - mu) S_{t-1}, with
    S_t = dphi_t + mu S_{t-1} (so S_{t-1} = sum_{k>=1} mu^(k-1) dphi_{t-k}), defined from the third phi.
    """

    def __init__(self, mu: float, form: str = "paper"):
        if form not in ("paper", "code"):
            raise ValueError(f"unknown NEq velocity form {form!r} (paper | code)")
        self.mu = float(mu)
        self.form = form
        self.phi: Optional[torch.Tensor] = None
        self.value: Optional[torch.Tensor] = None   # v_t (paper) or r_t (code); None while undefined
        self.trace: Optional[torch.Tensor] = None   # S_t (code)
        self.steps = 0

    def update(self, phi: torch.Tensor) -> Optional[torch.Tensor]:
        """Feed phi^t; returns the velocity at t (None while the form does not define it yet)."""
        previous = torch.ones_like(phi) if self.phi is None else self.phi
        delta = phi - previous
        self.steps += 1
        if self.form == "paper":
            self.value = delta if self.value is None else delta - self.mu * self.value
        else:
            self.value = delta - (1 - self.mu) * self.trace if self.steps >= 3 else None
            self.trace = delta if self.trace is None else delta + self.mu * self.trace
        self.phi = phi.clone()
        return self.value

    def state_dict(self) -> dict:
        return {"phi": self.phi, "value": self.value, "trace": self.trace, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.phi, self.value, self.trace = state["phi"], state["value"], state["trace"]
        self.steps = int(state["steps"])


def neuron_similarity(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """phi: [N, C, ...] outputs of two epochs -> [C] mean over samples of the per-sample cosine.

    The cosine of sample n and channel c compares the flattened maps y[n, c]; it is 1 when both
    maps are ~0 (norm < NORM_FLOOR) and 0 when only one is.
    """
    a = current.reshape(current.shape[0], current.shape[1], -1).double()
    b = previous.reshape(previous.shape[0], previous.shape[1], -1).double()
    na, nb = a.norm(dim=2), b.norm(dim=2)
    za, zb = na < NORM_FLOOR, nb < NORM_FLOOR
    cos = (a * b).sum(2) / (na * nb).clamp_min(NORM_FLOOR * NORM_FLOOR)
    cos = torch.where(za & zb, torch.ones_like(cos), torch.where(za | zb, torch.zeros_like(cos), cos))
    return cos.mean(0).float()


# -- gradient skipping ---------------------------------------------------------------------------
def _scatter_rows(rows: torch.Tensor, active: torch.Tensor, total: int) -> torch.Tensor:
    """A [total, ...] tensor with `rows` at the indices `active` and zeros elsewhere (out of place,
    so it also works under the vmap of batched gradients)."""
    return rows.new_zeros((total, *rows.shape[1:])).index_copy(0, active, rows)


class _ActiveRowsLinear(torch.autograd.Function):
    """y = x W^T + b; backward: dx with every row of W, dW and db for the `active` rows only."""

    @staticmethod
    def forward(ctx, x, weight, bias, active):
        ctx.save_for_backward(x, weight, active)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, active = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out.matmul(weight)
        if active.numel() == 0:  # every row frozen: no weight gradient at all (the optimizer skips them)
            return grad_x, None, None, None
        g = grad_out.index_select(-1, active).reshape(-1, active.numel())
        if ctx.needs_input_grad[1]:
            grad_w = _scatter_rows(g.t().matmul(x.reshape(-1, x.shape[-1])), active, weight.shape[0])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = _scatter_rows(g.sum(0), active, weight.shape[0])
        return grad_x, grad_w, grad_b, None


class _ActiveRowsConv2d(torch.autograd.Function):
    """conv2d (groups 1, zero padding); backward: dx with every filter, dW and db for `active` filters only."""

    @staticmethod
    def forward(ctx, x, weight, bias, active, stride, padding, dilation):
        ctx.save_for_backward(x, weight, active)
        ctx.conf = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, active = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        grad_x = grad_w = grad_b = None
        backward = torch.ops.aten.convolution_backward
        conf = (list(stride), list(padding), list(dilation), False, [0, 0], 1)
        if ctx.needs_input_grad[0]:
            grad_x = backward(grad_out, x, weight, None, *conf, [True, False, False])[0]
        if active.numel() == 0:
            return grad_x, None, None, None, None, None, None
        want_w, want_b = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        if want_w or want_b:
            # One call for the active filters' weight and bias gradients (the bias sum is fused in).
            _, w_active, b_active = backward(grad_out.index_select(1, active), x, weight.index_select(0, active),
                                             [active.numel()] if want_b else None, *conf, [False, want_w, want_b])
            grad_w = _scatter_rows(w_active, active, weight.shape[0]) if want_w else None
            grad_b = _scatter_rows(b_active, active, weight.shape[0]) if want_b else None
        return grad_x, grad_w, grad_b, None, None, None, None


def supports_skipping(module: nn.Module) -> bool:
    """Linear, and Conv2d with groups 1 and zero padding, have the gradient-skipping path."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" \
        and not isinstance(module.padding, str)


def active_rows_forward(module: nn.Module, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The module's output; its backward computes weight/bias gradients of the `active` output rows only."""
    if isinstance(module, nn.Linear):
        return _ActiveRowsLinear.apply(x, module.weight, module.bias, active)
    return _ActiveRowsConv2d.apply(x, module.weight, module.bias, active, module.stride, module.padding,
                                   module.dilation)


# -- the hook ------------------------------------------------------------------------------------
NEQ_LAYERS = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
CONV_LAYERS = (nn.Conv2d, nn.BatchNorm2d)


def neq_layers(model: nn.Module, head: str, which: str = "all") -> list[tuple[str, nn.Module]]:
    """The layers whose output channels NEq may freeze: (name, module), never the head."""
    kinds = NEQ_LAYERS if which == "all" else CONV_LAYERS
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and n != head]


def _channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    return module.num_features


def probe_indices(n_train: int, fraction: float, min_samples: int, seed: int) -> torch.Tensor:
    """Sorted indices of the probe split: round(fraction * n_train) samples, at least min_samples."""
    count = min(n_train, max(min_samples, int(round(fraction * n_train))))
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    return torch.randperm(n_train, generator=gen)[:count].sort().values


class NEqFreezing(TrainHook):
    """NEq as a TrainHook: measure phi each epoch, freeze neurons at equilibrium, skip their gradients.

    Put it first in the hook list: its after_step restores the frozen parameters right after the
    optimizer step, before pruning regularizers (which act on every neuron) run theirs.
    """

    def __init__(self, model: nn.Module, cfg, input_shape: tuple[int, ...], head: Optional[str] = None,
                 seed: int = 0, log=None):
        from potatura.train.stats import output_positions

        self.model = model
        self.cfg = cfg
        self.seed = seed
        self.log = log
        self.head = head or head_name(model)
        self.layers = neq_layers(model, self.head, cfg.layers)
        self.velocity = {n: Velocity(cfg.mu, cfg.velocity) for n, _ in self.layers}
        self.previous: dict[str, torch.Tensor] = {}
        self.frozen: dict[str, torch.Tensor] = {}  # name -> bool [channels], True = frozen this epoch
        positions = output_positions(model, tuple(input_shape))
        # MACs per sample of each Conv2d/Linear: a weight gradient costs as many (2 FLOPs each).
        self.macs = {n: m.weight.numel() * positions.get(n, 1) for n, m in self.layers
                     if isinstance(m, (nn.Linear, nn.Conv2d))}
        self._weight_numel = {n: m.weight.numel() for n, m in self.layers if n in self.macs}
        self._gen = torch.Generator().manual_seed(seed * 104_729 + 3)
        self._saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = []
        self._active: dict[str, torch.Tensor] = {}
        self._frozen_rows: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._patched: list[nn.Module] = []
        self.skipping = True

    # -- freezing state ------------------------------------------------------------------------
    def frozen_fraction(self) -> dict[str, float]:
        return {n: float(self.frozen[n].float().mean()) if n in self.frozen else 0.0 for n, _ in self.layers}

    def _refresh_active(self) -> None:
        self._active = {}
        # The frozen rows as index tensors, built once per epoch (not per step).
        self._frozen_rows = []
        for name, module in self.layers:
            frozen = self.frozen.get(name)
            if frozen is not None and frozen.any():
                rows = torch.nonzero(frozen).flatten().to(module.weight.device)
                self._frozen_rows += [(p, rows) for p in (module.weight, module.bias) if p is not None]
        for name, module in self.layers:
            frozen = self.frozen.get(name)
            if frozen is not None and frozen.any() and float(frozen.float().mean()) >= self.cfg.skip_min_frozen:
                self._active[name] = torch.nonzero(~frozen).flatten().to(module.weight.device)

    def _install(self) -> None:
        for name, module in self.layers:
            if supports_skipping(module) and module not in self._patched:
                module.forward = self._forward_for(name, module)
                self._patched.append(module)

    def _uninstall(self) -> None:
        for module in self._patched:
            del module.forward  # back to the class's forward
        self._patched = []

    def _forward_for(self, name: str, module: nn.Module):
        plain = type(module).forward

        def forward(x):
            active = self._active.get(name)
            if not self.skipping or active is None or not (module.training and torch.is_grad_enabled()):
                return plain(module, x)
            return active_rows_forward(module, x, active)
        return forward

    # -- TrainHook -------------------------------------------------------------------------------
    def on_run_start(self, loop) -> None:
        self._refresh_active()
        self._install()

    def on_run_end(self, loop) -> None:
        self._uninstall()

    def _frozen_params(self, optimizer):
        """(parameter, frozen row indices, momentum buffer or None) of every layer with frozen neurons."""
        for p, rows in self._frozen_rows:
            yield p, rows, optimizer.state.get(p, {}).get("momentum_buffer")

    @torch.no_grad()
    def after_backward(self, loop, x, y, logits, loss) -> None:
        # Keep the frozen rows (and their momentum) to put back after the step: the step still
        # moves them through weight decay and the momentum of earlier epochs.
        self._saved = [(p, rows, p.index_select(0, rows), buf.index_select(0, rows) if buf is not None else None)
                       for p, rows, buf in self._frozen_params(loop.optimizer)]

    @torch.no_grad()
    def after_step(self, loop) -> None:
        decay = loop.optimizer.param_groups[0]["momentum"] if self.cfg.frozen_momentum == "decay" else 1.0
        for p, rows, values, buf_values in self._saved:
            p.index_copy_(0, rows, values)
            buf = loop.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                if buf_values is None:  # the buffer was created by this step: a frozen row starts with none
                    buf.index_fill_(0, rows, 0.0)
                else:
                    buf.index_copy_(0, rows, buf_values.mul_(decay) if decay != 1.0 else buf_values)
        self._saved = []

    @torch.no_grad()
    def probe_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eval-mode outputs of every NEq layer on x: name -> [N, C, ...] (CPU float32)."""
        outputs: dict[str, list[torch.Tensor]] = {n: [] for n, _ in self.layers}
        handles = [m.register_forward_hook(lambda mod, i, o, n=n: outputs[n].append(o.detach().float().cpu()))
                   for n, m in self.layers]
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(x), 512):
                self.model(x[i:i + 512])
        finally:
            self.model.train(was_training)
            for h in handles:
                h.remove()
        return {n: torch.cat(v) for n, v in outputs.items()}

    def on_epoch_end(self, loop, metrics: dict) -> None:
        data = loop.data
        idx = probe_indices(len(data.y_train), self.cfg.val_fraction, self.cfg.min_val_samples, self.seed)
        outputs = self.probe_outputs(data.x_train[idx])
        was_frozen = self.frozen_fraction()
        seconds_saved = self._measure_saving(loop) if any(v > 0 for v in was_frozen.values()) else 0.0
        new_frozen: dict[str, torch.Tensor] = {}
        for name, module in self.layers:
            current = outputs[name]
            prev = self.previous.get(name)
            if prev is None or prev.shape != current.shape:
                continue
            v = self.velocity[name].update(neuron_similarity(current, prev))
            if v is not None:
                new_frozen[name] = v.abs() <= self.cfg.eps
        if self.cfg.baseline == "random":
            new_frozen = {n: self._random_like(f) for n, f in new_frozen.items()}
        self.previous = outputs
        # Report the epoch that just ran, then switch to the next epoch's frozen set.
        batches = math.ceil(len(data.y_train) / loop.cfg.batch_size)
        modules = dict(self.layers)
        skipped = {n for n in self._active if supports_skipping(modules[n])}  # the layers that really skipped
        flops_saved = sum(2 * self.macs[n] * was_frozen[n] for n in self.macs if n in skipped) * len(data.y_train)
        flops_total = sum(2 * v for v in self.macs.values()) * len(data.y_train)
        metrics["neq_frozen_pct"] = 100.0 * self._overall(was_frozen)
        metrics["neq_frozen_per_layer"] = {n: round(100.0 * f, 3) for n, f in was_frozen.items()}
        metrics["neq_weight_grad_flops_saved"] = float(flops_saved)
        metrics["neq_weight_grad_flops_saved_pct"] = 100.0 * flops_saved / flops_total if flops_total else 0.0
        metrics["neq_seconds_saved"] = seconds_saved
        metrics["neq_timing_batches"] = min(self.cfg.timing_batches, batches)
        self.frozen = new_frozen
        self._refresh_active()
        if self.log is not None:
            self.log.info("epoch %d: NEq froze %.1f%% of the neurons (%s), next epoch %.1f%%; weight-gradient FLOPs "
                          "saved %.1f%% (counted), %.3f s saved (measured)", metrics["epoch"],
                          metrics["neq_frozen_pct"], self.cfg.baseline, 100 * self._overall(self.frozen_fraction()),
                          metrics["neq_weight_grad_flops_saved_pct"], seconds_saved)

    def _overall(self, fractions: dict[str, float]) -> float:
        sizes = {n: _channels(m) for n, m in self.layers}
        total = sum(sizes.values())
        return sum(fractions[n] * sizes[n] for n in sizes) / total if total else 0.0

    def _random_like(self, frozen: torch.Tensor) -> torch.Tensor:
        count = int(frozen.sum())
        out = torch.zeros_like(frozen)
        out[torch.randperm(frozen.numel(), generator=self._gen)[:count]] = True
        return out

    def _measure_saving(self, loop) -> float:
        """Seconds the gradient skipping saved this epoch, measured on `timing_batches` batches.

        Each batch runs forward+backward once with and once without skipping (alternating, the
        faster of two rounds kept); the difference is scaled to the epoch's batch count. The
        model is in train mode, so BatchNorm running statistics move a little: they are restored.
        """
        n = self.cfg.timing_batches
        if n == 0:
            return 0.0
        batches = loop._batches(loop.epoch)
        buffers = {k: b.clone() for k, b in self.model.named_buffers()}
        was_training = self.model.training
        self.model.train()
        grads = {p: p.grad for p in self.model.parameters()}
        timings = {True: [], False: []}
        try:
            for _ in range(2):
                for skipping in (True, False):
                    self.skipping = skipping
                    t0 = time.perf_counter()
                    for idx in batches[:n]:
                        self.model.zero_grad(set_to_none=True)
                        loss = F.cross_entropy(self.model(loop.data.x_train[idx]), loop.data.y_train[idx])
                        loss.backward()
                    timings[skipping].append(time.perf_counter() - t0)
        finally:
            self.skipping = True
            for p, g in grads.items():
                p.grad = g
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    b.copy_(buffers[k])
            self.model.train(was_training)
        per_batch = (min(timings[False]) - min(timings[True])) / min(n, len(batches))
        return per_batch * len(batches)

    def on_shrink(self, loop, removal: dict) -> None:
        """Shrinking during training removed neurons: their history, velocity and frozen flags go too."""
        for name, (_, keep, _, _) in removal.items():
            if name in self.previous:
                self.previous[name] = self.previous[name][:, keep.cpu()]
            if name in self.frozen:
                self.frozen[name] = self.frozen[name][keep.to(self.frozen[name].device)]
            v = self.velocity.get(name)
            if v is not None:
                v.phi, v.value, v.trace = (t[keep.to(t.device)] if t is not None else None
                                           for t in (v.phi, v.value, v.trace))
        modules = dict(self.layers)
        for name in self.macs:  # the producers and their consumers have smaller weights now
            old = self.macs[name]
            positions = old // max(1, self._weight_numel.get(name, 1))
            self._weight_numel[name] = modules[name].weight.numel()
            self.macs[name] = positions * self._weight_numel[name]
        self._refresh_active()

    # -- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"previous": self.previous, "frozen": self.frozen,
                "velocity": {n: v.state_dict() for n, v in self.velocity.items()},
                "generator": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.previous = dict(state["previous"])
        self.frozen = dict(state["frozen"])
        for n, v in state["velocity"].items():
            if n in self.velocity:
                self.velocity[n].load_state_dict(v)
        self._gen.set_state(state["generator"])
        self._refresh_active()

"""Shrinking during training: physically remove dead neurons from the model being trained.

The removal primitive (pure, on tensors): for a producer layer P (Conv2d/Linear) whose output
reaches exactly one consumer layer Q (Conv2d/Linear) through parameter-free channel-wise
modules (activations, max pooling, flatten), a dead neuron i of P (all-zero weight row/filter)
outputs the constant b_i; after the modules in between it is a constant c_i (per channel, or
per feature after a flatten). Removing it:

    P: drop row i of the weight and of the bias
    Q Linear:  b_j += sum_{f in features of i} W[j, f] c_f;  drop those columns
    Q Conv2d:  b_j += c_i * sum(W[j, i, :, :]) when Q has no padding (otherwise only neurons with
               c_i = 0 are removed: zero padding makes the contribution depend on position)

which is the simplify stage's exact removal (docs/algorithms.md section 6, steps 2-3) restricted to
what a model being trained can take: no BatchNorm folding (batch statistics in training mode
differ from the running ones), no residual or concatenation groups (those models are refused
with the layer's name; simplify handles them after training). `shrink_state` applies it to any
state dict (the model's, the plateau detector's best weights), and the SGD momentum buffers are
sliced the same way (a removed neuron's buffer goes with it).

Equivalence with masking. A removed neuron whose output is exactly 0 (zero bias, as one-shot
magnitude pruning leaves it, or a non-positive bias before a ReLU) contributes nothing to the
function or to any other parameter's gradient, so training the smaller net gives the model
masking gives (tested: same logits to 1e-5). A removed neuron with a non-zero constant is folded
exactly at the moment of removal, but under masking its bias (not masked by SeReNe) and the
consumer's columns reading it would keep training; after shrinking that constant stays fixed.

At the end of the run the model is expanded back to its architecture's shapes (removed rows
and the consumer's columns reading them at zero), so model.pt loads as the zoo model and
computes the same logits as the shrunk network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from potatura.errors import UnsupportedError
from potatura.train.loop import TrainHook
from potatura.train.masks import prunable_neuron_layers

CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU,
                       nn.MaxPool2d, nn.Flatten, nn.Identity)
CHANNELWISE_FUNCTIONS = (torch.flatten, F.relu, torch.relu)
ATTRIBUTE = "_potatura_shrink_sizes"  # on the model: the architecture's sizes, read by stats.sparsity_report


@dataclass
class Link:
    """Producer layer -> consumer layer through the channel-wise `between` callables."""

    producer: str
    consumer: str
    between: list = field(default_factory=list)   # callables applied in order to the producer's output
    flattened: bool = False                      # a flatten lies in between: channel i -> features i*HW..


def links(model: nn.Module, head: str) -> list[Link]:
    """The producer -> consumer chain of every prunable Conv2d/Linear; UnsupportedError names a layer
    whose output does not reach exactly one Conv2d/Linear through channel-wise modules."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # tracing errors are many types; the message names the cause
        raise UnsupportedError(f"train.shrink_every: cannot trace the model ({type(exc).__name__}: {exc})") from None
    modules = dict(gm.named_modules())
    layer_names = {n for n, _ in prunable_neuron_layers(model, head)} | {head}
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in layer_names or node.target == head:
            continue
        link = Link(str(node.target), "")
        current = node
        while True:
            users = list(current.users)
            if len(users) != 1:
                raise UnsupportedError(f"train.shrink_every: the output of layer {node.target!r} is used "
                                       f"{len(users)} times (residual/concat): shrink after training with simplify")
            user = users[0]
            if user.op == "call_module" and isinstance(modules[user.target], (nn.Linear, nn.Conv2d)):
                link.consumer = str(user.target)
                break
            if user.op == "call_module" and isinstance(modules[user.target], CHANNELWISE_MODULES):
                mod = modules[user.target]
                link.flattened |= isinstance(mod, nn.Flatten)
                link.between.append(mod)
            elif user.op == "call_function" and user.target in CHANNELWISE_FUNCTIONS and user.args[0] is current:
                extra = user.args[1:]
                link.flattened |= user.target is torch.flatten
                link.between.append(lambda x, f=user.target, a=extra: f(x, *a))
            else:
                what = user.target if user.op != "call_module" else type(modules[user.target]).__name__
                raise UnsupportedError(f"train.shrink_every: layer {node.target!r} feeds {what} "
                                       f"(supported between layers: activations, max pooling, flatten)")
            current = user
        out.append(link)
    return out


@torch.no_grad()
def _constants(link: Link, bias: torch.Tensor, out_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [C, K], constant [C]): what each producer channel, outputting its bias everywhere,
    becomes at the consumer's input (K = features or positions of that channel), and whether
    that is one value."""
    x = bias.double().reshape(1, -1, *([1] * (len(out_shape) - 2))).expand(1, *out_shape[1:]).clone()
    for f in link.between:
        x = f(x)
    values = x.reshape(bias.numel(), -1)
    return values, (values.amax(1) - values.amin(1)).abs() <= 1e-12 * (1 + values.abs().amax(1))


def removable(link: Link, state: dict[str, torch.Tensor], consumer: nn.Module, out_shape) -> torch.Tensor:
    """Bool [C]: dead producer neurons whose removal is exact (see the module docstring)."""
    w = state[f"{link.producer}.weight"]
    dead = ~w.reshape(w.shape[0], -1).ne(0).any(1)
    bias = state.get(f"{link.producer}.bias")
    if bias is None:
        return dead
    values, constant = _constants(link, bias, out_shape)
    zero = values.abs().amax(1) == 0
    if isinstance(consumer, nn.Conv2d):
        padded = any(p != 0 for p in consumer.padding) if not isinstance(consumer.padding, str) else True
        ok = zero | (constant & (not padded))
    else:
        ok = torch.ones_like(zero)  # a Linear takes any per-feature constant into its bias
    return dead & ok.to(dead.device)


@torch.no_grad()
def shrink_state(state: dict[str, torch.Tensor], link: Link, keep: torch.Tensor, consumer: nn.Module,
                 out_shape: tuple[int, ...], fold: bool = True) -> dict[str, torch.Tensor]:
    """The removal primitive on a state dict: drop the producer rows not in `keep` (bool [C]) and the
    consumer columns reading them, folding their constants into the consumer's bias (when `fold`).
    Returns a new dict; the entries of other layers are shared, not copied."""
    out = dict(state)
    pw, qw = f"{link.producer}.weight", f"{link.consumer}.weight"
    rows = torch.nonzero(keep.to(state[pw].device)).flatten()
    bias = state.get(f"{link.producer}.bias")
    weight_q = state[qw]
    channels = keep.numel()
    per_channel = weight_q.shape[1] // channels if isinstance(consumer, nn.Linear) else 1
    cols_keep = keep.to(weight_q.device).repeat_interleave(per_channel)
    if fold and bias is not None and (~keep).any() and f"{link.consumer}.bias" in state:
        values, _ = _constants(link, bias, out_shape)  # [C, K]
        drop = ~keep.to(values.device)
        if isinstance(consumer, nn.Linear):
            feats = drop.repeat_interleave(per_channel)
            c = values.reshape(-1)[feats.to(values.device)] if link.flattened else values[drop][:, 0]
            delta = weight_q.double()[:, feats.to(weight_q.device)] @ c.to(weight_q.device)
        else:
            delta = weight_q.double()[:, drop.to(weight_q.device)].sum((2, 3)) @ values[drop][:, 0].to(weight_q.device)
        qb = f"{link.consumer}.bias"
        out[qb] = (state[qb].double() + delta).to(state[qb].dtype)
    out[pw] = state[pw].index_select(0, rows)
    if bias is not None:
        out[f"{link.producer}.bias"] = bias.index_select(0, rows)
    out[qw] = weight_q[:, cols_keep]
    return out


def _set_module_sizes(module: nn.Module) -> None:
    w = module.weight
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape[0], w.shape[1]
    else:
        module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups


def expand_rows(t: torch.Tensor, kept: torch.Tensor, total: int, dim: int, repeat: int = 1) -> torch.Tensor:
    """Inverse of slicing: `t` with its kept entries placed back among `total` (zeros elsewhere) along dim."""
    index = torch.nonzero(kept.repeat_interleave(repeat)).flatten().to(t.device)
    shape = list(t.shape)
    shape[dim] = total * repeat
    return t.new_zeros(shape).index_copy(dim, index, t)


class ShrinkDuringTraining(TrainHook):
    """Every `every` epochs remove the dead neurons (train.shrink_every); place it last among the hooks.

    Hooks that hold per-neuron state implement on_shrink(loop, removal) to follow the new shapes:
    removal = {producer layer: (link, keep bool [C before], consumer module, producer output shape)}.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], head: str, every: int, log=None):
        self.model = model
        self.every = every
        self.log = log
        self.head = head
        self.links = links(model, head)
        self.modules = dict(model.named_modules())
        self.out_shapes = self._output_shapes(tuple(input_shape))
        # The architecture's sizes; kept[layer] = bool mask over the original neurons still present.
        self.original = {l.producer: self.modules[l.producer].weight.shape[0] for l in self.links}
        self.kept: dict[str, torch.Tensor] = {n: torch.ones(c, dtype=torch.bool) for n, c in self.original.items()}
        self.events: list[dict] = []
        self._record_sizes()

    def _output_shapes(self, input_shape) -> dict[str, tuple[int, ...]]:
        shapes = {}
        handles = [self.modules[l.producer].register_forward_hook(
            lambda m, i, o, n=l.producer: shapes.__setitem__(n, tuple(o.shape))) for l in self.links]
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(torch.zeros((1, *input_shape), device=next(self.model.parameters()).device))
        finally:
            self.model.train(was)
            for h in handles:
                h.remove()
        return shapes

    def _record_sizes(self) -> None:
        """Tell sparsity_report the architecture's sizes (removed neurons count as pruned)."""
        sizes = {}
        for l in self.links:
            for name in (l.producer, l.consumer):
                m = self.modules[name]
                sizes.setdefault(name, {"neurons": int(m.weight.shape[0]), "weight": tuple(m.weight.shape),
                                        "bias": m.bias is not None})
        if not hasattr(self.model, ATTRIBUTE):
            object.__setattr__(self.model, ATTRIBUTE, {"layers": sizes,
                                                       "parameters": sum(p.numel() for p in self.model.parameters())})

    # -- the step -------------------------------------------------------------------------------
    def on_epoch_end(self, loop, metrics: dict) -> None:
        if int(metrics["epoch"]) % self.every != 0 or loop.stop:
            return
        removal = self.shrink(loop)
        removed = sum(int((~r[1]).sum()) for r in removal.values())
        metrics["shrink_removed_neurons"] = removed
        metrics["shrink_parameters"] = sum(p.numel() for p in self.model.parameters())
        if self.log is not None and removed:
            self.log.info("epoch %d: shrink removed %d dead neurons; the model trains with %d parameters",
                          metrics["epoch"], removed, metrics["shrink_parameters"])

    @torch.no_grad()
    def shrink(self, loop=None) -> dict:
        state = self.model.state_dict()
        removal = {}
        for link in self.links:
            consumer = self.modules[link.consumer]
            shape = (1, self.modules[link.producer].weight.shape[0], *self.out_shapes[link.producer][2:])
            keep = ~removable(link, state, consumer, shape)
            if keep.all():
                continue
            if not keep.any():  # keep one neuron: a layer of width 0 is not a layer
                keep[0] = True
            removal[link.producer] = (link, keep, consumer, shape)
            state = shrink_state(state, link, keep, consumer, shape)
        if not removal:
            return {}
        self._apply(state, removal, loop.optimizer if loop is not None else None)
        for name, (_, keep, _, _) in removal.items():
            idx = torch.nonzero(self.kept[name]).flatten()
            self.kept[name][idx[~keep.cpu()]] = False
        self.events.append({"epoch": loop.epoch + 1 if loop is not None else None,
                            "removed": {n: int((~r[1]).sum()) for n, r in removal.items()}})
        if loop is not None:
            for h in loop.hooks:
                if h is not self and hasattr(h, "on_shrink"):
                    h.on_shrink(loop, removal)
        return removal

    def _apply(self, state: dict, removal: dict, optimizer) -> None:
        """Put the shrunk tensors into the same Parameter objects (the optimizer and the other hooks
        keep their references) and slice the momentum buffers the same way (nothing folded)."""
        touched = set()
        for link, keep, consumer, shape in removal.values():
            touched |= {link.producer, link.consumer}
        buffers = {}
        if optimizer is not None:
            momentum = {n: optimizer.state.get(p, {}).get("momentum_buffer") for n, p in self.model.named_parameters()}
            buf_state = {n: b for n, b in momentum.items() if b is not None}
            for link, keep, consumer, shape in removal.values():
                buf_state = shrink_state(buf_state, link, keep, consumer, shape, fold=False) \
                    if f"{link.producer}.weight" in buf_state and f"{link.consumer}.weight" in buf_state \
                    else _drop_partial(buf_state, link, keep, consumer)
            buffers = buf_state
        for name in touched:
            module = self.modules[name]
            for pname in ("weight", "bias"):
                p = getattr(module, pname)
                if p is None:
                    continue
                key = f"{name}.{pname}"
                p.data = state[key].contiguous()
                if optimizer is not None and p in optimizer.state and "momentum_buffer" in optimizer.state[p]:
                    if key in buffers and buffers[key] is not None:
                        optimizer.state[p]["momentum_buffer"] = buffers[key].contiguous().clone()
            _set_module_sizes(module)

    # -- resume and the end of the run -----------------------------------------------------------
    @torch.no_grad()
    def before_load(self, loop, state: dict) -> None:
        """Resize the model to the checkpoint's shapes before the loop loads it (resume)."""
        self.expand()
        kept = state.get("kept", {})
        for link in self.links:
            mask = kept.get(link.producer)
            if mask is None or mask.all():
                continue
            producer, consumer = self.modules[link.producer], self.modules[link.consumer]
            rows = torch.nonzero(mask).flatten()
            producer.weight.data = producer.weight.data.index_select(0, rows).contiguous()
            if producer.bias is not None:
                producer.bias.data = producer.bias.data.index_select(0, rows).contiguous()
            per = consumer.weight.shape[1] // mask.numel() if isinstance(consumer, nn.Linear) else 1
            cols = torch.nonzero(mask.repeat_interleave(per)).flatten()
            consumer.weight.data = consumer.weight.data.index_select(1, cols).contiguous()
            _set_module_sizes(producer)
            _set_module_sizes(consumer)
        self.load_state_dict(state)

    @torch.no_grad()
    def expand(self) -> None:
        """Back to the architecture's shapes: removed rows, and the consumer columns reading them, at zero."""
        for link in self.links:
            kept = self.kept[link.producer]
            if kept.all():
                continue
            producer, consumer = self.modules[link.producer], self.modules[link.consumer]
            total = kept.numel()
            producer.weight.data = expand_rows(producer.weight.data, kept, total, 0)
            if producer.bias is not None:
                producer.bias.data = expand_rows(producer.bias.data, kept, total, 0)
            per = consumer.weight.shape[1] // int(kept.sum()) if isinstance(consumer, nn.Linear) else 1
            consumer.weight.data = expand_rows(consumer.weight.data, kept, total, 1, repeat=per)
            _set_module_sizes(producer)
            _set_module_sizes(consumer)
            self.kept[link.producer] = torch.ones(total, dtype=torch.bool)

    def on_run_end(self, loop) -> None:
        self.expand()
        loop.optimizer.state.clear()  # buffers of the shrunk shapes; the run is over

    def state_dict(self) -> dict:
        return {"kept": {n: k.clone() for n, k in self.kept.items()}, "events": list(self.events)}

    def load_state_dict(self, state: dict) -> None:
        self.kept = {n: k.clone() for n, k in state.get("kept", {}).items()}
        for n, c in self.original.items():
            self.kept.setdefault(n, torch.ones(c, dtype=torch.bool))
        self.events = list(state.get("events", []))


def _drop_partial(buffers: dict, link: Link, keep: torch.Tensor, consumer: nn.Module) -> dict:
    """Slice whichever momentum buffers of a link exist (one layer may not have stepped yet)."""
    out = dict(buffers)
    rows = torch.nonzero(keep).flatten()
    for suffix in ("weight", "bias"):
        key = f"{link.producer}.{suffix}"
        if key in out:
            out[key] = out[key].index_select(0, rows.to(out[key].device))
    key = f"{link.consumer}.weight"
    if key in out:
        per = out[key].shape[1] // keep.numel() if isinstance(consumer, nn.Linear) else 1
        out[key] = out[key][:, keep.to(out[key].device).repeat_interleave(per)]
    return out

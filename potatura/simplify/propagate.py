"""Channel analysis: which channels are constant, which are tied together, which must stay.

One pass over the (BN-folded, float64) graph computes, for every tensor with channels:

- its units: the removable pieces along dim 1 (a channel of an [N, C, H, W] map; after a
  flatten, the H*W features a channel owns; a feature of a Linear's output);
- which units are constant. A Conv2d/Linear output unit is constant when its weights on every
  live input unit are zero (a pruned neuron: all-zero weights by absolute value, whatever the
  sign of their sum); per-channel operators keep constancy; an add is constant only where every
  operand is; and the constant value itself, computed by running the graph in float64 on a
  zero input with every live input of a Conv2d/Linear zeroed (exact for constant units, which
  read only constant units);
- dependency groups (union-find over all units): units that must be removed together or not
  at all: input and output of per-channel operators, the operands and output of a residual add
  (a channel index goes only if dead in every branch), a concatenation's output and its inputs
  at their offsets, a channel and its H*W flattened features, depthwise input i and output i.

A unit is needed when a consumer reads it: a Conv2d/Linear reads a live input unit through a
non-zero weight of a kept output unit; the model's outputs, inputs and opaque operators read
every unit. A group is kept when any member is needed; every other unit is removed, and its
constant (if any) is folded into the consumers (remove.py). Needs grow monotonically, so the
fixed point is reached in a few rounds.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import fx, nn

from potatura.simplify.graph import NodeOp, OpClass, classify, is_channel_tensor, tensor_shape


@dataclass
class TensorInfo:
    """Channel facts of one node's output tensor ([1, C, H, W] or [1, F] at batch 1)."""

    node: fx.Node
    shape: tuple[int, ...]
    unit_sizes: np.ndarray  # dim-1 entries each unit spans (1 for a channel of a map)
    offset: int  # first slot of this tensor in the union-find
    constant: np.ndarray  # bool per unit
    value: Optional[torch.Tensor] = None  # float64, exact where `constant`

    @property
    def units(self) -> int:
        return int(self.unit_sizes.shape[0])

    @property
    def slots(self) -> slice:
        return slice(self.offset, self.offset + self.units)

    def expand(self, unit_mask: np.ndarray) -> np.ndarray:
        """Unit mask -> mask over dim 1 of the tensor."""
        return np.repeat(unit_mask, self.unit_sizes)

    def channel_mask_tensor(self, unit_mask: np.ndarray) -> torch.Tensor:
        """A float64 tensor broadcastable over this tensor: 1 on the units of `unit_mask`."""
        m = torch.from_numpy(self.expand(unit_mask).astype(np.float64))
        return m.reshape(1, -1, *([1] * (len(self.shape) - 2)))


class UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, n: int) -> int:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return start

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


@dataclass
class ChannelPlan:
    """The analysis of one graph: operator classes, tensor facts and the kept units.

    `needed` holds the units read from outside the Conv2d/Linear fixed point (model inputs and
    outputs, opaque operators, units simplify chose to keep); solve() turns it into `kept`.
    """

    gm: fx.GraphModule
    ops: dict[fx.Node, NodeOp]
    infos: dict[fx.Node, TensorInfo]
    kept: np.ndarray  # bool per slot
    groups: np.ndarray  # union-find root per slot
    demoted: list[str] = field(default_factory=list)  # nodes analysed as opaque
    needed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool per slot
    # (dense conv or linear node, nonzero[out, in_units]): which input units each output row reads
    mixing: list[tuple[fx.Node, np.ndarray]] = field(default_factory=list)

    cache: dict = field(default_factory=dict)  # remove.py's folded contributions, per kept state

    def kept_units(self, node: fx.Node) -> np.ndarray:
        return self.kept[self.infos[node].slots]

    def nonzero(self, node: fx.Node) -> np.ndarray:
        """bool [out, in_units] of a dense conv or linear node: row j reads unit u (non-zero weights)."""
        for n, nonzero in self.mixing:
            if n is node:
                return nonzero
        raise KeyError(node.name)

    def _kept_slots(self, needed: np.ndarray) -> np.ndarray:
        group_needed = np.zeros(len(self.groups), bool)
        np.logical_or.at(group_needed, self.groups, needed)
        return group_needed[self.groups]

    def solve(self, needed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(needed, kept) at the fixed point of "a kept output row reads its live inputs through
        non-zero weights", starting from `needed` (not modified)."""
        needed = needed.copy()
        while True:
            while True:
                kept = self._kept_slots(needed)
                before = int(needed.sum())
                for n, nonzero in self.mixing:
                    out, src = self.infos[n], self.infos[self.ops[n].inputs[0]]
                    needed[src.slots] |= nonzero[kept[out.slots]].any(axis=0) & ~src.constant
                if int(needed.sum()) == before:
                    break
            # A layer keeps at least one output and one input unit (a whole layer of dead neurons
            # becomes one constant channel rather than a zero-width tensor).
            forced = False
            for n, _ in self.mixing:
                out, src = self.infos[n], self.infos[self.ops[n].inputs[0]]
                for info in (out, src):
                    if not kept[info.slots].any():
                        needed[info.offset] = True
                        kept = self._kept_slots(needed)
                        forced = True
            if not forced:
                return needed, kept


def _conv_kind(conv: nn.Conv2d) -> str:
    if conv.groups == 1:
        return "dense"
    if conv.groups == conv.in_channels == conv.out_channels:
        return "depthwise"
    return "grouped"


def _unit_nonzero(weight: torch.Tensor, in_info: TensorInfo, is_conv: bool) -> np.ndarray:
    """bool [out, in_units]: does output j read input unit u through a non-zero weight?"""
    weight = weight.detach()
    if is_conv:
        return weight.ne(0).flatten(2).any(dim=2).numpy()
    sizes = in_info.unit_sizes
    if weight.shape[1] and (sizes == sizes[0]).all():
        # Units of one size (a flatten's H*W features per channel): one reduction, no copy.
        return weight.ne(0).reshape(weight.shape[0], len(sizes), int(sizes[0])).any(dim=2).numpy()
    nz = weight.ne(0).numpy()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return np.logical_or.reduceat(nz, starts, axis=1) if nz.shape[1] else nz


class _ConstantInterpreter(fx.Interpreter):
    """Runs the graph on a zero input and records, per node, the channel facts (TensorInfo)."""

    def __init__(self, gm: fx.GraphModule, ops: dict[fx.Node, NodeOp], uf: UnionFind):
        super().__init__(gm, garbage_collect_values=True)
        self.ops = ops
        self.uf = uf
        self.infos: dict[fx.Node, TensorInfo] = {}
        self.demoted: list[str] = []
        self.nonzero: dict[fx.Node, np.ndarray] = {}  # dense conv / linear: _unit_nonzero of its weight

    def run_node(self, n: fx.Node) -> Any:
        # The graph has no in-place operator left (inplace.functionalize), so values are not copied.
        op = self.ops[n]
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        src = self.infos.get(op.inputs[0]) if op.op_class in (OpClass.CONV, OpClass.LINEAR) else None
        if src is not None and op.op_class is OpClass.CONV and _conv_kind(op.module) == "dense" \
                and len(n.args) == 1 and not n.kwargs:
            return self._constant_rows_of_conv(n, op.module, src, args[0])
        if src is not None:
            # Zero the live inputs: a constant output unit then holds exactly its constant.
            args = (args[0] * src.channel_mask_tensor(src.constant),) + tuple(args[1:])
        with self._set_current_node(n):
            result = getattr(self, n.op)(n.target, args, kwargs)
        if n.op != "output" and op.op_class not in (OpClass.UNTRACKED,) and is_channel_tensor(n) \
                and isinstance(result, torch.Tensor):
            self._record(n, op, result)
        return result

    def _constant_rows_of_conv(self, n: fx.Node, conv: nn.Conv2d, src: TensorInfo, x: torch.Tensor) -> torch.Tensor:
        """A dense conv's output with only its constant rows computed (from the constant input
        channels, the only ones they read); the other rows are 0, as no constant unit depends on
        them. A fraction of the MACs of the whole layer at any sparsity."""
        nonzero = self.nonzero[n] = _unit_nonzero(conv.weight, src, True)
        constant_out = ~nonzero[:, ~src.constant].any(axis=1)
        result = x.new_zeros(tensor_shape(n))
        if constant_out.any():
            rows = torch.from_numpy(np.flatnonzero(constant_out))
            cols = torch.from_numpy(np.flatnonzero(src.constant))
            bias = conv.bias.detach().index_select(0, rows) if conv.bias is not None else None
            if len(cols):
                weight = conv.weight.detach()[rows[:, None], cols]
                result[:, rows] = conv._conv_forward(x.index_select(1, cols), weight, bias)
            elif bias is not None:
                result[:, rows] = bias.reshape(1, -1, 1, 1).to(result.dtype)
        self._record(n, self.ops[n], result)
        return result

    def _new_info(self, n: fx.Node, unit_sizes: np.ndarray, constant: np.ndarray, value: torch.Tensor) -> TensorInfo:
        info = TensorInfo(n, tensor_shape(n), unit_sizes.astype(np.int64), self.uf.add(len(unit_sizes)),
                          constant.astype(bool), value.detach())
        self.infos[n] = info
        return info

    def _tie(self, a: TensorInfo, a_start: int, b: TensorInfo, count: int) -> None:
        for u in range(count):
            self.uf.union(a.offset + a_start + u, b.offset + u)

    def _record(self, n: fx.Node, op: NodeOp, value: torch.Tensor) -> None:
        shape = tensor_shape(n)
        cls = op.op_class
        ins = [self.infos.get(i) for i in op.inputs]
        if cls not in (OpClass.PLACEHOLDER, OpClass.OPAQUE) and any(i is None for i in ins):
            cls = OpClass.OPAQUE
        if cls is OpClass.ELEMENTWISE and any(not np.array_equal(i.unit_sizes, ins[0].unit_sizes) for i in ins):
            cls = OpClass.OPAQUE
        if cls is OpClass.CHANNELWISE and ins[0].shape[1] != shape[1]:
            cls = OpClass.OPAQUE
        if cls is not op.op_class:
            self.ops[n] = NodeOp(cls, op.inputs, op.module)
            self.demoted.append(n.name)

        if cls in (OpClass.PLACEHOLDER, OpClass.OPAQUE):
            self._new_info(n, np.ones(shape[1]), np.zeros(shape[1], bool), value)
        elif cls is OpClass.CONV:
            src, conv = ins[0], op.module
            w = conv.weight.detach()
            live = ~src.constant
            if _conv_kind(conv) == "dense":
                nonzero = self.nonzero.get(n)
                if nonzero is None:
                    nonzero = self.nonzero[n] = _unit_nonzero(w, src, True)
                constant = ~nonzero[:, live].any(axis=1)
            else:
                per_group_in = conv.in_channels // conv.groups
                per_group_out = conv.out_channels // conv.groups
                constant = np.zeros(shape[1], bool)
                for j in range(conv.out_channels):
                    g = j // per_group_out
                    live_g = live[g * per_group_in:(g + 1) * per_group_in]
                    constant[j] = not live_g.any() or bool(w[j][torch.from_numpy(live_g)].abs().max() == 0)
            info = self._new_info(n, np.ones(shape[1]), constant, value)
            if _conv_kind(conv) == "depthwise":
                self._tie(src, 0, info, info.units)
        elif cls is OpClass.LINEAR:
            src, lin = ins[0], op.module
            nonzero = self.nonzero[n] = _unit_nonzero(lin.weight, src, False)
            constant = ~nonzero[:, ~src.constant].any(axis=1)
            self._new_info(n, np.ones(shape[1]), constant, value)
        elif cls in (OpClass.CHANNELWISE, OpClass.BATCHNORM, OpClass.BIAS_MAP):
            info = self._new_info(n, ins[0].unit_sizes.copy(), ins[0].constant.copy(), value)
            self._tie(ins[0], 0, info, info.units)
        elif cls is OpClass.FLATTEN:
            src = ins[0]
            info = self._new_info(n, np.full(src.units, shape[1] // src.units), src.constant.copy(), value)
            self._tie(src, 0, info, info.units)
        elif cls is OpClass.ELEMENTWISE:
            constant = np.logical_and.reduce([i.constant for i in ins])
            info = self._new_info(n, ins[0].unit_sizes.copy(), constant, value)
            for i in ins:
                self._tie(i, 0, info, info.units)
        elif cls is OpClass.CONCAT:
            info = self._new_info(n, np.concatenate([i.unit_sizes for i in ins]),
                                  np.concatenate([i.constant for i in ins]), value)
            start = 0
            for i in ins:
                for u in range(i.units):
                    self.uf.union(i.offset + u, info.offset + start + u)
                start += i.units
        else:
            raise AssertionError(f"unhandled operator class {cls} at {n.name}")


def _reads_only_batch_size(n: fx.Node) -> bool:
    """x.size(0) / x.shape[0]: reading the batch size does not depend on the channels."""
    if n.op == "call_method" and n.target == "size":
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        return dim == 0
    if n.op == "call_function" and n.target is getattr and n.args[1:] == ("shape",):
        return bool(n.users) and all(u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0
                                     for u in n.users)
    return False


def analyse(gm: fx.GraphModule, example_input: torch.Tensor, keep_whole: frozenset[str] = frozenset()) -> ChannelPlan:
    """Analyse a float64 graph (shapes already propagated at batch 1); return the kept units.

    keep_whole: layers kept as they are (OPAQUE: every input and output unit needed).
    """
    ops = {n: classify(gm, n, keep_whole) for n in gm.graph.nodes}
    uf = UnionFind()
    interp = _ConstantInterpreter(gm, ops, uf)
    with torch.no_grad():
        interp.run(torch.zeros_like(example_input))
    infos = interp.infos
    needed = np.zeros(len(uf.parent), bool)

    def need_all(node: Any) -> None:
        info = infos.get(node)
        if info is not None:
            needed[info.slots] = True

    mixing: list[tuple[fx.Node, np.ndarray]] = []  # (dense conv or linear node, nonzero[out, in_units])
    for n in gm.graph.nodes:
        op = ops[n]
        cls = op.op_class
        if cls in (OpClass.PLACEHOLDER, OpClass.OUTPUT, OpClass.OPAQUE):
            need_all(n)
            for i in op.inputs:
                need_all(i)
        elif cls is OpClass.UNTRACKED and not _reads_only_batch_size(n):
            for i in op.inputs:
                need_all(i)
        elif cls is OpClass.CONV and _conv_kind(op.module) == "grouped":
            need_all(n)
            need_all(op.inputs[0])
        elif (cls is OpClass.CONV and _conv_kind(op.module) == "dense") or cls is OpClass.LINEAR:
            mixing.append((n, interp.nonzero[n]))

    plan = ChannelPlan(gm, ops, infos, np.zeros(len(needed), bool), uf.roots(), interp.demoted, needed, mixing)
    plan.needed, plan.kept = plan.solve(needed)
    return plan

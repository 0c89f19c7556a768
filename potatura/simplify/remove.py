"""Remove the units a ChannelPlan drops: slice weights, fold the dropped constants into consumers.

For a kept output row j of a consumer and the dropped constant input units K:

    Linear:  b_j += sum_{f in K} W[j, f] c_f
    Conv2d:  the contribution conv(c_K, W[j, K]) is computed exactly (float64, the layer's own
             padding); when it is the same at every position it joins the bias, otherwise it
             is a per-position bias map [C, H, W] (BiasMap after the convolution).

Dropped live units need no folding: by construction no kept row reads them (zero weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import fx, nn

from potatura.errors import UnsupportedError
from potatura.simplify.graph import OpClass
from potatura.simplify.layers import BiasMap
from potatura.simplify.propagate import ChannelPlan, TensorInfo, _conv_kind

# A folded conv contribution whose spread over positions stays below this fraction of its
# magnitude is uniform (float64 rounding of identical sums), so it joins the plain bias.
UNIFORM_RELATIVE_TOLERANCE = 1e-10


@dataclass
class LayerChange:
    """What simplify did to one Conv2d/Linear (channel counts are dim-1 widths)."""

    name: str
    kind: str  # Conv2d | Linear | BatchNorm2d | ...
    in_before: int
    in_after: int
    out_before: int
    out_after: int
    folded_constants: int = 0  # dropped constant input units folded into this layer
    bias_map: Optional[list[int]] = None  # [C, H, W] when a per-position bias was needed
    notes: list[str] = field(default_factory=list)


def _index(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.flatnonzero(mask)).long()


def _kept_bias(layer: nn.Module, bias: torch.Tensor) -> Optional[torch.Tensor]:
    """The new layer's bias: None when the layer had none and nothing non-zero was folded into it
    (a zero bias would only add parameters)."""
    return bias if layer.bias is not None or bool(bias.ne(0).any()) else None


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor], groups: int) -> nn.Conv2d:
    # Built on the meta device: no memory and no random init for weights replaced right away.
    out = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=groups, bias=bias is not None,
                    padding_mode=conv.padding_mode, device="meta")
    # No copy: the tensors are fresh slices, or the replaced layer's own (plan.gm is a private copy).
    out.weight = nn.Parameter(weight.detach().contiguous())
    if bias is not None:
        out.bias = nn.Parameter(bias.detach().contiguous())
    return out.train(False)


def _new_linear(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    # No copy: the tensors are fresh slices, or the replaced layer's own (plan.gm is a private copy).
    out.weight = nn.Parameter(weight.detach().contiguous())
    if bias is not None:
        out.bias = nn.Parameter(bias.detach().contiguous())
    return out.train(False)


def _bias_of(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    return layer.bias.detach().clone() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)


def _free_name(gm: fx.GraphModule, base: str) -> str:
    name, k = base, 1
    while True:
        try:
            gm.get_submodule(name)
        except AttributeError:
            return name
        k += 1
        name = f"{base}{k}"


def _insert_bias_map(gm: fx.GraphModule, node: fx.Node, bias_map: torch.Tensor) -> str:
    name = _free_name(gm, f"{node.target}_bias_map")
    gm.add_submodule(name, BiasMap(bias_map))
    with gm.graph.inserting_after(node):
        added = gm.graph.call_module(name, (node,))
    node.replace_all_uses_with(added, delete_user_cb=lambda user: user is not added)
    return name


def _take(weight: torch.Tensor, rows: Optional[torch.Tensor], cols: Optional[torch.Tensor]) -> torch.Tensor:
    """weight[rows][:, cols] in one copy (None: every row/column; no copy at all when both are None)."""
    if rows is None and cols is None:
        return weight
    if rows is None:
        return weight.index_select(1, cols)
    if cols is None:
        return weight.index_select(0, rows)
    return weight[rows[:, None], cols]


def _all_or_index(mask: np.ndarray) -> Optional[torch.Tensor]:
    return None if mask.all() else _index(mask)


def _conv_contribution(plan: ChannelPlan, node: fx.Node) -> tuple[np.ndarray, Optional[torch.Tensor], bool]:
    """(dropped constant input units of a dense conv, their exact contribution [R, Ho, Wo] to its kept
    rows in float64 or None when no constant is dropped, whether it is the same at every position).
    Cached per kept state."""
    conv = plan.ops[node].module
    source = plan.ops[node].inputs[0]
    src = plan.infos[source]
    kept_in, kept_out = plan.kept_units(source), plan.kept_units(node)
    drop = ~kept_in & src.constant
    key = (node, kept_in.tobytes(), kept_out.tobytes())
    cached = plan.cache.get(key)
    if cached is None:
        contribution = None
        if drop.any():
            # Only the dropped channels: the others would add zeros (they are not part of the sum).
            dropped = _index(drop)
            weight = _take(conv.weight.detach(), _all_or_index(kept_out), dropped)
            contribution = conv._conv_forward(src.value.index_select(1, dropped), weight, None)[0]
        uniform = contribution is None or _is_uniform(contribution)
        cached = plan.cache[key] = (drop, contribution, uniform)
    return cached


def _cached(plan: ChannelPlan, key: tuple, compute):
    """plan.cache[key], computed once (facts of the analysis that do not change with the kept units)."""
    if key not in plan.cache:
        plan.cache[key] = compute()
    return plan.cache[key]


def _is_uniform(contribution: torch.Tensor) -> bool:
    flat = contribution.flatten(1)
    if not flat.numel():
        return True
    spread = float((flat.amax(1) - flat.amin(1)).max())
    return spread <= UNIFORM_RELATIVE_TOLERANCE * (1.0 + float(flat.abs().max()))


def _units_read(plan: ChannelPlan, node: fx.Node) -> np.ndarray:
    """bool per input unit: read through a non-zero weight by a kept output row of `node`."""
    nonzero = plan.nonzero(node)
    return nonzero[plan.kept_units(node)].any(axis=0)


def _nonzero_units(info: TensorInfo) -> np.ndarray:
    per_feature = (info.value.reshape(info.value.shape[1], -1) != 0).any(dim=1).numpy()
    starts = np.concatenate([[0], np.cumsum(info.unit_sizes)[:-1]]).astype(np.int64)
    return np.logical_or.reduceat(per_feature, starts) if per_feature.size else per_feature


def _spatially_uniform_units(info: TensorInfo) -> np.ndarray:
    flat = info.value.reshape(info.value.shape[1], -1)
    spread = (flat.amax(dim=1) - flat.amin(dim=1)).numpy()
    return spread <= UNIFORM_RELATIVE_TOLERANCE * (1.0 + np.abs(flat.numpy()).max(axis=1))


def _bias_map_candidates(plan: ChannelPlan) -> list[tuple[fx.Node, np.ndarray, int]]:
    """Dense convs that need a bias map with the current kept units: (node, the dropped constant
    units whose contribution is non-zero, bias map values)."""
    found = []
    for node, op in plan.ops.items():
        if op.op_class is not OpClass.CONV or _conv_kind(op.module) != "dense":
            continue
        drop, contribution, uniform = _conv_contribution(plan, node)
        if uniform:
            continue
        src = plan.infos[op.inputs[0]]
        units = drop & _cached(plan, ("nonzero units", src.node), lambda: _nonzero_units(src)) \
            & _units_read(plan, node)
        if op.module.padding in ((0, 0), "valid"):
            # Without padding a spatially uniform constant contributes a uniform bias: only the
            # varying ones (already position-dependent, e.g. after a padded depthwise conv) count.
            units &= ~_cached(plan, ("uniform units", src.node), lambda: _spatially_uniform_units(src))
        found.append((node, units, int(contribution.numel())))
    return found


def predicted_parameters(plan: ChannelPlan, kept: np.ndarray) -> int:
    """Parameters of plan.gm after apply_plan with `kept` (bias maps not included)."""
    total = sum(p.numel() for p in plan.gm.parameters())
    for node, op in plan.ops.items():
        module = op.module
        if op.op_class not in (OpClass.CONV, OpClass.LINEAR, OpClass.BATCHNORM, OpClass.BIAS_MAP):
            continue
        total -= sum(p.numel() for p in module.parameters())
        out = kept[plan.infos[node].slots]
        if op.op_class is OpClass.BATCHNORM:
            total += 2 * int(plan.infos[node].expand(out).sum()) if module.weight is not None else 0
            continue
        if op.op_class is OpClass.BIAS_MAP:
            total += int(out.sum()) * module.bias[0].numel()
            continue
        src = plan.infos[op.inputs[0]]
        kept_in = kept[src.slots]
        rows = int(out.sum())
        if op.op_class is OpClass.CONV and _conv_kind(module) == "grouped":
            total += module.weight.numel() + (module.out_channels if module.bias is not None else 0)
            continue
        if op.op_class is OpClass.CONV and _conv_kind(module) == "depthwise":
            total += rows * module.weight[0].numel() + (rows if module.bias is not None else 0)
            continue
        per_column = module.weight[0, 0].numel() if op.op_class is OpClass.CONV else 1
        total += rows * int(src.expand(kept_in).sum()) * per_column
        nonzero_units = _cached(plan, ("nonzero units", src.node), lambda: _nonzero_units(src))
        folds = (~kept_in & src.constant & nonzero_units & plan.nonzero(node)[out].any(axis=0)).any()
        total += rows if module.bias is not None or folds else 0
    return int(total)


def keep_constants_instead_of_bias_maps(plan: ChannelPlan, parameter_limit: int) -> list[dict]:
    """Keep constant channels where that costs fewer parameters than a bias map; updates plan.kept.

    A constant channel that meets zero padding needs a per-position bias map [R, Ho, Wo] in its
    consumer when it is removed; kept, it costs its producer's row and a column in every consumer.
    Layer by layer, the cheaper one is taken. Then, if the predicted total (with the remaining
    maps) exceeds `parameter_limit` (the masked model's parameters), every such channel is kept:
    without bias maps simplify only removes parameters, so the result never grows.
    Returns one record per consumer whose bias map was replaced by kept channels.
    """
    records: list[dict] = []

    def keep(node: fx.Node, units: np.ndarray, map_values: int, reason: str) -> None:
        src_node = plan.ops[node].inputs[0]
        src = plan.infos[src_node]
        before = predicted_parameters(plan, plan.kept)
        needed = plan.needed.copy()
        needed[src.offset + np.flatnonzero(units)] = True
        plan.needed, plan.kept = plan.solve(needed)
        records.append({"layer": str(node.target), "constant_channels_kept": int(units.sum()),
                        "from": src_node.name, "bias_map_values_avoided": map_values,
                        "parameters_kept": predicted_parameters(plan, plan.kept) - before, "reason": reason})

    while True:
        for node, units, map_values in _bias_map_candidates(plan):
            src = plan.infos[plan.ops[node].inputs[0]]
            needed = plan.needed.copy()
            needed[src.offset + np.flatnonzero(units)] = True
            _, kept = plan.solve(needed)
            if predicted_parameters(plan, kept) - predicted_parameters(plan, plan.kept) < map_values:
                keep(node, units, map_values, "fewer parameters than the bias map")
                break
        else:
            break
    candidates = _bias_map_candidates(plan)
    if candidates and predicted_parameters(plan, plan.kept) + sum(c[2] for c in candidates) > parameter_limit:
        while candidates:
            node, units, map_values = candidates[0]
            keep(node, units, map_values, "bias maps would make the model larger than the masked one")
            candidates = _bias_map_candidates(plan)
    return records


def _simplify_conv(plan: ChannelPlan, node: fx.Node, conv: nn.Conv2d, allow_bias_maps: bool) -> LayerChange:
    gm = plan.gm
    source = plan.ops[node].inputs[0]
    kept_in, kept_out = plan.kept_units(source), plan.kept_units(node)
    rows = _all_or_index(kept_out)
    weight, bias = conv.weight.detach(), _bias_of(conv)
    change = LayerChange(str(node.target), "Conv2d", conv.in_channels, int(kept_in.sum()), conv.out_channels,
                         int(kept_out.sum()))
    kind = _conv_kind(conv)
    if kind == "grouped":
        gm.add_submodule(node.target, _new_conv(conv, weight, _kept_bias(conv, bias), conv.groups))
        change.in_after, change.out_after = conv.in_channels, conv.out_channels
        change.notes.append("grouped convolution kept whole")
        return change
    if kind == "depthwise":
        # Input i and output i are one unit (tied in the analysis), so nothing is folded.
        gm.add_submodule(node.target, _new_conv(conv, _take(weight, rows, None),
                                                _kept_bias(conv, _take(bias, rows, None)), int(kept_out.sum())))
        return change
    drop, contribution, uniform = _conv_contribution(plan, node)
    new_bias = _take(bias, rows, None)
    bias_map = None
    if contribution is not None:
        change.folded_constants = int(drop.sum())
        if uniform:
            new_bias = new_bias + contribution.flatten(1).mean(1)
        else:
            if not allow_bias_maps:
                raise UnsupportedError(
                    f"simplify: layer {node.target!r} needs a per-position bias map (removed channels with a "
                    "non-zero constant output meet its zero padding) and simplify.bias_maps is 'refuse'; set it "
                    "to 'allow', or train so that removed neurons output 0 after their activation")
            bias_map = contribution
    gm.add_submodule(node.target, _new_conv(conv, _take(weight, rows, _all_or_index(kept_in)),
                                            _kept_bias(conv, new_bias), 1))
    if bias_map is not None:
        _insert_bias_map(gm, node, bias_map)
        change.bias_map = list(bias_map.shape)
    return change


def _simplify_linear(plan: ChannelPlan, node: fx.Node, lin: nn.Linear) -> LayerChange:
    source = plan.ops[node].inputs[0]
    src = plan.infos[source]
    kept_in, kept_out = plan.kept_units(source), plan.kept_units(node)
    rows, cols = _all_or_index(kept_out), _all_or_index(src.expand(kept_in))
    weight, bias = lin.weight.detach(), _bias_of(lin)
    change = LayerChange(str(node.target), "Linear", lin.in_features, int(src.expand(kept_in).sum()),
                         lin.out_features, int(kept_out.sum()))
    new_bias = _take(bias, rows, None)
    drop = ~kept_in & src.constant
    if drop.any():
        change.folded_constants = int(drop.sum())
        # One matrix-vector product over the whole weight with the dropped constants (zero elsewhere):
        # no copy of a [rows, dropped features] block of a large matrix.
        dropped = src.value.reshape(-1) * torch.from_numpy(src.expand(drop).astype(np.float64))
        new_bias = new_bias + _take(weight @ dropped.to(weight.dtype), rows, None)
    plan.gm.add_submodule(node.target, _new_linear(_take(weight, rows, cols), _kept_bias(lin, new_bias)))
    return change


def _slice_batchnorm(plan: ChannelPlan, node: fx.Node, bn: nn.Module) -> LayerChange:
    info = plan.infos[node]
    keep = _index(info.expand(plan.kept_units(node)))
    new = type(bn)(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine, track_running_stats=True,
                   dtype=bn.running_mean.dtype)
    with torch.no_grad():
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
        if bn.affine:
            new.weight.copy_(bn.weight[keep])
            new.bias.copy_(bn.bias[keep])
    plan.gm.add_submodule(node.target, new.train(False))
    return LayerChange(str(node.target), type(bn).__name__, bn.num_features, len(keep), bn.num_features, len(keep),
                       notes=["not folded: its producer is not a Conv2d/Linear used only here"])


def apply_plan(plan: ChannelPlan, allow_bias_maps: bool = True) -> list[LayerChange]:
    """Rewrite plan.gm in place (modules sliced, bias maps inserted); return one record per layer."""
    gm = plan.gm
    changes: list[LayerChange] = []
    for node in list(gm.graph.nodes):
        op = plan.ops.get(node)
        if op is None:
            continue
        cls = op.op_class
        if cls is OpClass.CONV:
            changes.append(_simplify_conv(plan, node, op.module, allow_bias_maps))
        elif cls is OpClass.LINEAR:
            changes.append(_simplify_linear(plan, node, op.module))
        elif cls is OpClass.BATCHNORM:
            changes.append(_slice_batchnorm(plan, node, op.module))
        elif cls is OpClass.BIAS_MAP:
            keep = _index(plan.kept_units(node))
            gm.add_submodule(node.target, BiasMap(op.module.bias.detach()[keep]))
        elif cls is OpClass.FLATTEN and node.op == "call_method" and node.target in ("view", "reshape"):
            # x.view(x.size(0), -1) and friends follow the new width as torch.flatten(x, 1).
            node.op, node.target, node.args, node.kwargs = "call_function", torch.flatten, (node.args[0], 1), {}
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return changes

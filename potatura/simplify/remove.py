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


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> nn.Conv2d:
    # Built on the meta device: no memory and no random init for weights replaced right away.
    out = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=groups, bias=True,
                    padding_mode=conv.padding_mode, device="meta")
    out.weight = nn.Parameter(weight.detach().clone().contiguous())
    out.bias = nn.Parameter(bias.detach().clone().contiguous())
    return out.train(False)


def _new_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=True, device="meta")
    out.weight = nn.Parameter(weight.detach().clone().contiguous())
    out.bias = nn.Parameter(bias.detach().clone().contiguous())
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


def _dropped_constants(src: TensorInfo, kept_in: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """(unit mask of dropped constant units, the source value with only those units non-zero)."""
    drop = ~kept_in & src.constant
    return drop, src.value * src.channel_mask_tensor(drop)


def _simplify_conv(plan: ChannelPlan, node: fx.Node, conv: nn.Conv2d, allow_bias_maps: bool) -> LayerChange:
    gm = plan.gm
    source = plan.ops[node].inputs[0]
    src = plan.infos[source]
    kept_in, kept_out = plan.kept_units(source), plan.kept_units(node)
    rows = _index(kept_out)
    weight, bias = conv.weight.detach(), _bias_of(conv)
    change = LayerChange(str(node.target), "Conv2d", conv.in_channels, int(kept_in.sum()), conv.out_channels,
                         int(kept_out.sum()))
    kind = _conv_kind(conv)
    if kind == "grouped":
        gm.add_submodule(node.target, _new_conv(conv, weight, bias, conv.groups))
        change.in_after, change.out_after = conv.in_channels, conv.out_channels
        change.notes.append("grouped convolution kept whole")
        return change
    if kind == "depthwise":
        # Input i and output i are one unit (tied in the analysis), so nothing is folded.
        gm.add_submodule(node.target, _new_conv(conv, weight[rows], bias[rows], len(rows)))
        return change
    drop, dropped_value = _dropped_constants(src, kept_in)
    new_bias = bias[rows]
    bias_map = None
    if drop.any():
        change.folded_constants = int(drop.sum())
        contribution = conv._conv_forward(dropped_value, weight[rows], None)[0]  # [R, Ho, Wo], float64
        flat = contribution.flatten(1)
        spread = float((flat.amax(1) - flat.amin(1)).max()) if flat.numel() else 0.0
        scale = 1.0 + (float(flat.abs().max()) if flat.numel() else 0.0)
        if spread <= UNIFORM_RELATIVE_TOLERANCE * scale:
            new_bias = new_bias + flat.mean(1)
        else:
            if not allow_bias_maps:
                raise UnsupportedError(
                    f"simplify: layer {node.target!r} needs a per-position bias map (removed channels with a "
                    "non-zero constant output meet its zero padding) and simplify.bias_maps is 'refuse'; set it "
                    "to 'allow', or train so that removed neurons output 0 after their activation")
            bias_map = contribution
    gm.add_submodule(node.target, _new_conv(conv, weight[rows][:, _index(kept_in)], new_bias, 1))
    if bias_map is not None:
        _insert_bias_map(gm, node, bias_map)
        change.bias_map = list(bias_map.shape)
    return change


def _simplify_linear(plan: ChannelPlan, node: fx.Node, lin: nn.Linear) -> LayerChange:
    source = plan.ops[node].inputs[0]
    src = plan.infos[source]
    kept_in, kept_out = plan.kept_units(source), plan.kept_units(node)
    rows, cols = _index(kept_out), _index(src.expand(kept_in))
    weight, bias = lin.weight.detach(), _bias_of(lin)
    change = LayerChange(str(node.target), "Linear", lin.in_features, len(cols), lin.out_features, len(rows))
    new_bias = bias[rows]
    drop = ~kept_in & src.constant
    if drop.any():
        change.folded_constants = int(drop.sum())
        features = _index(src.expand(drop))
        new_bias = new_bias + weight[rows][:, features] @ src.value.reshape(-1)[features]
    plan.gm.add_submodule(node.target, _new_linear(weight[rows][:, cols], new_bias))
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

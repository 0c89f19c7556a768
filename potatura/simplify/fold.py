"""Fold eval-mode BatchNorm into the Conv2d/Linear that feeds it (float64 arithmetic).

    W_f = diag(gamma / sqrt(var + eps)) W
    b_f = gamma (b - mean) / sqrt(var + eps) + beta

A BatchNorm is folded only when its producer is a Conv2d (BatchNorm2d) or Linear (BatchNorm1d
on [N, F]) whose output feeds nothing else and folding does not add parameters; any other
BatchNorm stays a per-channel layer and is sliced with its channels.
"""

from __future__ import annotations

import torch
from torch import fx, nn


def fold_batchnorm_parameters(layer: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of `layer` (Conv2d/Linear) with the eval-mode BatchNorm `bn` folded in, in float64.

    The one implementation of BN folding: simplify uses it, and quant (which folds a BatchNorm
    left after a Conv2d/Linear) imports it. Returns (weight [out, ...], bias [out]) as float64.
    """
    dtype = torch.float64
    weight = layer.weight.detach().to(dtype)
    bias = layer.bias.detach().to(dtype) if layer.bias is not None else torch.zeros(weight.shape[0], dtype=dtype)
    mean = bn.running_mean.detach().to(dtype)
    var = bn.running_var.detach().to(dtype)
    gamma = bn.weight.detach().to(dtype) if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().to(dtype) if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), (bias - mean) * scale + beta


def _folded_layer(layer: nn.Module, bn: nn.Module) -> nn.Module:
    new_weight, new_bias = fold_batchnorm_parameters(layer, bn)
    # Built on the meta device: no memory and no random init for weights replaced right away.
    if isinstance(layer, nn.Conv2d):
        out = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=True,
                        padding_mode=layer.padding_mode, device="meta")
    else:
        out = nn.Linear(layer.in_features, layer.out_features, bias=True, device="meta")
    out.weight = nn.Parameter(new_weight.to(layer.weight.dtype))
    out.bias = nn.Parameter(new_bias.to(layer.weight.dtype))
    return out.train(False)


def fold_batchnorm(gm: fx.GraphModule, keep_whole: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Fold every foldable BatchNorm of `gm` in place; return the (layer, batchnorm) pairs folded.

    Call on a float64 copy: the folded weights are then exact to float64 rounding. Not folded:
    a BatchNorm after a layer in `keep_whole` (tied weights stay tied), and a BatchNorm without
    affine parameters after a layer without bias (folding would add a bias: more parameters).
    """
    folded: list[tuple[str, str]] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        bn = gm.get_submodule(node.target)
        if type(bn) not in (nn.BatchNorm1d, nn.BatchNorm2d) or bn.running_mean is None:
            continue
        producer = node.args[0] if node.args else None
        if not isinstance(producer, fx.Node) or producer.op != "call_module" or len(producer.users) != 1:
            continue
        layer = gm.get_submodule(producer.target)
        meta = producer.meta.get("tensor_meta")
        pairs = (type(layer) is nn.Conv2d and type(bn) is nn.BatchNorm2d) or \
                (type(layer) is nn.Linear and type(bn) is nn.BatchNorm1d and meta is not None and len(meta.shape) == 2)
        if not pairs or bn.num_features != layer.weight.shape[0] or str(producer.target) in keep_whole:
            continue
        if layer.bias is None and not any(True for _ in bn.parameters()):
            continue
        gm.add_submodule(producer.target, _folded_layer(layer, bn))
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)
        folded.append((str(producer.target), str(node.target)))
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return folded

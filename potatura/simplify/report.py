"""Sizes and agreement: parameters and MACs per layer, and how far two models' logits differ."""

from __future__ import annotations

from typing import Optional

import torch
from torch import fx, nn

from potatura.simplify.layers import BiasMap


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_sizes(gm: fx.GraphModule) -> dict[str, dict]:
    """Per Conv2d/Linear/BatchNorm/BiasMap of a shape-propagated graph (by qualified name): widths,
    parameters, MACs per sample.

    MACs count the multiply-accumulates of Conv2d and Linear (C_out * H_out * W_out * C_in/groups
    * kh * kw; in * out); BatchNorm and bias maps are additions and are not counted as MACs.
    """
    sizes: dict[str, dict] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        params = sum(p.numel() for p in m.parameters(recurse=False))
        meta = node.meta.get("tensor_meta")
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            out_h, out_w = meta.shape[2], meta.shape[3]
            macs = m.out_channels * out_h * out_w * (m.in_channels // m.groups) * kh * kw
            sizes[str(node.target)] = {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels,
                                       "params": params, "macs": int(macs)}
        elif isinstance(m, nn.Linear):
            rows = int(torch.Size(meta.shape[:-1]).numel() // meta.shape[0]) if meta is not None else 1
            sizes[str(node.target)] = {"type": "Linear", "in": m.in_features, "out": m.out_features,
                                       "params": params, "macs": int(rows * m.in_features * m.out_features)}
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, BiasMap)):
            width = m.num_features if not isinstance(m, BiasMap) else m.channels
            sizes[str(node.target)] = {"type": type(m).__name__, "in": width, "out": width, "params": params,
                                       "macs": 0}
    return sizes


@torch.no_grad()
def compare_logits(reference: nn.Module, candidate: nn.Module, inputs: torch.Tensor,
                   batch_size: int = 256, labels: Optional[torch.Tensor] = None) -> dict:
    """Max |difference| of logits, the logit scale (max |reference logit|), argmax agreement.

    Both models run in eval mode, in float32, over `inputs` [N, C, H, W] in batches.
    """
    reference.eval()
    candidate.eval()
    max_diff, scale, agree, n, correct_ref, correct_cand = 0.0, 0.0, 0, 0, 0, 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size]
        a, b = reference(x).float(), candidate(x).float()
        max_diff = max(max_diff, float((a - b).abs().max()))
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            max_diff = float("inf")  # NaN would vanish in max(): a non-finite logit is never "exact"
        scale = max(scale, float(a.abs().max()))
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        n += len(x)
        if labels is not None:
            y = labels[start:start + batch_size]
            correct_ref += int((a.argmax(1) == y).sum())
            correct_cand += int((b.argmax(1) == y).sum())
    out = {"samples": n, "max_abs_logit_difference": max_diff, "logit_scale": scale,
           "relative_logit_difference": max_diff / scale if scale > 0 else max_diff,
           "argmax_agreement": agree / n if n else 1.0}
    if labels is not None and n:
        out["accuracy_before"] = correct_ref / n
        out["accuracy_after"] = correct_cand / n
    return out

"""simplify(model, example_input): fold BN, propagate the constants of dead neurons, remove them."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from potatura.errors import UnsupportedError
from potatura.simplify.fold import fold_batchnorm
from potatura.simplify.graph import OpClass, check_single_use, layers_sharing_parameters, trace
from potatura.simplify.inplace import functionalize
from potatura.simplify.module import SimplifiedGraphModule, as_simplified
from potatura.simplify.propagate import analyse
from potatura.simplify.remove import apply_plan, keep_constants_instead_of_bias_maps
from potatura.simplify.report import count_parameters, layer_sizes

BIAS_MAP_NOTE = ("layers listed in bias_map_layers add a per-position bias map [C, H, W] after the convolution "
                 "(removed channels with a non-zero constant meet zero padding): exact, valid only at the input "
                 "size simplified for; a hardware backend must support it or refuse the model")


log = logging.getLogger(__name__)


class TrainModeWarning(UserWarning):
    """simplify was given a model in train mode; it simplifies the eval-mode behaviour."""


def _warn_if_training(model: nn.Module) -> None:
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if not training:
        return
    message = (f"simplify: model {type(model).__name__} is in train mode (model.training={model.training}; "
               f"{len(training)} modules with training=True, e.g. {training[0]!r}); it is simplified with its "
               "eval-mode behaviour (BatchNorm running statistics, dropout off) and the result is an eval-mode model: "
               "call model.eval() first to silence this")
    log.warning(message)
    warnings.warn(message, TrainModeWarning, stacklevel=3)


CONSTANT_CHANNELS_NOTE = ("layers listed in constant_channels_kept keep removed neurons' constant channels (the "
                          "producer's row and the consumer's columns) where a per-position bias map would cost more "
                          "parameters, or where bias maps would make the model larger than the masked one")


@dataclass
class SimplifyResult:
    """The simplified model (a torch.fx GraphModule of plain layers, eval mode) and its summary (JSON-able)."""

    model: SimplifiedGraphModule
    summary: dict


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def simplify(model: nn.Module, example_input: torch.Tensor, *, allow_bias_maps: bool = True) -> SimplifyResult:
    """Remove the pruned neurons of `model` (all-zero weight rows/filters) so it computes the same logits.

    example_input: one input of the shape the model will see, [1, C, H, W] or [1, F] (a larger
    batch is cut to its first sample). `model` is not modified. A model in train mode is simplified
    with its eval-mode behaviour, with a TrainModeWarning (and a log warning) naming that state.
    Raises UnsupportedError naming the layer when the model cannot be traced or holds a layer
    simplify does not know, and naming the node when an in-place operator cannot be rewritten out
    of place exactly (inplace.py). The result never has more parameters than `model`: a constant
    channel is kept where a bias map would cost more (summary["constant_channels_kept"]), layers
    sharing a parameter are kept whole and stay tied (summary["shared_parameters"]).
    """
    start = time.perf_counter()
    _warn_if_training(model)
    if not isinstance(example_input, torch.Tensor) or example_input.dim() not in (2, 4) or len(example_input) < 1:
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise UnsupportedError(f"simplify: example input must be a tensor [N, C, H, W] or [N, F], got {shape}")
    dtype = _model_dtype(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # The analysis runs on the CPU in float64; the result goes back to the model's device and dtype.
    x64 = example_input[:1].detach().to("cpu", torch.float64)

    work = copy.deepcopy(model).cpu().eval()
    gm = trace(work)
    check_single_use(gm)
    # In-place operators and shapes, checked against forward in the model's own dtype (two runs
    # at float32 cost half of what they cost at float64; `work` shares gm's modules).
    if dtype not in (torch.float32, torch.float64):
        gm = gm.to(torch.float64)
    inplace_rewritten = functionalize(gm, work, x64.to(_model_dtype(gm)))
    gm = gm.to(torch.float64)
    before = layer_sizes(gm)
    shared = layers_sharing_parameters(gm)
    keep_whole = frozenset(shared)
    folded = fold_batchnorm(gm, keep_whole)
    plan = analyse(gm, x64, keep_whole)
    kept_instead = keep_constants_instead_of_bias_maps(plan, count_parameters(model))
    changes = apply_plan(plan, allow_bias_maps=allow_bias_maps)
    # Removing channels changes no spatial size, so the shapes recorded before still give the
    # sizes (a forward of the result would cost more than the rest of this step); the stale
    # channel counts are then dropped from the graph.
    after = layer_sizes(gm)
    for node in gm.graph.nodes:
        node.meta.pop("tensor_meta", None)
    gm = as_simplified(gm.to(device=device, dtype=dtype).eval())
    seconds = time.perf_counter() - start

    folded_into = {conv: bn for conv, bn in folded}
    by_name = {c.name: c for c in changes}
    layers = []
    for name, b in before.items():
        if b["type"] not in ("Conv2d", "Linear"):
            continue
        a = after.get(name, {"in": 0, "out": 0, "params": 0, "macs": 0})
        c = by_name.get(name)
        row = {"layer": name, "type": b["type"], "in_before": b["in"], "in_after": a["in"],
               "out_before": b["out"], "out_after": a["out"],
               "params_before": b["params"] + (before.get(folded_into[name], {}).get("params", 0)
                                               if name in folded_into else 0),
               "params_after": a["params"], "macs_before": b["macs"], "macs_after": a["macs"],
               "batchnorm_folded": folded_into.get(name), "constants_folded": c.folded_constants if c else 0,
               "bias_map": c.bias_map if c else None}
        if c and c.notes:
            row["notes"] = c.notes
        layers.append(row)

    residual = []
    concats = []
    for node, op in plan.ops.items():
        if op.op_class is OpClass.ELEMENTWISE:
            info = plan.infos[node]
            residual.append({"node": node.name, "operands": [i.name for i in op.inputs],
                             "channels_before": info.units, "channels_after": int(plan.kept_units(node).sum())})
        elif op.op_class is OpClass.CONCAT:
            info = plan.infos[node]
            concats.append({"node": node.name, "inputs": [i.name for i in op.inputs],
                            "channels_before": int(info.unit_sizes.sum()),
                            "channels_after": int(info.expand(plan.kept_units(node)).sum())})
    opaque = [n.name for n, op in plan.ops.items() if op.op_class is OpClass.OPAQUE]
    kept_bn = [c.name for c in changes if c.kind.startswith("BatchNorm")]
    bias_maps = [{"layer": c.name, "shape": c.bias_map} for c in changes if c.bias_map]
    bias_map_values = sum(v["params"] for v in after.values() if v["type"] == "BiasMap")
    summary = {
        "input_shape": list(example_input.shape[1:]),
        "parameters_before": count_parameters(model),
        "parameters_after": count_parameters(gm),
        "bias_map_values": bias_map_values,
        "macs_before": sum(v["macs"] for v in before.values()),
        "macs_after": sum(v["macs"] for v in after.values()),
        "layers": layers,
        "batchnorm_folded": [{"layer": conv, "batchnorm": bn} for conv, bn in folded],
        "batchnorm_kept": kept_bn,
        "bias_map_layers": bias_maps,
        "bias_map_note": BIAS_MAP_NOTE if bias_maps else None,
        "constant_channels_kept": kept_instead,
        "constant_channels_note": CONSTANT_CHANNELS_NOTE if kept_instead else None,
        "residual_adds": residual,
        "concatenations": concats,
        "kept_whole": opaque,
        "shared_parameters": [{"layer": a, "shares_with": b} for a, b in sorted(shared.items())],
        "inplace_rewritten": inplace_rewritten,
        "seconds": seconds,
        "counted": "parameters_after includes bias map values; MACs count Conv2d/Linear multiply-accumulates "
                   "per sample",
    }
    return SimplifyResult(gm, summary)

"""Simplify: remove pruned neurons exactly (Bragagnolo & Barbano, SoftwareX 2022; ALGORITHMS.md section 6).

    from potatura.simplify import simplify
    result = simplify(model, example_input)      # -> SimplifyResult(model, summary)

BN is folded (float64), the constant every removed neuron still emitted is folded into its
consumers (a per-position BiasMap where zero padding makes it depend on position), and channels
are removed by dependency group: a residual channel goes only when it is dead in every branch.
The result is a torch.fx GraphModule (SimplifiedGraphModule) of plain Conv2d/Linear (with bias), activations, pooling,
flatten, add and cat, plus BiasMap where listed in the summary.
"""

from potatura.simplify.layers import BiasMap
from potatura.simplify.module import SimplifiedGraphModule
from potatura.simplify.pipeline import SimplifyResult, TrainModeWarning, simplify
from potatura.simplify.report import compare_logits, count_parameters

__all__ = ["simplify", "SimplifyResult", "TrainModeWarning", "SimplifiedGraphModule", "BiasMap", "compare_logits", "count_parameters"]

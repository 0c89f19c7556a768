"""Simplify: remove pruned neurons exactly (Bragagnolo & Barbano, SoftwareX 2022; docs/algorithms.md section 6).

    from potatura.simplify import simplify
    result = simplify(model, example_input)      # -> SimplifyResult(model, summary)

BN is folded (float64), the constant every removed neuron still emitted is folded into its
consumers (a per-position BiasMap where zero padding makes it depend on position), and channels
are removed by dependency group: a residual channel goes only when it is dead in every branch.
The result is a torch.fx GraphModule (SimplifiedGraphModule) of plain Conv2d/Linear (with bias), activations, pooling,
flatten, add and cat, plus BiasMap where listed in the summary.
"""

# Lazy (PEP 562): the flow-file schema imports potatura.simplify.config, which must not pay for torch.
_EXPORTS = {
    "BiasMap": "potatura.simplify.layers", "SimplifiedGraphModule": "potatura.simplify.module",
    "SimplifyResult": "potatura.simplify.pipeline", "simplify": "potatura.simplify.pipeline",
    "TrainModeWarning": "potatura.simplify.pipeline",
    "compare_logits": "potatura.simplify.report", "count_parameters": "potatura.simplify.report",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'potatura.simplify' has no attribute {name!r}")

"""The container simplify returns: a torch.fx GraphModule without fx's per-call wrapper.

fx installs a `__call__` on every GraphModule that only re-formats errors raised inside the
generated code; it costs about 10 microseconds per call, which is several percent of a
LeNet-5 inference at batch 1. SimplifiedGraphModule calls forward through nn.Module.__call__
directly, and keeps that property across recompile() and pickling (torch.save / torch.load).
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn
from torch.fx.graph_module import reduce_graph_module


class SimplifiedGraphModule(fx.GraphModule):
    def recompile(self) -> Any:
        code = super().recompile()
        # fx set type(self).__call__ to its error-formatting wrapper; this class is private to
        # this instance (GraphModule.__new__ makes one per instance), so nothing else changes.
        type(self).__call__ = nn.Module.__call__
        return code

    def __reduce__(self):
        _, args = super().__reduce__()
        return (_rebuild_simplified, args)


def _rebuild_simplified(body: dict, import_block: str) -> SimplifiedGraphModule:
    plain = reduce_graph_module(body, import_block)
    rebuilt = SimplifiedGraphModule(plain, plain.graph, class_name=plain.__class__.__name__)
    return rebuilt.train(plain.training)


def as_simplified(gm: fx.GraphModule) -> SimplifiedGraphModule:
    """The same graph and modules in a SimplifiedGraphModule (the graph moves to the new module)."""
    name = getattr(gm, "_graphmodule_cls_name", type(gm).__name__)
    return SimplifiedGraphModule(gm, gm.graph, class_name=name).train(gm.training)

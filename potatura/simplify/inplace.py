"""In-place operators: rewrite them out of place, so that every graph node is one value.

torch.fx records `b = relu_(a)` as a node, but after it every read of `a`, or of a tensor that
shares its storage (the output of an nn.Identity, the same tensor under another name), sees the
changed values. simplify's analysis treats each node as one value, so it would read the old
ones and fold wrong constants. functionalize() therefore:

1. runs forward (the model's own code) on the example input, as the reference;
2. runs the traced graph once on the same input, keeping every value, and measures which node
   changed which input (the tensor's version counter moved) and which values share storage;
3. replaces each such node by its out-of-place form (relu_ -> relu, inplace=True -> False,
   operator.iadd -> operator.add, Tensor.add_ -> Tensor.add) and redirects every later read of
   the changed storage to it;
4. runs the rewritten graph and refuses it unless it computes forward's output.

Refused, naming the node: a change seen through a view of another shape (a slice, a reshape),
a change of a parameter or buffer, an in-place operator without an out-of-place form (copy_,
zero_, fill_, item assignment, out=). Step 4 catches what fx does not record at all: Python's
`a += b` on a traced tensor is recorded as `a + b` (fx's Proxy has no __iadd__), so a name that
aliased `a` keeps the old value in the graph; the error then names the layer whose output
forward changed in place.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from potatura.errors import UnsupportedError

_INPLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, operator.ifloordiv: operator.floordiv, operator.imod: operator.mod,
    operator.ipow: operator.pow, operator.iand: operator.and_, operator.ior: operator.or_,
    operator.ixor: operator.xor, operator.ilshift: operator.lshift, operator.irshift: operator.rshift,
    operator.imatmul: operator.matmul,
}
# Namespaces whose `name_` functions have an out-of-place `name` (torch.relu_ -> torch.relu).
_FUNCTION_NAMESPACES = (torch, F, torch.special)
# Relative difference between forward and the rewritten graph taken as "the same computation", in
# units of the dtype's epsilon: the two run the same kernels on the same values (so they agree
# bit for bit in practice); an in-place change they disagree on is many orders larger.
SAME_OUTPUT_EPSILONS = 16


@dataclass(frozen=True)
class _Value:
    """Where a node's output tensor lives: storage address and the view's geometry."""

    storage: int
    geometry: tuple


def _value_of(t: Any) -> Optional[_Value]:
    if not isinstance(t, torch.Tensor) or t.numel() == 0 or t.layout != torch.strided:
        return None
    return _Value(t.untyped_storage().data_ptr(), (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype))


class _Recorder(ShapeProp):
    """Runs the graph keeping every value alive (so that equal storage addresses mean aliasing);
    as ShapeProp, it also leaves meta['tensor_meta'] (shape, dtype) on every node."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.garbage_collect_values = False
        self.values: dict[fx.Node, _Value] = {}
        self.changed: dict[fx.Node, list[fx.Node]] = {}  # node -> the inputs it changed in place

    def run_node(self, n: fx.Node) -> Any:
        inputs = [i for i in n.all_input_nodes if isinstance(self.env.get(i), torch.Tensor)]
        versions = [self.env[i]._version for i in inputs]
        result = super().run_node(n)
        moved = [i for i, v in zip(inputs, versions) if self.env[i]._version != v]
        if moved:
            self.changed[n] = moved
        value = _value_of(result)
        if value is not None:
            self.values[n] = value
        return result


def _describe(n: fx.Node) -> str:
    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    return f"node {n.name!r} ({n.op} {target})"


def _out_of_place(gm: fx.GraphModule, n: fx.Node, done_modules: set[int]) -> bool:
    """Rewrite node `n` to its out-of-place form in place; False when there is none."""
    if n.op == "call_module":
        module = gm.get_submodule(str(n.target))
        if id(module) in done_modules:
            return True
        if getattr(module, "inplace", None) is True:
            module.inplace = False  # every call of this module now computes out of place
            done_modules.add(id(module))
            return True
        return False
    if n.op == "call_method":
        name = str(n.target)
        if name.endswith("_") and not name.startswith("_") and callable(getattr(torch.Tensor, name[:-1], None)) \
                and "out" not in n.kwargs:
            n.target = name[:-1]
            return True
        return False
    if n.op != "call_function" or "out" in n.kwargs:
        return False
    target = n.target
    if target in _INPLACE_OPERATORS:
        n.target = _INPLACE_OPERATORS[target]
        return True
    try:
        bound = inspect.signature(target).bind(*n.args, **n.kwargs)
    except (TypeError, ValueError):
        bound = None
    if bound is not None and bound.arguments.get("inplace") is True:
        bound.arguments["inplace"] = False
        n.args, n.kwargs = tuple(bound.args), dict(bound.kwargs)
        return True
    name = getattr(target, "__name__", "")
    if name.endswith("_") and not name.startswith("_"):
        for namespace in _FUNCTION_NAMESPACES:
            plain = getattr(namespace, name[:-1], None)
            if getattr(namespace, name, None) is target and callable(plain):
                n.target = plain
                return True
    return False


def _leaf_outputs_changed_in_forward(model: nn.Module, example: torch.Tensor) -> tuple[Any, list[str]]:
    """Run forward; return its output and the leaf modules whose output forward later changed in place."""
    records: list[tuple[str, torch.Tensor, int]] = []

    def hook(name):
        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                records.append((name, output, output._version))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if name and not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            out = model(example.clone())
    finally:
        for h in handles:
            h.remove()
    return out, [name for name, t, v in records if t._version != v]


def _max_relative_difference(reference: Any, candidate: Any) -> float:
    ref, cand = torch.utils._pytree.tree_leaves(reference), torch.utils._pytree.tree_leaves(candidate)
    if len(ref) != len(cand):
        return float("inf")
    worst = 0.0
    for a, b in zip(ref, cand):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return float("inf")
        if not isinstance(a, torch.Tensor):
            worst = max(worst, 0.0 if a == b else float("inf"))
            continue
        if a.shape != b.shape:
            return float("inf")
        if a.numel() == 0:
            continue
        a, b = a.detach().double(), b.detach().double()
        diff = float((a - b).abs().max())
        worst = max(worst, diff / max(float(a.abs().max()), 1e-300) if diff else 0.0)
    return worst


def _run_error(example: torch.Tensor, exc: Exception) -> UnsupportedError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UnsupportedError(f"simplify: the model does not run on an input of shape {tuple(example.shape)}: {first}")


def functionalize(gm: fx.GraphModule, model: nn.Module, example: torch.Tensor) -> list[str]:
    """Make `gm` (traced from `model`, sharing its modules) free of in-place operators; see the module doc.

    example: the input [1, ...] in the graph's (floating-point) dtype. `gm` is rewritten in place
    (and modules that had inplace=True get inplace=False, which `model` shares), and every node
    gets meta['tensor_meta'] as from ShapeProp. Returns the names of the rewritten nodes. Raises
    UnsupportedError naming the node (or layer) when an in-place change cannot be expressed
    exactly out of place, or when the model does not run on `example`.
    """
    try:
        reference, changed_layers = _leaf_outputs_changed_in_forward(model, example)
        recorder = _Recorder(gm)
        with torch.no_grad():
            recorded_out = recorder.run(example.clone())
    except UnsupportedError:
        raise
    except Exception as exc:
        raise _run_error(example, exc) from None
    values, changed = recorder.values, recorder.changed
    held = {t.untyped_storage().data_ptr() for t in list(gm.parameters()) + list(gm.buffers()) if t.numel()}
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    latest: dict[int, fx.Node] = {}  # storage -> the node holding its current value
    done_modules: set[int] = set()
    rewritten: list[str] = []
    graph_changed_storages: set[int] = set()

    def redirect(a: fx.Node) -> fx.Node:
        value = values.get(a)
        current = latest.get(value.storage) if value is not None else None
        return current if current is not None and order[a] < order[current] else a

    for n in list(gm.graph.nodes):
        own = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        moved = changed.get(n)
        n.args = fx.node.map_arg(n.args, redirect)
        n.kwargs = fx.node.map_arg(n.kwargs, redirect)
        if not moved:
            continue
        value = values.get(own) if own is not None else None
        if value is None or any(values.get(m) is None or values[m].storage != value.storage for m in moved):
            names = ", ".join(repr(m.name) for m in moved)
            raise UnsupportedError(
                f"simplify: {_describe(n)} changes {names} in place, which is not its first operand; "
                "write it out of place (simplify needs every tensor computed once)")
        if value.storage in held:
            raise UnsupportedError(
                f"simplify: {_describe(n)} changes a parameter or buffer in place; simplify needs a forward "
                "that only reads the model's parameters and buffers")
        for other, v in values.items():
            if v.storage == value.storage and v.geometry != value.geometry and order[other] < order[n] \
                    and any(order[u] > order[n] for u in other.users):
                raise UnsupportedError(
                    f"simplify: {_describe(n)} changes a tensor in place that is read later through a view of "
                    f"another shape ({_describe(other)}); write it out of place (inplace=False, a = a + b)")
        if not _out_of_place(gm, n, done_modules):
            raise UnsupportedError(
                f"simplify: {_describe(n)} changes {own.name!r} in place and has no out-of-place form simplify "
                "knows; write it out of place (inplace=False, a = a + b)")
        latest[value.storage] = n
        graph_changed_storages.add(value.storage)
        rewritten.append(n.name)
    gm.graph.lint()
    gm.recompile()

    if rewritten:
        try:
            with torch.no_grad():
                graph_out = gm(example.clone())
        except Exception as exc:
            raise _run_error(example, exc) from None
    else:  # the graph is unchanged: the recording run's output is its output
        graph_out = recorded_out
    difference = _max_relative_difference(reference, graph_out)
    if difference > SAME_OUTPUT_EPSILONS * torch.finfo(example.dtype).eps:
        recorded = {str(n.target) for n, v in values.items()
                    if n.op == "call_module" and v.storage in graph_changed_storages}
        unrecorded = [name for name in changed_layers if name not in recorded]
        where = (f"the output of layer {unrecorded[0]!r} is changed in place after it is computed, and torch.fx "
                 "does not record that change") if unrecorded else \
            "an in-place change that torch.fx does not record is the usual cause"
        raise UnsupportedError(
            f"simplify: the traced graph of {type(model).__name__} does not compute what its forward computes "
            f"(relative difference {difference:.3g}): {where} (e.g. `a += b` on a tensor also read under another "
            "name); write it out of place (a = a + b)")
    return rewritten

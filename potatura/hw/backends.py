"""The hardware backends and the one operator table of each: what quant's gate and hwgen both ask.

A `BackendSpec` names a backend, the IR operators (`potatura.hw.ir.Op`) it builds, where its
implementation lives (a "module:attribute" path, imported only by hwgen when it generates) and its
config class (a light pydantic model for `hwgen.backends.<name>`). This module imports neither:
quant (an earlier stage) reads the operator tables without importing hwgen or hls4ml.

`ONNX_OPS` says which IR operator each ONNX operator becomes (as potatura.hwgen.reader reads
it), so `unsupported_onnx_ops(backend, op_types)` answers from the ONNX graph alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from potatura.errors import ConfigError
from potatura.hw.ir import Op


@dataclass(frozen=True)
class BackendSpec:
    name: str
    ops: frozenset  # the IR operators the backend builds (Op members)
    implementation: object  # "module:attribute" of the potatura.hwgen.backend.Backend subclass (or the class)
    config: str | None = None  # "module:attribute" of its pydantic config class (None: no options)
    description: str = ""
    limits: tuple[str, ...] = ()  # what the backend does not build within an op, for messages

    def missing(self, ops: Iterable[Op]) -> list[Op]:
        """The operators in `ops` this backend does not build, in Op order."""
        wanted = set(ops)
        return [op for op in Op if op in wanted and op not in self.ops]


_SPECS: dict[str, BackendSpec] = {}


def register_spec(spec: BackendSpec, *, replace: bool = False) -> BackendSpec:
    """Add a backend (tests register toy backends; replace=True overwrites a name)."""
    if spec.name in _SPECS and not replace:
        raise ValueError(f"backend {spec.name!r} is registered already")
    _SPECS[spec.name] = spec
    return spec


def unregister_spec(name: str) -> None:
    _SPECS.pop(name, None)


def get_spec(name: str) -> BackendSpec:
    """The spec of backend `name`; an unknown name is a ConfigError listing the known ones."""
    if name not in _SPECS:
        raise ConfigError(f"unknown hardware backend {name!r}; known backends: {', '.join(_SPECS)}")
    return _SPECS[name]


def spec_names() -> list[str]:
    return list(_SPECS)


# ONNX operator -> the IR operator the QONNX reader makes of it. None: no layer of its own (layout
# only, or folded into the layer before: a constant bias Add after MatMul/Gemm joins the DENSE).
ONNX_OPS: dict[str, Op | None] = {
    "Quant": Op.QUANT, "Conv": Op.CONV2D, "Gemm": Op.DENSE, "MatMul": Op.DENSE, "Relu": Op.RELU,
    "MaxPool": Op.MAXPOOL2D, "AveragePool": Op.AVGPOOL2D, "GlobalAveragePool": Op.GLOBAL_AVGPOOL,
    "Add": Op.ADD, "Concat": Op.CONCAT, "Flatten": Op.FLATTEN, "Reshape": Op.FLATTEN,
    "Transpose": None, "Identity": None, "Dropout": None,
}


def unsupported_onnx_ops(backend: str, op_types: Iterable[str]) -> list[str]:
    """One message per ONNX operator type that `backend` cannot build (empty: it builds them all).

    op_types: the operators of a QONNX model as the quant stage exports it (Conv and Gemm carry
    their bias as an input, so an Add there is a tensor sum: Op.ADD).
    """
    spec = get_spec(backend)
    problems = []
    for op_type in sorted(set(op_types)):
        if op_type not in ONNX_OPS:
            problems.append(f"{op_type} (no hardware IR operator)")
            continue
        op = ONNX_OPS[op_type]
        if op is not None and op not in spec.ops:
            problems.append(f"{op_type} (IR {op.value}: not built by the {backend} backend)")
    return problems


HLS4ML = register_spec(BackendSpec(
    name="hls4ml",
    ops=frozenset({Op.INPUT, Op.QUANT, Op.CONV2D, Op.DENSE, Op.RELU, Op.MAXPOOL2D, Op.FLATTEN}),
    implementation="potatura.hwgen.hls4ml:Hls4mlBackend",
    config="potatura.hwgen.hls4ml.config:Hls4mlConfig",
    description="hls4ml 1.3 VivadoAccelerator projects (AXI stream), checked bit-exact in C simulation",
    limits=("Conv: 2D, group 1, dilation 1", "MaxPool: no padding",
            "a chain of layers (no residual adds, no concatenations yet)"),
))


HLSINF = register_spec(BackendSpec(
    name="hlsinf",
    ops=frozenset({Op.INPUT, Op.QUANT, Op.CONV2D, Op.DENSE, Op.RELU, Op.MAXPOOL2D, Op.ADD, Op.GLOBAL_AVGPOOL,
                   Op.FLATTEN}),
    implementation="potatura.hwgen.hlsinf:HlsinfBackend",
    config="potatura.hwgen.hlsinf.config:HlsinfConfig",
    description="HLSinf-style fused 3x3 conv engine, layer by layer from DDR (Zynq PYNQ overlay, Alveo XRT), "
                "checked bit-exact in C simulation",
    limits=("Conv: 3x3 or 1x1, stride 1 or 2, padding 0 or 1", "MaxPool: 2x2 stride 2, right after a conv",
            "ReLU/Quant: right after a conv, dense or residual add (one requantization each)",
            "Add: a residual of two tensors, fused after a conv", "GlobalAveragePool: power-of-two windows"),
))

"""The hls4ml backend: hls4ml 1.3 VivadoAccelerator projects (AXI stream), csim-checked bit-exact.

Modules:
    lowering   the IR as hls4ml builds it (Relu+Quant merge, hls4ml names), QuantizedNetwork
    fitter     per-layer strategy and reuse factor for a board, estimated resources and cycles
    convert    the hls4ml config with potatura's exact types, conversion, type check, C simulation
    project    one project directory: hls4ml project, build files, reports, design.json
    compat     every use of hls4ml's private API
    config     `hwgen.backends.hls4ml` options (io_type, strategy, reuse_factor)

Nothing here imports hls4ml until a project is converted (importing the package is cheap).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from potatura.boards.catalog import Board
from potatura.hw.ir import Graph
from potatura.hwgen.backend import Backend, ProjectResult


class Hls4mlBackend(Backend):
    name = "hls4ml"

    def check(self, graph: Graph) -> list[str]:
        """hls4ml builds a chain: one consumer per layer (no residual adds or concatenations yet)."""
        return [f"{layer.name} ({layer.op.value}): its result feeds {len(graph.consumers(layer.name))} layers; "
                "the hls4ml backend builds a chain of layers (no branches)"
                for layer in graph.layers if len(graph.consumers(layer.name)) > 1]

    def passes(self) -> list:
        from potatura.hwgen.hls4ml.lowering import PASSES

        return list(PASSES)

    def network(self, source) -> Any:
        """The QuantizedNetwork of a QonnxGraph: checked against the operator table, lowered."""
        from potatura.hwgen.hls4ml.lowering import lower_network

        return lower_network(source)

    def fit(self, graph_or_net, board: Board, cfg: Any):
        """The fitter's choice for `board` (cfg: Hls4mlConfig, plus max_utilization of hwgen)."""
        from potatura.hwgen.hls4ml.fitter import fit_network
        from potatura.hwgen.hls4ml.lowering import QuantizedNetwork
        from potatura.hwgen.hls4ml.project import resolve_io_type

        net = graph_or_net
        if isinstance(graph_or_net, Graph):
            net = QuantizedNetwork(model=None, source=graph_or_net.name, graph=graph_or_net)
        return fit_network(net, board, resolve_io_type(net, cfg.io_type), getattr(cfg, "max_utilization", 0.8),
                           cfg.reuse_factor, cfg.strategy)

    def generate(self, source, board: Board, out_dir: Path, cfg: Any, *, x: np.ndarray | None = None,
                 reference: np.ndarray | None = None, build: bool = False,
                 on_step: Callable[[str], None] | None = None, max_utilization: float = 0.8,
                 keep_model: bool = False) -> ProjectResult:
        from potatura.hwgen.hls4ml.lowering import QuantizedNetwork
        from potatura.hwgen.hls4ml.project import generate_project

        net = source if isinstance(source, QuantizedNetwork) else self.network(source)
        return generate_project(net, board, out_dir, io_type=cfg.io_type, max_utilization=max_utilization,
                                reuse_factor=cfg.reuse_factor, strategy=cfg.strategy, x_nchw=x,
                                reference=reference, build=build, keep_model=keep_model,
                                fifo_depths=getattr(cfg, "fifo_depths", "sized"), on_step=on_step)

    def verify(self, result: ProjectResult, x: np.ndarray, reference: np.ndarray, net=None):
        """The hls4ml C simulation of result's model (generated with keep_model=True) vs `reference`."""
        from potatura.hwgen.hls4ml.convert import run_csim

        if result.hls_model is None or net is None:
            raise ValueError("hls4ml verify needs the compiled model (generate with keep_model=True) and its network")
        return run_csim(result.hls_model, net, x, reference)[0]

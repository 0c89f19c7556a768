"""The HLSinf-style backend: one fused 3x3 conv engine, layers run one call at a time from DDR.

After the architecture of UPV's HLSinf (docs/hardware.md section 3), written for potatura:

Modules:
    planner   IR graph -> kernel calls (fusion, I_ITER/O_ITER, row frames), GHWC and filter packers,
              the engine's cycle model per call
    fitter    CPI x CPO, HO_MAX x WO_MAX and word widths per board, estimated resources, memory ports
    csim      the engine's C++ built with g++ and hls4ml's ap_types, driven call by call (ctypes)
    project   one project directory: sources, Zynq/Alveo build files, drivers, design.json
    config    `hwgen.backends.hlsinf` options (cpi, cpo, ho_max, wo_max, data_bits)

The kernel itself is potatura/hwgen/templates/hlsinf/hlsinf_kernel.h.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from potatura.boards.catalog import Board
from potatura.hw.ir import Graph
from potatura.hwgen.backend import Backend, ProjectResult


def _graph(source) -> Graph:
    return source if isinstance(source, Graph) else source.graph


class HlsinfBackend(Backend):
    name = "hlsinf"

    def check(self, graph: Graph) -> list[str]:
        """What the engine cannot map within supported operators (kernel sizes, strides, pooling, widths)."""
        from potatura.hwgen.hlsinf.planner import check_graph

        return check_graph(graph)

    def fit(self, graph: Graph, board: Board, cfg: Any = None):
        from potatura.hwgen.hlsinf.fitter import fit_engine

        return fit_engine(_graph(graph), board, cfg, getattr(cfg, "max_utilization", 0.8))

    def generate(self, source, board: Board, out_dir: Path, cfg: Any = None, *, x: np.ndarray | None = None,
                 reference: np.ndarray | None = None, build: bool = False, max_utilization: float = 0.8,
                 on_step: Callable[[str], None] | None = None) -> ProjectResult:
        from potatura.hwgen.hlsinf.project import generate_project

        return generate_project(_graph(source), board, out_dir, cfg, x=x, reference=reference, build=build,
                                max_utilization=max_utilization, on_step=on_step)

    def verify(self, result: ProjectResult, x: np.ndarray, reference: np.ndarray, graph: Graph | None = None):
        """The engine's C simulation of result's plan on x vs reference (exact)."""
        from potatura.hw.ir import load_design
        from potatura.hwgen.hlsinf.project import verify_plan

        graph = graph or load_design(result.out_dir).graph
        return verify_plan(result.fit, graph, Path(result.out_dir) / "csim", x, reference)

"""The simulator's model of an HLSinf-style project (design.json with backend "hlsinf").

Functional: the IR graph on integer codes (potatura.sim.functional, the same reference ops as for
every design), which the engine's C simulation matches bit for bit (tests/hwgen/test_hlsinf.py).

Timing: the engine runs the kernel calls of the plan (design.backend_info["plan"]) one after the
other, one sample at a time. A call's compute time is the engine's schedule
(potatura.hwgen.hlsinf.planner.call_cycles, docs/hardware.md section 3):

    compute = O_ITER*I_ITER*(H+PT+PB)*(W+PL+PR) + O_ITER*L_PIPE          (cycles)

and its memory time is the bytes it moves (planner.call_ddr_bytes: input rows once per output
group, filters and biases, output rows) at the board's DDR bandwidth (the catalog's figure). Reads
and writes overlap the computation (the engine is a dataflow of read -> compute -> write), so a
call takes max(compute, memory) cycles; the difference is reported as the call's memory stall.
The per-call fixed host cost measured on HLSinf (~0.8 ms, docs/hardware.md) is host software, not
engine cycles: it is left out and the report says so.
"""

from __future__ import annotations

import math

from collections.abc import Callable

import numpy as np

from potatura.hw.ir import Design, Op
from potatura.hwgen.hlsinf.planner import KernelCall, Plan, call_ddr_bytes, plan_graph
from potatura.sim.api import Accelerator, CycleReport
from potatura.sim.errors import SimError

KIND = ("simulated (potatura.sim model of the HLSinf-style engine: schedule O_ITER*I_ITER*(H+PT+PB)*(W+PL+PR) "
        "+ O_ITER*L_PIPE per call, DDR bytes at the board bandwidth)")


class HlsinfCycleReport(CycleReport):
    def to_dict(self) -> dict:
        d = super().to_dict()
        d["kind"] = KIND
        return d


class HlsinfAccelerator(Accelerator):
    """An HLSinf-style project: functional model (the IR graph on codes) + the engine's call schedule."""

    def __init__(self, design: Design, board=None):
        if design.backend != "hlsinf" or "plan" not in design.backend_info:
            raise SimError(f"sim: design of backend {design.backend!r} has no HLSinf plan (backend_info.plan)")
        self.design = design
        self.graph = design.graph
        self.clock_mhz = float(design.clock_mhz)
        self.plan = Plan.from_dict(design.backend_info["plan"])
        self._board = board

    def _bandwidth(self) -> tuple[float, str]:
        """DDR bytes per second and where the figure comes from."""
        board = self._board
        if board is None:
            from potatura.boards.catalog import get_board

            try:
                board = get_board(self.design.board)
            except Exception:  # noqa: BLE001 (an unknown board: no bandwidth limit known)
                return float("inf"), "no board figure: memory time not modelled"
        return board.bandwidth_gbs * 1e9, f"board memory {board.bandwidth_gbs:g} GB/s from the catalog ({board.name})"

    def call_timing(self) -> list[dict]:
        """Per call: compute (schedule), memory (DDR bytes / bandwidth) and total cycles."""
        bps, _ = self._bandwidth()
        hz = self.clock_mhz * 1e6
        rows = []
        for index, call in enumerate(self.plan.calls):
            moved = call_ddr_bytes(call, self.plan.engine)
            memory = math.ceil(moved["total"] / bps * hz) if math.isfinite(bps) else 0
            compute = call.cycles
            rows.append({"index": index, "layer": call.layer, "frame": call.frame, "compute_cycles": compute,
                         "memory_cycles": memory, "cycles": max(compute, memory), "bytes": moved["total"],
                         "i_iter": call.i_iter, "o_iter": call.o_iter, "trip_count":
                         call.o_iter * call.i_iter * call.padded_pixels})
        return rows

    def cycles(self, batch: int = 1, size_fifos: bool = True) -> CycleReport:
        """Timing of `batch` samples, one after the other through every call (simulated)."""
        if batch < 1:
            raise SimError(f"sim: batch must be >= 1, got {batch}")
        timing = self.call_timing()
        latency = sum(t["cycles"] for t in timing)
        per_layer = [{"name": f"call{t['index']}", "layer": t["layer"], "op": "hlsinf_call", "ii": 1,
                      "latency": t["cycles"], "trip_count": t["trip_count"],
                      "stall_cycles": t["cycles"] - t["compute_cycles"], "stall_in_cycles": 0,
                      "stall_out_cycles": t["cycles"] - t["compute_cycles"], "frame": t["frame"],
                      "compute_cycles": t["compute_cycles"], "memory_cycles": t["memory_cycles"],
                      "ddr_bytes": t["bytes"], "i_iter": t["i_iter"], "o_iter": t["o_iter"]} for t in timing]
        return HlsinfCycleReport(latency, latency, latency * batch, self.clock_mhz, batch, per_layer, [], self.dma(),
                                 "hlsinf (layer by layer from DDR)")

    # --- one call at a time (the emulated board's engine) ---
    def packed_weights(self) -> dict:
        """Packed filters and biases per layer, from the planner's packer on the design's graph (cached)."""
        if not hasattr(self, "_packed"):
            self._packed = plan_graph(self.graph, self.plan.engine, pack=True).weights
        return self._packed

    def call_outputs(self, call: KernelCall, read_tensor: Callable[[str], np.ndarray]) -> np.ndarray:
        """The codes one kernel call writes: rows out_row0 .. out_row0+out_rows of its output tensor,
        (out_rows, out_w, C) int64 (a vector: (1, 1, n)); `call_tensor` says how."""
        return self.call_tensor(call, read_tensor)[call.out_row0:call.out_row0 + call.out_rows]

    def call_tensor(self, call: KernelCall, read_tensor: Callable[[str], np.ndarray]) -> np.ndarray:
        """The whole output tensor of the fused layer `call` computes a row frame of, (H, W, C) int64.

        read_tensor(name) -> (H, W, C) codes of a plan tensor as it lies in memory now (the call's input
        and residual). The fused layers run on the functional model (potatura.sim.functional, the same
        reference ops as `run`); a FLATTEN between a tensor and a dense layer is evaluated as a view."""
        from potatura.sim.functional import run_layer

        graph = self.graph
        values: dict[str, np.ndarray] = {}

        def value(name: str) -> np.ndarray:
            if name not in values:
                layer = graph.layer(name)
                if name in self.plan.tensors and name not in call.fused:
                    values[name] = np.asarray(read_tensor(name), dtype=np.int64).reshape(1, *layer.out_shape)
                elif layer.op == Op.FLATTEN:
                    values[name] = run_layer(layer, [value(layer.inputs[0])], [graph.layer(layer.inputs[0]).result_type])
                else:
                    raise SimError(f"sim: call of {call.layer} needs {name!r}, which is neither in memory nor fused")
            return values[name]

        for name in call.fused:
            layer = graph.layer(name)
            values[name] = run_layer(layer, [value(p) for p in layer.inputs],
                                     [graph.layer(p).result_type for p in layer.inputs])
        t = self.plan.tensors[call.output]
        return np.asarray(values[call.output], dtype=np.int64).reshape(t.h, t.w, t.c)

    def size_fifos(self, samples: int = 0) -> dict[str, int]:
        return {}  # no FIFOs between layers: every tensor goes through DDR

    def dma(self) -> dict:
        """DDR traffic of one sample: the input and output tensors, and everything the calls move."""
        bps, source = self._bandwidth()
        e = self.plan.engine
        words_in = self.plan.tensors[self.plan.input].words(e.cpi)
        words_out = self.plan.tensors[self.plan.output].words(e.cpi)
        hz = self.clock_mhz * 1e6
        bytes_in, bytes_out = words_in * e.data_bits // 8, words_out * e.data_bits // 8
        ddr = self.plan.ddr_bytes()

        def cycles(n: int) -> int:
            return math.ceil(n / bps * hz) if math.isfinite(bps) else 0

        return {"bytes_in": bytes_in, "bytes_out": bytes_out, "cycles_in": cycles(bytes_in),
                "cycles_out": cycles(bytes_out), "bytes_per_second": bps, "bandwidth_source": source,
                "ddr_bytes_per_sample": ddr, "ddr_cycles_per_sample": cycles(ddr["total"]),
                "note": "host cost per call (~0.8 ms measured on HLSinf, docs/hardware.md) not included"}

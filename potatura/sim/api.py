"""The simulator's small stable API (used by deploy's emulated board and the bench stage).

    from potatura.sim.api import load_project, Accelerator, CycleReport
    acc = load_project(project_dir)          # a hwgen project dir holding design.json
    y_codes = acc.run(acc.encode(x_nchw))    # bit-exact with hls4ml's csim
    report = acc.cycles(batch=8)             # latency, interval, stalls, FIFO occupancy (simulated)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from potatura.hw.ir import Design, Op, load_design
from potatura.hw.types import FixedType
from potatura.sim import fixed
from potatura.sim.engine import Trace, simulate
from potatura.sim.errors import SimError
from potatura.sim.functional import run_layer
from potatura.sim.schedule import AXI_WORD_BITS, Network

__all__ = ["Accelerator", "CycleReport", "load_project", "design_cycles", "sized_fifo_depths", "DeadlockError"]

from potatura.sim.errors import DeadlockError  # noqa: E402  (re-exported)


@dataclass
class CycleReport:
    """Timing of `batch` samples streamed back to back (simulated), in cycles of the accelerator clock."""

    latency_cycles: int  # one sample: first input word in -> last output word out
    interval_cycles: int  # between consecutive samples in steady state
    total_cycles: int  # the whole batch: first input word -> last output word
    clock_mhz: float
    batch: int
    per_layer: list[dict] = field(default_factory=list)  # name, op, ii, latency, trip_count, stall_cycles
    fifos: list[dict] = field(default_factory=list)  # name, depth, max_occupancy, sized_depth
    dma: dict = field(default_factory=dict)  # bytes_in, bytes_out, cycles_in, cycles_out, bandwidth source
    io_type: str = ""

    def seconds(self, cycles: float) -> float:
        return float(cycles) / (self.clock_mhz * 1e6)

    def to_dict(self) -> dict:
        return {"latency_cycles": self.latency_cycles, "interval_cycles": self.interval_cycles,
                "total_cycles": self.total_cycles, "clock_mhz": self.clock_mhz, "batch": self.batch,
                "io_type": self.io_type,
                "latency_seconds": self.seconds(self.latency_cycles),
                "interval_seconds": self.seconds(self.interval_cycles),
                "throughput_samples_per_second": (self.clock_mhz * 1e6 / self.interval_cycles
                                                  if self.interval_cycles else None),
                "per_layer": self.per_layer, "fifos": self.fifos, "dma": self.dma,
                "kind": "simulated (potatura.sim cycle model of the hls4ml dataflow)"}


class Accelerator:
    """A generated accelerator: functional model (integer codes) + timing model (cycles)."""

    def __init__(self, design: Design, board=None):
        self.design = design
        self.graph = design.graph
        self.clock_mhz = float(design.clock_mhz)
        self.network = Network(design)
        self._board = board

    # --- I/O contract ---
    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.input.shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.output.shape)

    @property
    def input_type(self) -> FixedType:
        return self.graph.input.type

    @property
    def output_type(self) -> FixedType:
        return self.graph.output.type

    def encode(self, x) -> np.ndarray:
        """Host-side encoding: float (N, C, H, W) or (N, n) -> (N, *input_shape) int64 codes.

        NHWC inputs are transposed from NCHW; values are converted as the AXI wrapper does
        (float word -> ap_fixed with the input type's rounding and saturation).
        """
        x = np.asarray(x, dtype=np.float64)
        if self.graph.input.layout == "NHWC" and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        x = x.reshape(len(x), *self.input_shape)
        # The wrapper's words are float32: a float64 input is first rounded to float32.
        return fixed.from_float(x.astype(np.float32), self.input_type)

    def decode(self, y_codes) -> np.ndarray:
        return fixed.to_float(np.asarray(y_codes), self.output_type)

    # --- functional ---
    def run(self, x_codes) -> np.ndarray:
        """(N, *input_shape) int64 codes -> (N, *output_shape) int64 codes, bit-exact with csim."""
        x = np.asarray(x_codes)
        if x.shape[1:] != self.input_shape:
            raise SimError(f"sim: inputs of shape {list(x.shape[1:])}, the accelerator takes {list(self.input_shape)}")
        t = self.input_type
        if x.size and (int(x.min()) < t.min_code or int(x.max()) > t.max_code):
            raise SimError(f"sim: input codes in [{x.min()}, {x.max()}] exceed {t.ap()}")
        values: dict[str, np.ndarray] = {}
        types: dict[str, FixedType] = {}
        for layer in self.graph.layers:
            if layer.op == Op.INPUT:
                values[layer.name] = fixed.as_codes(x)
            else:
                values[layer.name] = run_layer(layer, [values[p] for p in layer.inputs],
                                               [types[p] for p in layer.inputs])
            types[layer.name] = layer.result_type
        return np.asarray(values[self.graph.output.layer]).reshape(len(x), *self.output_shape)

    # --- timing ---
    def trace(self, batch: int = 1, depths=None) -> Trace:
        return simulate(self.network.modules, self.network.fifos, batch, depths)

    def _latency_interval(self, tr: Trace, batch: int) -> tuple[int, int, int]:
        net = self.network
        i_in, i_out = net.module_index("axi_in"), net.module_index("axi_out")
        start = tr.first_start[i_in]
        end = tr.last_end[i_out]
        latency = int(end[0] - start[0])
        interval = int(end[-1] - end[-2]) if batch > 1 else latency
        return latency, interval, int(end[-1] - start[0])

    def cycles(self, batch: int = 1, size_fifos: bool = True) -> CycleReport:
        """Timing of `batch` samples streamed back to back (simulated).

        per_layer stall_cycles = stall_in (a step waited for an input token: starved, the pipeline
        filling included) + stall_out (a write waited for a full FIFO: back-pressure). FIFO
        sized_depth: `size_fifos` (computed once per accelerator) unless size_fifos is False.
        """
        if batch < 1:
            raise SimError(f"sim: batch must be >= 1, got {batch}")
        net = self.network
        tr = self.trace(batch)
        latency, interval, total = self._latency_interval(tr, batch)
        if batch == 1:
            # The interval needs two samples: simulate them (the report's other figures stay batch 1).
            interval = self._latency_interval(self.trace(2), 2)[1]
        sized = self.size_fifos() if size_fifos else {}
        unbounded_occ = self._unbounded_occupancy()
        per_layer = []
        for i, m in enumerate(net.modules):
            per_layer.append({"name": m.name, "layer": net.module_layer[i], "op": m.op, "ii": m.ii,
                              "latency": m.latency, "trip_count": m.trip_count,
                              "stall_cycles": int(tr.stall_in[i] + tr.stall_out[i]),
                              "stall_in_cycles": int(tr.stall_in[i]), "stall_out_cycles": int(tr.stall_out[i]),
                              **m.info})
        fifos = []
        for i, f in enumerate(net.fifos):
            fifos.append({"name": f.name, "depth": f.depth, "tokens_per_sample": f.tokens_per_sample,
                          "max_occupancy": tr.max_occupancy(i),
                          "unbounded_max_occupancy": unbounded_occ[i],
                          "sized_depth": sized.get(f.name)})
        return CycleReport(latency, interval, total, self.clock_mhz, batch, per_layer, fifos, self.dma(), net.io_type)

    SIZING_SAMPLES = 3  # samples streamed back to back while sizing: the first, and two in steady state

    def _unbounded_occupancy(self) -> list[int]:
        if getattr(self, "_occupancy", None) is None:
            tr = self.trace(self.SIZING_SAMPLES, [None] * len(self.network.fifos))
            self._occupancy = [tr.max_occupancy(i) for i in range(len(self.network.fifos))]
        return self._occupancy

    def core_cycles(self, batch: int = 3) -> tuple[int, int]:
        """(latency, interval) of the layers alone, the AXI-stream wrapper left out: the figures a C-synthesis
        report of hls4ml's plain top function (Vivado backend) gives. Latency: first layer's first step
        to the cycle the last output token is written, first sample; interval: the busiest layer's
        cycles per sample."""
        net = self.network
        core = [i for i, m in enumerate(net.modules) if m.op not in ("axi_in", "axi_out")]
        tr = self.trace(batch)
        start = min(int(tr.first_start[i, 0]) for i in core)
        out = net.fifos[net.modules[net.module_index("axi_out")].program[-1].reads[0]]
        end = int(tr.writes[net.fifos.index(out)][out.tokens_per_sample - 1])
        interval = max(sum(step.busy for step in net.modules[i].program) for i in core)
        return end - start, interval

    def size_fifos(self, samples: int = SIZING_SAMPLES) -> dict[str, int]:
        """The smallest depth of every FIFO keeping the latency and interval of unbounded FIFOs.

        Greedy: FIFO by FIFO (in stream order), binary search of the depth in [1, its unbounded
        maximum occupancy] with the FIFOs already sized at their depth and the others unbounded; the
        unbounded maximum occupancy always works (every write then finds its slot free). Computed
        once per accelerator.
        """
        cached = getattr(self, "_sized", None)
        if cached is not None and cached[0] == samples:
            return dict(cached[1])
        net = self.network
        n = len(net.fifos)
        unbounded = self.trace(samples, [None] * n)
        goal = self._latency_interval(unbounded, samples)[:2]
        depths: list[Optional[int]] = [None] * n
        for i in range(n):
            hi = max(1, unbounded.max_occupancy(i))
            lo = 1
            while lo < hi:
                mid = (lo + hi) // 2
                trial = list(depths)
                trial[i] = mid
                try:
                    ok = self._latency_interval(self.trace(samples, trial), samples)[:2] == goal
                except DeadlockError:
                    ok = False
                if ok:
                    hi = mid
                else:
                    lo = mid + 1
            depths[i] = lo
        sized = {f.name: int(d) for f, d in zip(net.fifos, depths)}
        self._sized = (samples, sized)
        return dict(sized)

    def dma(self) -> dict:
        """Off-chip transfers of one sample: AXI DMA words in and out at the board's memory bandwidth."""
        words_in = math.prod(self.input_shape)
        words_out = math.prod(self.output_shape)
        out_bits = 32 if self.output_type.float_exact(24) else 64
        bytes_in, bytes_out = words_in * AXI_WORD_BITS // 8, words_out * out_bits // 8
        board = self._board
        if board is None:
            try:
                from potatura.boards.catalog import get_board

                board = get_board(self.design.board)
            except Exception:  # an unknown board: the stream word rate alone
                board = None
        stream_bps = self.clock_mhz * 1e6 * AXI_WORD_BITS / 8
        mem_bps = board.bandwidth_gbs * 1e9 if board is not None else float("inf")
        rate = min(stream_bps, mem_bps)
        hz = self.clock_mhz * 1e6
        return {"bytes_in": bytes_in, "bytes_out": bytes_out,
                "cycles_in": math.ceil(bytes_in / rate * hz), "cycles_out": math.ceil(bytes_out / rate * hz),
                "bytes_per_second": rate,
                "bandwidth_source": (f"min(AXI stream {AXI_WORD_BITS} bits x {self.clock_mhz:g} MHz, board memory "
                                     f"{board.bandwidth_gbs:g} GB/s from the catalog ({self.design.board}))"
                                     if board is not None else f"AXI stream {AXI_WORD_BITS} bits x clock")}


def load_project(project_dir) -> Accelerator:
    """The accelerator of a hwgen project directory (its design.json)."""
    design = load_design(Path(project_dir))
    if design.backend == "hlsinf":  # one engine run layer by layer from DDR: its own timing model
        from potatura.sim.hlsinf import HlsinfAccelerator

        return HlsinfAccelerator(design)
    return Accelerator(design)


def design_cycles(design: Design) -> dict:
    """Simulated cycles of a design as the fitter reports them (its cycle column): latency and interval
    of the accelerator (AXI wrapper included) and of the layers alone (`core_*`, comparable with an
    HLS C-synthesis report), and each layer's cycles per sample (the busy cycles of its modules)."""
    acc = Accelerator(design)
    report = acc.cycles(batch=2, size_fifos=False)
    core_latency, core_interval = acc.core_cycles()
    per_layer: dict[str, int] = {}
    for name, module in zip(acc.network.module_layer, acc.network.modules):
        if module.op in ("axi_in", "axi_out"):
            continue
        per_layer[name] = per_layer.get(name, 0) + sum(step.busy for step in module.program)
    return {"latency_cycles": report.latency_cycles, "interval_cycles": report.interval_cycles,
            "core_latency_cycles": core_latency, "core_interval_cycles": core_interval,
            "per_layer_cycles": per_layer, "kind": "simulated (potatura.sim)"}


def sized_fifo_depths(design: Design) -> dict[str, int]:
    """The smallest FIFO depths keeping the latency and interval of unbounded FIFOs, keyed like
    Design.fifo_depths: the IR name of the layer writing the stream ("<layer>_pad" for the zero
    padding hls4ml puts before a padded conv/pool, "<layer>-><consumer>" for a clone's copies).
    What hwgen writes into a project (hls4ml: the `#pragma HLS STREAM depth` of each layer's output)."""
    return Accelerator(design).size_fifos()

"""The fitter's cycles, from the simulator (potatura.sim): the project's one timing model.

Two uses, both through potatura.sim's library modules (schedule, engine, api; never its stage):

- per layer choice (strategy, reuse factor) while the fitter searches: the layer's modules as the
  simulator schedules them (potatura.sim.schedule.Network), without running the engine: `busy`
  cycles per sample (its busiest module's steps' initiation intervals summed: its share of the interval)
  and `fill` (cycles from its first step to its first write, unstalled). Building the schedule of a
  LeNet-5 takes well under a millisecond, so every candidate is scheduled, and each (layer,
  strategy, RF) only once (`SimCycles`' cache);
- the chosen design: a full simulation (potatura.sim.api.design_cycles: latency and interval of
  the dataflow with its FIFOs, AXI wrapper included) and the FIFO depths the simulator sizes
  (potatura.sim.api.sized_fifo_depths), which the project writes into hls4ml's stream pragmas.

A full simulation per candidate (~0.1 s for the digits LeNet-5, hundreds of candidates) would make
the fitter slow; the module schedule gives each layer's figures exactly as the full simulation
builds them, only the interactions between layers (stalls, FIFO back-pressure) are left to the
final simulation.
"""

from __future__ import annotations

from potatura.boards.catalog import Board
from potatura.hw.ir import Design, Graph, Layer

CYCLES_SOURCE = ("simulated (potatura.sim: per layer from its module schedule, interval and latency from a "
                 "simulation of the chosen design)")


def design_for(graph: Graph, board: Board, io_type: str, layer_choices: dict[str, dict],
               fifo_depths: dict[str, int] | None = None, backend_info: dict | None = None) -> Design:
    """The hls4ml Design of a graph with these per-layer choices on `board`."""
    return Design(graph=graph, backend="hls4ml", board=board.name, clock_mhz=board.clock_mhz,
                  layer_choices=layer_choices, fifo_depths=dict(fifo_depths or {}),
                  backend_info=dict(backend_info or {}, io_type=io_type))


def _first_write(program) -> int:
    t = 0
    for step in program:
        if step.writes:
            return t + step.depth
        t += step.busy
    return t


class SimCycles:
    """A fitter cycles model (fitter.CyclesModel) backed by the simulator's module schedule.

    Called as (layer, io_type, strategy, reuse_factor) -> (busy cycles per sample, fill cycles);
    cached per (layer, io_type, strategy, reuse factor).
    """

    def __init__(self, graph: Graph, board: Board):
        self.graph = graph
        self.board = board
        self._cache: dict[tuple, tuple[int, int]] = {}
        self.schedules_built = 0

    def _base_choices(self, io_type: str) -> dict[str, dict]:
        return {layer.name: ({"io_type": io_type, "strategy": "Latency", "reuse_factor": 1,
                              "parallelization_factor": 1} if layer.has_weights else {"io_type": io_type})
                for layer in self.graph.layers}

    def _schedule(self, io_type: str, choices: dict[str, dict]) -> dict[str, tuple[int, int]]:
        from potatura.sim.schedule import Network

        network = Network(design_for(self.graph, self.board, io_type, choices))
        self.schedules_built += 1
        out: dict[str, tuple[int, int]] = {}
        for name, module in zip(network.module_layer, network.modules):
            if module.op in ("axi_in", "axi_out", "clone"):
                continue
            busy, fill = out.get(name, (0, 0))
            # A layer's modules (zero padding + conv) are dataflow processes of their own: the layer's
            # share of the interval is its busiest module's, its fill the sum of theirs.
            out[name] = (max(busy, sum(step.busy for step in module.program)), fill + _first_write(module.program))
        return out

    def __call__(self, layer: Layer, io_type: str, strategy: str | None = None,
                 reuse_factor: int | None = None) -> tuple[int, int]:
        key = (layer.name, io_type, strategy, reuse_factor)
        if key not in self._cache:
            choices = self._base_choices(io_type)
            if layer.has_weights:
                choices[layer.name].update(strategy=strategy or "Latency", reuse_factor=int(reuse_factor or 1))
                self._cache[key] = self._schedule(io_type, choices).get(layer.name, (0, 0))
            else:
                # Layers without weights have one configuration: schedule them all at once.
                for name, figures in self._schedule(io_type, choices).items():
                    self._cache.setdefault((name, io_type, None, None), figures)
                self._cache.setdefault(key, (0, 0))  # no module of its own (flatten: an alias)
        return self._cache[key]


def simulate_design(design: Design) -> dict:
    """Latency and interval of the design (simulated): potatura.sim.api.design_cycles."""
    from potatura.sim.api import design_cycles

    return design_cycles(design)


def sized_depths(design: Design) -> dict[str, int]:
    """The simulator's smallest FIFO depths keeping unbounded FIFOs' latency and interval (io_stream)."""
    from potatura.sim.api import sized_fifo_depths

    return sized_fifo_depths(design)

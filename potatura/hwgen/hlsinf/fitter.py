"""Fit the HLSinf-style engine to a board: CPI x CPO, HO_MAX x WO_MAX, word widths, memory ports.

Every resource figure here is potatura's estimate (labelled "estimated"), not a synthesis result:

- DSP: one DSP48 per multiply-accumulate lane (CPI*CPO*9 lanes: activations <= 25 bits, weights
  <= 18 bits fit one DSP48's ports; wider operands take two);
- BRAM18: the accumulator buffer (HO_MAX*WO_MAX words per output lane, CPO banks of 512 x 36),
  the 3-row line buffer (3*CPI banks of WO_MAX+2 pixels) and 2 burst buffers per AXI master port;
- LUT/FF: per MAC lane (adder tree, pipeline registers) plus a fixed share for the AXI masters and
  the control (potatura's assumption: LUT_PER_MAC, FF_PER_MAC, *_FIXED below).

The engine configurations tried are those HLSinf publishes (docs/hardware.md section 3: 4x4 ... 32x32):
the fitter takes the one with the most MAC lanes within max_utilization of the board's DSPs, then
the largest square HO_MAX = WO_MAX that fits the BRAM left. The memory bandwidth the engine asks
(CPI activation words a cycle) is reported against the board's; the simulator charges the DDR time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from potatura.boards.catalog import Board
from potatura.errors import UnsupportedError
from potatura.hw.ir import Graph, Op
from potatura.hw.types import FixedType
from potatura.hwgen.hlsinf.planner import EngineConfig, Plan, plan_graph

CONFIGS = ((4, 4), (4, 8), (8, 8), (16, 8), (16, 16), (32, 16), (32, 32))  # (CPI, CPO), docs/hardware.md section 3
FRAME_SIZES = (256, 128, 64, 32, 16, 8)
LUT_PER_MAC, FF_PER_MAC = 24, 40
LUT_FIXED, FF_FIXED = 12_000, 15_000
BRAM18_WORDS_36 = 512  # a BRAM18 as 512 x 36
AXI_PORTS = ("in", "weights", "add", "out")
SOURCE = ("estimated (potatura's engine model: 1 DSP48 per MAC lane, BRAM18 for the accumulator/line/burst "
          "buffers, LUT/FF per lane plus a fixed share; not synthesized)")


def _word_bits(types: list[FixedType], choices: tuple[int, ...]) -> int:
    need = max((t.width + (0 if t.signed else 1)) for t in types)
    for bits in choices:
        if need <= bits:
            return bits
    return need


def word_widths(graph: Graph) -> dict[str, int]:
    """data_bits (every stored tensor), pixel_bits (every conv/dense input), weight_bits, acc_bits."""
    stored = [graph.layers[0].result_type] + [layer.result_type for layer in graph.layers[1:]]
    compute = graph.compute_layers
    if not compute:
        raise UnsupportedError(f"hlsinf: graph {graph.name} has no conv or dense layer for the engine")
    return {"data_bits": _word_bits(stored, (8, 16, 32)),
            "pixel_bits": _word_bits([layer.input_type for layer in compute], (8, 16, 25)),
            "weight_bits": _word_bits([layer.weight_type for layer in compute], (8, 16)),
            "acc_bits": 32 if max(layer.accum_type.width for layer in compute) <= 32 else 64}


def estimate_resources(engine: EngineConfig) -> dict[str, int]:
    lanes = engine.cpi * engine.cpo * 9
    dsp_per_lane = 1 if engine.pixel_bits <= 25 and engine.weight_bits <= 18 else 2
    acc_banks = engine.cpo * math.ceil(engine.ho_max * engine.wo_max / BRAM18_WORDS_36) * math.ceil(engine.acc_bits / 36)
    line_depth = 1024 if engine.pixel_bits <= 18 else BRAM18_WORDS_36
    line_banks = 3 * engine.cpi * math.ceil((engine.wo_max + 2) / line_depth)
    return {"dsp": lanes * dsp_per_lane, "bram18": acc_banks + line_banks + 2 * len(AXI_PORTS),
            "lut": lanes * LUT_PER_MAC + LUT_FIXED, "ff": lanes * FF_PER_MAC + FF_FIXED, "uram": 0,
            "multipliers": lanes}


def memory_ports(board: Board) -> dict[str, str]:
    """AXI master port of each engine interface: PS HP ports on Zynq, DDR/HBM banks on Alveo."""
    if board.is_zynq:
        hp = "S_AXI_HP{}" if board.family == "zynq-7000" else "S_AXI_HP{}_FPD"
        return {port: hp.format(i) for i, port in enumerate(AXI_PORTS)}
    # Each activation tensor is written by one call and read by the next: in and out share a bank.
    return {"in": "bank 0", "weights": "bank 1", "add": "bank 0", "out": "bank 0"}


@dataclass
class HlsinfFit:
    """The engine chosen for one board and the plan of the graph on it (a hwgen FitReport)."""

    board: Board
    engine: EngineConfig
    plan: Plan
    estimate: dict
    budget: dict
    max_utilization: float
    ports: dict
    source: str = "estimated"
    notes: list = field(default_factory=list)
    # The cycle figures: the engine's schedule per call (planner.call_cycles, the formula potatura.sim
    # uses too), compute only; the simulator adds the DDR time at the board's bandwidth.
    cycles_source: str = "estimated (the engine's schedule per call, compute only)"

    @property
    def fits(self) -> bool:
        return all(self.estimate[k] <= self.budget[k] for k in ("dsp", "bram18", "lut", "ff"))

    @property
    def totals(self) -> dict[str, int]:
        return dict(self.estimate)

    @property
    def interval_cycles(self) -> int:
        """Engine cycles of one sample (the calls run one after the other; compute schedule only)."""
        return self.plan.cycles

    @property
    def latency_cycles(self) -> int:
        return self.plan.cycles

    def bandwidth(self) -> dict:
        e = self.engine
        need = self.board.clock_mhz * 1e6 * e.cpi * e.data_bits / 8
        return {"engine_read_bytes_per_second": need, "board_bytes_per_second": self.board.bandwidth_gbs * 1e9,
                "memory_bound": need > self.board.bandwidth_gbs * 1e9}

    def layer_choices(self) -> dict[str, dict]:
        choices: dict[str, dict] = {}
        for index, call in enumerate(self.plan.calls):
            c = choices.setdefault(call.layer, {"engine": f"{self.engine.cpi}x{self.engine.cpo}", "calls": [],
                                                "fused": call.fused, "i_iter": call.i_iter, "o_iter": call.o_iter,
                                                "frames": call.frames, "cycles": 0})
            c["calls"].append(index)
            c["cycles"] += call.cycles
            for name in call.fused[1:]:
                choices[name] = {"fused_into": call.layer}
        return choices

    def to_dict(self) -> dict:
        return {"board": self.board.name, "backend": "hlsinf", "figures": self.source, "source_detail": SOURCE,
                "cycles": self.cycles_source,
                "engine": self.engine.to_dict(), "totals": self.totals, "budget": self.budget,
                "max_utilization": self.max_utilization, "fits": self.fits, "ports": self.ports,
                "bandwidth": self.bandwidth(), "interval_cycles": self.interval_cycles,
                "latency_cycles": self.latency_cycles, "iterations": self.plan.iterations(),
                "ddr_bytes_per_sample": self.plan.ddr_bytes(), "notes": self.notes,
                "calls": [c.to_dict() for c in self.plan.calls]}

    def table(self) -> str:
        e, t, b = self.engine, self.totals, self.budget
        lines = [f"# hlsinf engine on {self.board.name} ({self.board.part}, {self.board.clock_mhz:g} MHz)", "",
                 f"CPI x CPO = {e.cpi} x {e.cpo}, HO_MAX x WO_MAX = {e.ho_max} x {e.wo_max}, activations "
                 f"ap_int<{e.data_bits}> in DDR (ap_int<{e.pixel_bits}> at the multipliers), weights "
                 f"ap_int<{e.weight_bits}>, accumulators ap_int<{e.acc_bits}>; figures {self.source} "
                 f"(budget {self.max_utilization:.0%} of the device)", "",
                 "| | DSP | BRAM18 | LUT | FF |", "|---|---:|---:|---:|---:|",
                 f"| engine (estimated) | {t['dsp']:,} | {t['bram18']:,} | {t['lut']:,} | {t['ff']:,} |",
                 f"| budget | {b['dsp']:,} | {b['bram18']:,} | {b['lut']:,} | {b['ff']:,} |", "",
                 "| call | layer | fused | I x O | frame | input rows | pads (t,l,b,r) | I_ITER | O_ITER | cycles |",
                 "|---:|---|---|---|---|---:|---|---:|---:|---:|"]
        for i, c in enumerate(self.plan.calls):
            lines.append(f"| {i} | {c.layer} | {' + '.join(c.fused[1:]) or '-'} | {c.i} x {c.o} | "
                         f"{c.frame + 1}/{c.frames} | {c.in_rows} | {','.join(map(str, c.pads))} | {c.i_iter} | "
                         f"{c.o_iter} | {c.cycles:,} |")
        bw = self.bandwidth()
        lines += ["", f"{self.plan.cycles:,} engine cycles per sample (the schedule "
                  "O_ITER*I_ITER*(H+PT+PB)*(W+PL+PR) + O_ITER*128 per call); DDR "
                  f"{self.plan.ddr_bytes()['total']:,} bytes per sample; the engine reads up to "
                  f"{bw['engine_read_bytes_per_second'] / 1e9:.2f} GB/s, the board gives "
                  f"{bw['board_bytes_per_second'] / 1e9:.2f} GB/s (catalog)."]
        lines += [f"- {n}" for n in self.notes]
        lines.append("- Memory ports: " + ", ".join(f"m_axi_{k} -> {v}" for k, v in self.ports.items()))
        return "\n".join(lines)


def fit_engine(graph: Graph, board: Board, cfg=None, max_utilization: float = 0.8) -> HlsinfFit:
    """The engine for `board` (cfg: HlsinfConfig overrides) and the plan of `graph` on it."""
    widths = word_widths(graph)
    if cfg is not None and cfg.data_bits != "auto":
        widths["data_bits"] = int(cfg.data_bits)
    budget = {"dsp": int(board.dsp * max_utilization), "bram18": int(board.bram18 * max_utilization),
              "lut": int(board.lut * max_utilization), "ff": int(board.ff * max_utilization)}
    notes = []
    configs = [(cfg.cpi, cfg.cpo)] if cfg is not None and cfg.cpi is not None else list(CONFIGS)
    sizes = ([(cfg.ho_max or 256, cfg.wo_max or 256)] if cfg is not None and (cfg.ho_max or cfg.wo_max) else
             [(s, s) for s in FRAME_SIZES])
    chosen = None
    for cpi, cpo in sorted(configs, key=lambda c: -c[0] * c[1]):
        for ho, wo in sizes:
            engine = EngineConfig(cpi, cpo, ho, wo, **widths)
            est = estimate_resources(engine)
            if all(est[k] <= budget[k] for k in budget):
                chosen = (engine, est)
                break
        if chosen is not None:
            break
    if chosen is None:  # nothing fits: the smallest engine asked for, reported as not fitting
        engine = EngineConfig(*min(configs, key=lambda c: c[0] * c[1]), *sizes[-1], **widths)
        chosen = (engine, estimate_resources(engine))
        notes.append("no engine configuration fits the budget; the smallest is reported")
    engine, est = chosen
    plan = plan_graph(graph, engine)
    if any(layer.op == Op.DENSE for layer in graph.layers):
        notes.append("dense layers run as 3x3 convolutions of a 1x1 image (centre tap only, padding 1)")
    return HlsinfFit(board, engine, plan, est, budget, max_utilization, memory_ports(board), notes=notes)

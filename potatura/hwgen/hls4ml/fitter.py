"""Fit an hls4ml accelerator to a board: per-layer reuse factor and strategy, resource estimates.

Every resource figure here is an ESTIMATE (potatura's model of what Vivado/Vitis HLS will build);
a synthesis run (`potatura hwgen --build` with the vendor tools on PATH) puts the C-synthesis and
implementation reports beside them. Every cycle figure is SIMULATED: the simulator (potatura.sim,
the project's one timing model) schedules each candidate layer configuration
(potatura.hwgen.hls4ml.timing.SimCycles) and simulates the chosen design.

The model, per conv/dense layer with n_in*n_out weights, z of them zero, reuse factor RF:
- multipliers: hls4ml's multiplier_limit, ceil(n_in*n_out/RF) - z//RF with the Latency strategy
  (HLS removes multiplications by constant zero weights), ceil(n_in*n_out/RF) with Resource;
- a multiplier is a DSP slice when both operands are at least DSP_MIN_WIDTH bits (below that
  Vivado HLS builds it from LUTs, as the hls4ml paper observed), ceil(a/25)*ceil(b/18) slices on
  7-series DSP48E1 and ceil(a/27)*ceil(b/18) on UltraScale+ DSP48E2; otherwise
  LUT_PER_PRODUCT_BIT*a*b LUTs;
- weights: constants in logic with Latency (fully partitioned at any RF); with Resource a ROM of
  depth RF and width ceil(n_in*n_out/RF)*w bits, in BRAM18 when deeper than LUTRAM_MAX_DEPTH;
- io_stream: line buffers (KH-1 rows of W*C values per conv or pool) and one FIFO per layer output
  of H*W words of C values (hls4ml's default depth), in SRLs when at most 32 deep or SRL_MAX_BITS
  bits, in BRAM18 otherwise;
- cycles (simulated): each layer's busy cycles per sample and fill from the simulator's module
  schedule; io_parallel layers run one after the other (latency = sum, interval = slowest layer);
  io_stream layers form a dataflow pipeline: the interval is the slowest layer's, the latency
  about that plus the other layers' fill (docs/hardware.md section 2: not the sum, not the max). These
  guide the search; the reported latency and interval are the simulation of the chosen design.

Valid reuse factors come from hls4ml itself (FPGABackend._validate_reuse_factor, through
potatura.hwgen.hls4ml.compat); the search
picks, for the smallest achievable interval, the cheapest valid (strategy, RF) per layer that
keeps every resource within max_utilization of the board, then spends what is left on latency.
Constraints from hls4ml's HLS limits (project.tcl maximum_size 4096): the Latency strategy
partitions all weights, so it needs n_in*n_out <= 4096; Resource needs ceil(n_in*n_out/RF) <= 4096.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from potatura.boards.catalog import Board
from potatura.errors import ConfigError
from potatura.hw.ir import Layer, Op
from potatura.hwgen.backend import DoesNotFitError
from potatura.hwgen.hls4ml.compat import reuse_factor_is_valid
from potatura.hwgen.hls4ml.lowering import QuantizedNetwork, config_key, hls_name
from potatura.hwgen.hls4ml.timing import CYCLES_SOURCE

DSP_MIN_WIDTH = 10
# LUTs per product bit of a constant multiplier in LUTs, and the largest relative error of the LUT rule
# of a multiply-accumulate block (products + adders) after the fit: yosys synth_xilinx of 8 blocks
# (tests/hwgen/data/lut_calibration.json, `python -m potatura.hwgen.hls4ml.calibration`).
LUT_PER_PRODUCT_BIT = 0.4431
# The estimator's measured error per resource (relative): the fit keeps this margin. None: not measured.
ERROR_BAND: dict[str, float | None] = {"lut": 0.191, "ff": None, "dsp": None, "bram18": None}
ERROR_BAND_SOURCE = {"lut": "yosys synth_xilinx calibration, 8 multiply-accumulate blocks "
                            "(tests/hwgen/data/lut_calibration.json)"}

# The platform's own logic around the accelerator (Zynq shell: PS, AXI DMA in simple mode, AXI
# interconnect + SmartConnect the automation adds, processor reset), potatura's estimate of the
# configuration build_overlay.tcl makes (AXI DMA without scatter-gather, 32/64-bit streams, 256-beat
# bursts: its data FIFOs in block RAM); not measured here (no Vivado): check against the
# implemented design's report_utilization -hierarchical after `make overlay`.
PLATFORM_LOGIC = {
    "zynq-ps-axi-dma": {"lut": 3500, "ff": 5000, "dsp": 0, "bram18": 4},
    "alveo-xrt": {"lut": 0, "ff": 0, "dsp": 0, "bram18": 0},  # the shell's static region is outside the kernel's
}
# One AXI wrapper converter per value of a stream word (float32 -> the input type; the output type ->
# float32/float64): a shifter, rounding and saturation per value. Estimated, not measured.
CONVERTER_LUT = {"float": 120, "double": 200}
CONVERTER_FF = {"float": 64, "double": 96}
LUTRAM_MAX_DEPTH = 64
SRL_MAX_BITS = 1024
HLS_MAX_PARTITION = 4096  # hls4ml project.tcl: config_array_partition -maximum_size 4096
STRATEGIES = ("Latency", "Resource")
RESOURCES = ("lut", "ff", "dsp", "bram18")


def significant(value: float, digits: int = 3) -> str:
    """value to `digits` significant digits, with thousands separators: 24313 -> '24,300'."""
    if value == 0:
        return "0"
    rounded = round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{int(rounded):,}" if rounded == int(rounded) else f"{rounded:g}"


class FitError(DoesNotFitError):
    """No configuration of the model fits the board; the message holds the fit table."""


@functools.lru_cache(maxsize=4096)
def valid_reuse_factors(n_in: int, n_out: int) -> tuple[int, ...]:
    """hls4ml's valid reuse factors for an n_in x n_out product, ascending.

    Same result as FPGABackend.get_valid_reuse_factors, which tries every RF up to n_in*n_out:
    its third rule keeps only divisors of n_in*n_out, so only divisors are tried here.
    """
    total = n_in * n_out
    divisors = set()
    for d in range(1, math.isqrt(total) + 1):
        if total % d == 0:
            divisors.update((d, total // d))
    return tuple(rf for rf in sorted(divisors) if reuse_factor_is_valid(n_in, n_out, rf))


_BRAM18_SHAPES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))  # width x depth


def bram18_blocks(width_bits: int, depth: int) -> int:
    """BRAM18 blocks for a width x depth memory, with the best of the RAMB18 aspect ratios."""
    if width_bits <= 0 or depth <= 0:
        return 0
    return min(math.ceil(width_bits / w) * math.ceil(depth / d) for w, d in _BRAM18_SHAPES)


def _memory(width_bits: int, depth: int, threshold_bits: int = SRL_MAX_BITS) -> dict[str, int]:
    """LUT/BRAM cost of a buffer: SRL/LUTRAM (32 deep per LUT) when small or at most 32 deep, BRAM18 otherwise."""
    if depth <= 32 or width_bits * depth <= threshold_bits:
        return {"lut": width_bits * math.ceil(depth / 32), "bram18": 0}
    return {"lut": 0, "bram18": bram18_blocks(width_bits, depth)}


@dataclass(frozen=True)
class Estimate:
    """Resources (estimated) and cycles (estimated) of one layer in one configuration."""

    strategy: str | None
    reuse_factor: int | None
    multipliers: int
    dsp: int
    lut: int
    ff: int
    bram18: int
    cycles: int  # cycles the layer is busy per sample (its initiation interval in the pipeline)
    fill: int  # cycles from its first input to its first output (io_stream) or its latency (io_parallel)

    def resources(self) -> dict[str, int]:
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram18": self.bram18}


def _dsp_per_mult(a: int, b: int, family: str) -> int:
    if min(a, b) < DSP_MIN_WIDTH:
        return 0
    port_a = 25 if family == "zynq-7000" else 27
    a, b = max(a, b), min(a, b)
    return math.ceil(a / port_a) * math.ceil(b / 18)


# (layer, io_type, strategy, reuse_factor) -> (cycles, fill): the fitter's only source of timing.
# Default: the simulator's module schedule (potatura.hwgen.hls4ml.timing.SimCycles).
CyclesModel = Callable[[Layer, str, str | None, int | None], "tuple[int, int]"]


def estimate_layer(layer: Layer, io_type: str, family: str, strategy: str | None = None,
                   reuse_factor: int | None = None, cycles_model: CyclesModel | None = None) -> Estimate:
    """Estimate one layer; strategy/reuse_factor apply to conv/dense layers only."""
    h, w = (layer.in_shape[0], layer.in_shape[1]) if len(layer.in_shape) == 3 else (1, 1)
    channels = layer.in_shape[-1]
    in_bits = layer.input_type.width
    out_bits = layer.result_type.width
    lut = ff = bram = 0
    if layer.has_weights:
        rf = reuse_factor or 1
        n = layer.n_weights
        mults = math.ceil(n / rf) - (layer.n_zeros // rf if strategy == "Latency" else 0)
        wa, wb = in_bits, layer.weight_type.width
        dsp = mults * _dsp_per_mult(wa, wb, family)
        if dsp == 0:
            lut += math.ceil(mults * LUT_PER_PRODUCT_BIT * wa * wb)
        acc = layer.accum_type.width
        lut += mults * acc  # one adder (a carry chain) per product
        ff += mults * (wa + wb) + layer.n_out * acc
        if rf > 1:
            lut += mults * (wa + wb) // 2  # operand multiplexers
        if strategy == "Resource":
            # Resource keeps the weights in a ROM of depth RF (ARRAY_RESHAPE block factor n/RF); Latency
            # partitions them into constants at any RF.
            word = math.ceil(n / rf) * wb
            mem = _memory(word, rf, threshold_bits=word * LUTRAM_MAX_DEPTH)
            lut += mem["lut"]
            bram += mem["bram18"]
        if layer.op == Op.CONV2D:
            pl, pr = layer.pads[1], layer.pads[3]
            if io_type == "io_stream":
                for _ in range(layer.kernel[0] - 1):  # line buffers
                    mem = _memory(in_bits, (w + pl + pr) * channels)
                    lut += mem["lut"]
                    bram += mem["bram18"]
            else:
                ff += math.prod(layer.out_shape) * out_bits
        elif io_type == "io_parallel":
            ff += layer.n_out * out_bits
        est = dict(multipliers=mults, dsp=dsp)
    else:
        est = dict(multipliers=0, dsp=0)
        if layer.op == Op.MAXPOOL2D:
            # A max of K window values: K-1 comparators and K-1 multiplexers of the value's width, per
            # output value (io_parallel: all of them; io_stream: one pixel's channels). Calibrated on
            # hls4ml's published MaxPooling2D C-synthesis reports (tests/hwgen/data/hls4ml_resource_baselines.json).
            per_value = (layer.kernel[0] * layer.kernel[1] - 1) * 2 * in_bits
            lut += (math.prod(layer.out_shape) if io_type == "io_parallel" else channels) * per_value
            if io_type == "io_stream":
                for _ in range(layer.kernel[0] - 1):
                    mem = _memory(in_bits, w * channels)
                    lut += mem["lut"]
                    bram += mem["bram18"]
        elif layer.op in (Op.RELU, Op.QUANT):
            lut += (math.prod(layer.out_shape) if io_type == "io_parallel" else channels) * out_bits
    if io_type == "io_stream":
        # hls4ml's FIFO after every layer: H*W words of C values (its default depth).
        out_pixels = math.prod(layer.out_shape[:-1]) if len(layer.out_shape) == 3 else 1
        mem = _memory(layer.out_shape[-1] * out_bits, out_pixels)
        lut += mem["lut"]
        bram += mem["bram18"]
    if cycles_model is None:
        raise ValueError("estimate_layer needs a cycles model (potatura.hwgen.hls4ml.timing.SimCycles)")
    cycles, fill = cycles_model(layer, io_type, strategy if layer.has_weights else None,
                                (reuse_factor or 1) if layer.has_weights else None)
    return Estimate(strategy if layer.has_weights else None, (reuse_factor or 1) if layer.has_weights else None,
                    lut=int(lut), ff=int(ff), bram18=int(bram), cycles=int(cycles), fill=int(fill), **est)


def candidates(layer: Layer, io_type: str, family: str, strategies: Iterable[str] = STRATEGIES,
               reuse_factors: Iterable[int] | None = None,
               cycles_model: CyclesModel | None = None) -> list[Estimate]:
    """Every allowed (strategy, valid RF) configuration of a conv/dense layer."""
    rfs = valid_reuse_factors(layer.n_in, layer.n_out) if reuse_factors is None else tuple(reuse_factors)
    out = []
    for strategy in strategies:
        for rf in rfs:
            if strategy == "Latency" and layer.n_weights > HLS_MAX_PARTITION:
                continue
            if strategy == "Resource" and math.ceil(layer.n_weights / rf) > HLS_MAX_PARTITION:
                continue
            out.append(estimate_layer(layer, io_type, family, strategy, rf, cycles_model))
    return out


@dataclass
class LayerFit:
    layer: Layer
    estimate: Estimate
    note: str = ""


@dataclass
class FitResult:
    """The fitter's choice for one board: per-layer configuration and estimated totals."""

    board: Board
    io_type: str
    max_utilization: float
    layers: list[LayerFit]
    fits: bool
    source: str = "estimated"  # resources: estimated | synthesized (after --build parsed the reports)
    measured: dict = field(default_factory=dict)  # report figures, when a build ran
    # The chosen design simulated (potatura.sim.api.design_cycles): latency and interval in cycles.
    simulated: dict = field(default_factory=dict)
    cycles_source: str = CYCLES_SOURCE
    platform: dict = field(default_factory=dict)  # resources of the platform's own logic (estimated)

    @property
    def required(self) -> dict[str, int]:
        """What the design needs of the board: its estimate with the estimator's measured error band on
        top (ERROR_BAND), plus the platform's logic (PLATFORM_LOGIC + AXI converters)."""
        totals = self.totals
        return {r: int(math.ceil(totals[r] * (1 + (ERROR_BAND.get(r) or 0.0)))) + int(self.platform.get(r, 0))
                for r in RESOURCES}

    @property
    def budget(self) -> dict[str, int]:
        return {r: int(math.floor(self.board.resources()[r] * self.max_utilization)) for r in RESOURCES}

    @property
    def totals(self) -> dict[str, int]:
        return {r: sum(getattr(f.estimate, r) for f in self.layers) for r in RESOURCES} | {
            "multipliers": sum(f.estimate.multipliers for f in self.layers)}

    @property
    def interval_cycles(self) -> int:
        """Cycles between two samples: the simulated design's, else the slowest layer's schedule (search)."""
        if self.simulated:
            return int(self.simulated["interval_cycles"])
        return max((f.estimate.cycles for f in self.layers), default=0)

    @property
    def latency_cycles(self) -> int:
        """Cycles from the first input word to the last output word of one sample: the simulated design's,
        else (while searching) the slowest layer's schedule plus every layer's fill."""
        if self.simulated:
            return int(self.simulated["latency_cycles"])
        if self.io_type == "io_parallel":
            return sum(f.estimate.fill for f in self.layers)
        return self.interval_cycles + sum(f.estimate.fill for f in self.layers)

    def utilization(self) -> dict[str, float]:
        """Share of the device the design needs (required: estimate + error band + platform)."""
        dev, need = self.board.resources(), self.required
        return {r: (need[r] / dev[r] if dev[r] else (0.0 if need[r] == 0 else math.inf)) for r in RESOURCES}

    def over_budget(self) -> list[str]:
        required = self.required
        return [r for r in RESOURCES if required[r] > self.budget[r]]

    def layer_choices(self) -> dict[str, dict]:
        """IR layer name -> what the backend builds for it (design.json's layer_choices)."""
        out = {}
        for f in self.layers:
            choice = {"hls4ml_name": hls_name(f.layer), "io_type": self.io_type}
            if f.layer.has_weights:
                choice.update(strategy=f.estimate.strategy, reuse_factor=f.estimate.reuse_factor,
                              parallelization_factor=1)
            out[f.layer.name] = choice
        return out

    def reuse_factors(self) -> dict[str, int]:
        return {hls_name(f.layer): f.estimate.reuse_factor for f in self.layers if f.layer.has_weights}

    def to_dict(self) -> dict:
        return {
            "board": self.board.name, "part": self.board.part, "io_type": self.io_type,
            "clock_mhz": self.board.clock_mhz, "max_utilization": self.max_utilization, "fits": self.fits,
            "figures": self.source, "cycles": self.cycles_source, "simulated": self.simulated,
            "layers": [{"layer": hls_name(f.layer), "onnx_node": config_key(f.layer), "kind": f.layer.op.value,
                        "strategy": f.estimate.strategy, "reuse_factor": f.estimate.reuse_factor,
                        "n_in": f.layer.n_in or None, "n_out": f.layer.n_out or None,
                        "zero_weights": f.layer.n_zeros if f.layer.has_weights else None,
                        "multipliers": f.estimate.multipliers, "dsp": f.estimate.dsp, "bram18": f.estimate.bram18,
                        "lut": f.estimate.lut, "ff": f.estimate.ff, "cycles": f.estimate.cycles, "note": f.note}
                       for f in self.layers],
            "totals": self.totals, "platform": self.platform, "required": self.required,
            "error_band": {r: ERROR_BAND.get(r) for r in RESOURCES}, "error_band_source": ERROR_BAND_SOURCE,
            "budget": self.budget, "device": self.board.resources(),
            "utilization": {k: round(v, 4) for k, v in self.utilization().items()},
            "interval_cycles": self.interval_cycles, "latency_cycles": self.latency_cycles,
            "interval_us": self.interval_cycles / self.board.clock_mhz,
            "latency_us": self.latency_cycles / self.board.clock_mhz,
            "measured": self.measured,
        }

    def table(self) -> str:
        """The fit report as a markdown table (per layer, totals, board budget)."""
        lines = [f"fit of {self.io_type} design on {self.board.name} ({self.board.part}, {self.board.clock_mhz:g} MHz), "
                 f"budget {self.max_utilization:.0%} of the device; resources {self.source}; cycles {self.cycles_source}",
                 "",
                 "| layer | kind | strategy | RF | multipliers | DSP | BRAM18 | LUT | FF | cycles |",
                 "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for f in self.layers:
            e = f.estimate
            lines.append(f"| {hls_name(f.layer)} | {f.layer.op.value} | {e.strategy or '-'} | {e.reuse_factor or '-'} | "
                         f"{e.multipliers:,} | {e.dsp:,} | {e.bram18:,} | {e.lut:,} | {e.ff:,} | {e.cycles:,} |"
                         + (f" {f.note}" if f.note else ""))
        t, b, d = self.totals, self.budget, self.board.resources()
        p, q = self.platform or {r: 0 for r in RESOURCES}, self.required
        lines.append(f"| **total** | | | | {t['multipliers']:,} | {t['dsp']:,} | {t['bram18']:,} | {t['lut']:,} | "
                     f"{t['ff']:,} | interval {self.interval_cycles:,} |")
        lines.append(f"| platform (DMA, interconnect, converters) | | | | | {p.get('dsp', 0):,} | {p.get('bram18', 0):,} | "
                     f"{p.get('lut', 0):,} | {p.get('ff', 0):,} | |")
        lines.append(f"| required (total + error band + platform) | | | | | {q['dsp']:,} | {q['bram18']:,} | {q['lut']:,} | "
                     f"{q['ff']:,} | |")
        lines.append(f"| budget ({self.max_utilization:.0%}) | | | | | {b['dsp']:,} | {b['bram18']:,} | {b['lut']:,} | "
                     f"{b['ff']:,} | latency {self.latency_cycles:,} |")
        lines.append(f"| device | | | | | {d['dsp']:,} | {d['bram18']:,} | {d['lut']:,} | {d['ff']:,} | |")
        over = self.over_budget()
        lines.append("")
        lines.append("estimates with their measured error: " + ", ".join(
            f"{r.upper()} {significant(t[r])}" + (f" ±{ERROR_BAND[r]:.0%} ({ERROR_BAND_SOURCE[r]})" if ERROR_BAND.get(r)
                                                  else " (error not measured)") for r in RESOURCES)
            + "; platform figures: estimated, not measured")
        lines.append("fits: yes" if not over else f"fits: NO (over budget: {', '.join(over)})")
        return "\n".join(lines)


def fit_network(net: QuantizedNetwork, board: Board, io_type: str, max_utilization: float = 0.8,
                reuse_factor: int | dict[str, int] | None = None, strategy: str = "auto",
                cycles_model: CyclesModel | None = None, simulate: bool = True) -> FitResult:
    """Choose strategy and reuse factor per conv/dense layer for `board`; FitResult.fits says if it fits.

    reuse_factor: one RF for every layer (snapped to the nearest valid one per layer, noted in the
    table) or {layer name (hls4ml or ONNX): RF} (must be valid); strategy: auto | latency | resource;
    cycles_model: where the cycles of each layer choice come from (default: the simulator's module
    schedule, potatura.hwgen.hls4ml.timing.SimCycles); simulate: simulate the chosen design
    (potatura.sim) for its latency and interval (off: the schedule's figures, for a quick fits/no).
    """
    from potatura.hwgen.hls4ml.timing import SimCycles, design_for, simulate_design

    if cycles_model is None:
        cycles_model = SimCycles(net.graph, board)
    if io_type not in ("io_parallel", "io_stream"):
        raise ConfigError(f"hwgen.backends.hls4ml.io_type: {io_type!r}; accepted: io_parallel, io_stream")
    strategies = STRATEGIES if strategy == "auto" else (strategy.capitalize(),)
    options = layer_options(net, io_type, board.family, strategies, reuse_factor, cycles_model)
    fixed = {hls_name(layer): estimate_layer(layer, io_type, board.family, cycles_model=cycles_model)
             for layer in net.layers if not layer.has_weights}
    result = _search(net, board, io_type, max_utilization, options, fixed)
    if simulate:
        result.simulated = simulate_design(design_for(net.graph, board, io_type, result.layer_choices()))
    return result


def layer_options(net: QuantizedNetwork, io_type: str, family: str, strategies: tuple[str, ...],
                  reuse_factor: int | dict[str, int] | None,
                  cycles_model: CyclesModel | None = None) -> list[tuple[Layer, list[Estimate], str]]:
    """(layer, its allowed configurations, note) per conv/dense layer, after the user's overrides."""
    if isinstance(reuse_factor, dict):
        names = {hls_name(layer) for layer in net.compute_layers} | {config_key(layer) for layer in net.compute_layers}
        unknown = sorted(set(reuse_factor) - names)
        if unknown:
            raise ConfigError(f"hwgen.reuse_factor: unknown layer(s) {', '.join(unknown)}; layers: "
                              f"{', '.join(hls_name(layer) for layer in net.compute_layers)}")
    out: list[tuple[Layer, list[Estimate], str]] = []
    for layer in net.compute_layers:
        valid = valid_reuse_factors(layer.n_in, layer.n_out)
        note = ""
        rfs: tuple[int, ...] | None = None
        if isinstance(reuse_factor, dict):
            wanted = reuse_factor.get(hls_name(layer), reuse_factor.get(config_key(layer)))
            if wanted is not None and wanted not in valid:
                raise ConfigError(f"hwgen.reuse_factor: {wanted} is not a valid reuse factor for layer {hls_name(layer)} "
                                  f"({layer.n_in}x{layer.n_out}); valid: {', '.join(map(str, valid))}")
            rfs = (wanted,) if wanted is not None else None
        elif reuse_factor is not None:
            nearest = min(valid, key=lambda v: (abs(v - reuse_factor), v))
            if nearest != reuse_factor:
                note = f"RF {reuse_factor} invalid here, nearest valid {nearest}"
            rfs = (nearest,)
        options = candidates(layer, io_type, family, strategies, rfs, cycles_model)
        if not options:
            # Only HLS partition limits can empty the list: fall back to the other strategy.
            options = candidates(layer, io_type, family, STRATEGIES, rfs, cycles_model)
            note = (note + "; " if note else "") + "strategy forced by the 4096 partition limit"
        if not options:
            raise ConfigError(f"hwgen: layer {hls_name(layer)}: no reuse factor satisfies hls4ml's partition limit "
                              f"(ceil({layer.n_weights}/RF) <= {HLS_MAX_PARTITION}) among {rfs}")
        out.append((layer, options, note))
    return out


def platform_logic(net: QuantizedNetwork, board: Board, io_type: str) -> dict[str, int]:
    """Resources of the platform around the accelerator on `board` (estimated): the shell's DMA,
    interconnects and reset (PLATFORM_LOGIC) and the AXI wrapper's float<->fixed converters, one per
    value of a stream word (io_stream: a pixel's channels in, the output vector out; io_parallel: one)."""
    base = dict(PLATFORM_LOGIC.get(board.shell, {r: 0 for r in RESOURCES}))
    out_word = "float" if net.graph.output.type.float_exact(24) else "double"
    if io_type == "io_stream":
        n_in = net.graph.input.shape[-1] if len(net.graph.input.shape) == 3 else math.prod(net.graph.input.shape)
        n_out = math.prod(net.graph.output.shape)
    else:
        n_in = n_out = 1
    base["lut"] += n_in * CONVERTER_LUT["float"] + n_out * CONVERTER_LUT[out_word]
    base["ff"] += n_in * CONVERTER_FF["float"] + n_out * CONVERTER_FF[out_word]
    return base


def _search(net: QuantizedNetwork, board: Board, io_type: str, max_utilization: float,
            layers_options: list[tuple[Layer, list[Estimate], str]], fixed: dict[str, Estimate]) -> FitResult:
    """The smallest interval whose cheapest configuration fits, then the latency the rest buys."""
    dev = board.resources()
    budget = {r: dev[r] * max_utilization for r in RESOURCES}
    notes = {hls_name(layer): note for layer, _, note in layers_options}
    platform = platform_logic(net, board, io_type)

    def cost(e: Estimate) -> float:
        return sum(getattr(e, r) / budget[r] if budget[r] > 0 else (math.inf if getattr(e, r) else 0.0)
                   for r in RESOURCES)

    def assemble(choice: dict[str, Estimate]) -> FitResult:
        fits_layers = []
        for layer in net.layers:
            est = choice[hls_name(layer)] if layer.has_weights else fixed[hls_name(layer)]
            fits_layers.append(LayerFit(layer, est, notes.get(hls_name(layer), "")))
        result = FitResult(board, io_type, max_utilization, fits_layers, fits=False, platform=platform)
        result.fits = not result.over_budget()
        return result

    def cheapest_within(limit: int) -> dict[str, Estimate] | None:
        choice = {}
        for layer, options, _ in layers_options:
            ok = [e for e in options if e.cycles <= limit]
            if not ok:
                return None
            choice[hls_name(layer)] = min(ok, key=lambda e: (cost(e), e.cycles))
        return choice

    fixed_interval = max((e.cycles for e in fixed.values()), default=0)
    limits = sorted({e.cycles for _, options, _ in layers_options for e in options} | {fixed_interval})
    for limit in limits:
        if limit < fixed_interval:
            continue
        choice = cheapest_within(limit)
        if choice is None:
            continue
        result = assemble(choice)
        if result.fits:
            return _spend_on_latency(result, choice, layers_options, assemble)
    # Nothing fits: report the cheapest configuration of every layer.
    return assemble({hls_name(layer): min(options, key=lambda e: (cost(e), e.cycles))
                     for layer, options, _ in layers_options})


def _spend_on_latency(result: FitResult, choice: dict[str, Estimate], layers_options, assemble) -> FitResult:
    """Greedy: move layers to faster configurations while the design still fits and the interval holds."""
    interval = result.interval_cycles
    improved = True
    while improved:
        improved = False
        best_gain, best_move = 0, None
        for layer, options, _ in layers_options:
            current = choice[hls_name(layer)]
            for option in options:
                if option.fill >= current.fill or option.cycles > interval:
                    continue
                trial = dict(choice)
                trial[hls_name(layer)] = option
                candidate = assemble(trial)
                gain = result.latency_cycles - candidate.latency_cycles
                if candidate.fits and gain > best_gain:
                    best_gain, best_move = gain, (hls_name(layer), option, candidate)
        if best_move is not None:
            choice[best_move[0]] = best_move[1]
            result = best_move[2]
            improved = True
    return result


def smallest_fitting_board(net: QuantizedNetwork, io_type: str, max_utilization: float, boards: Iterable[Board],
                           reuse_factor=None, strategy: str = "auto") -> str | None:
    """The first board (in the order given: smallest first) the model fits on, or None."""
    for board in sorted(boards, key=lambda b: (b.lut, b.dsp, b.bram18)):
        if fit_network(net, board, io_type, max_utilization, reuse_factor, strategy, simulate=False).fits:
            return board.name
    return None


def fit_or_raise(net: QuantizedNetwork, board: Board, io_type: str, max_utilization: float = 0.8,
                 reuse_factor=None, strategy: str = "auto") -> FitResult:
    """fit_network, raising FitError (with the table and the smallest board that fits) when nothing fits."""
    from potatura.boards.catalog import load_catalog

    result = fit_network(net, board, io_type, max_utilization, reuse_factor, strategy)
    if result.fits:
        return result
    others = [b for b in load_catalog().values() if b.name != board.name]
    smallest = smallest_fitting_board(net, io_type, max_utilization, others, reuse_factor, strategy)
    hint = (f"the smallest catalog board it fits (estimated): {smallest}" if smallest else
            "it fits no catalog board: prune/simplify further or lower the bit widths")
    if reuse_factor is not None or strategy != "auto":
        # The user fixed the search: say so, and that the fitter may do better without it.
        forced = [f"hwgen.backends.hls4ml.reuse_factor: {reuse_factor}" if reuse_factor is not None else "",
                  f"hwgen.backends.hls4ml.strategy: {strategy}" if strategy != "auto" else ""]
        raise FitError(f"hwgen: {net.source} does not fit {board.name} within {max_utilization:.0%} of the device "
                       f"with the setting you forced ({'; '.join(f for f in forced if f)}) (over budget: "
                       f"{', '.join(result.over_budget())}); remove it to let the fitter search every valid reuse "
                       f"factor and strategy. Configuration:\n{result.table()}")
    raise FitError(f"hwgen: {net.source} does not fit {board.name} at any reuse factor within "
                   f"{max_utilization:.0%} of the device (over budget: {', '.join(result.over_budget())}); {hint}. "
                   f"Cheapest configuration found:\n{result.table()}")

"""The schedule half of the module models: what hls4ml 1.3 (Vivado / VivadoAccelerator) builds per layer.

From a Design (the IR graph + per-layer reuse factor, strategy, io type) this builds the engine's
modules and FIFOs. Each module's program follows the loop structure of the HLS C++ it models:

io_stream (a DATAFLOW of processes joined by hls::stream FIFOs, one token per pixel of C values,
one token for a vector):
- AXI-stream input (the VivadoAccelerator wrapper): one 32-bit word per cycle, a token per
  pixel (its C words) written when its last word is in.
- zero padding (hls4ml inserts it before a padded conv): one output pixel per cycle, reading the
  interior ones.
- conv2d (conv_2d_buffer_cl, line buffer): one step per input pixel. Latency strategy: the loop is
  pipelined at II = reuse factor; Resource: not pipelined across pixels, a pixel that completes a
  window runs dense_resource (RF iterations at II 1 plus its pipeline) and the others only shift the
  line buffer. A window completes at pixels (KH-1 + i*SH, KW-1 + j*SW): then one token is written.
- max/avg pooling (pooling2d_cl stream): one step per input pixel at II 1, a token per window.
- relu, quant (linear), add, concatenate, clone (a tensor read by two layers): II 1 per token.
- dense (nnet::dense stream): read the input tokens (II 1), compute (dense_latency at II = RF or
  dense_resource), write the output tokens.
- AXI-stream output: one word per cycle.
- flatten: no hardware (hls4ml aliases the stream); the next layer reads its producer's tokens.

io_parallel (arrays between layers, one token = one whole tensor per sample): every layer is one
step per sample with II = its initiation interval and depth = its latency; the wrapper copies the
N_IN input words in and the N_OUT output words out one per cycle.

Cycle constants (pipeline depths) are this model's assumptions, stated below; the initiation
intervals and trip counts come from the loop structure and the layer's configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from potatura.hw.ir import Design, Layer, Op
from potatura.sim.engine import Fifo, Module, Step
from potatura.sim.errors import SimError
from potatura.sim.functional import tokens

# Pipeline depths. Vivado/Vitis HLS chain operators combinationally within a clock period and
# register only when the period is used up, so a depth is the combinational delay of the datapath
# divided by the usable period. The delays (ns) are calibrated on hls4ml's published C-synthesis
# reports (tests/sim/data/hls4ml_baselines.json: e.g. Dense(64) on one input + ReLU estimated at
# 2.9 ns, 0 cycles, at 200 MHz); an assumption of this model, not a vendor figure.
T_MULT_NS = 2.0  # a product by a constant weight (<= 18 bits: DSP or LUT)
T_ADD_NS = 0.6  # one adder (or comparator) level
USABLE_PERIOD = 0.9  # fraction of the clock period HLS schedules into (the rest: clock uncertainty)
RESOURCE_OVERHEAD = 4  # dense_resource: weight ROM read (2) + accumulate (1) + result register (1)
DIVIDER_EXTRA = 5  # a sequential divider (average pooling by a count that is not a power of two): width + 5
ELEMENTWISE_DEPTH = 0  # relu, cast, add, concatenate, clone, zero padding: the FIFO write is the register
AXI_WORD_BITS = 32  # the wrapper's stream word (float)
PARALLEL_FIFO_DEPTH = 2  # io_parallel: buffers between layers (arrays)
LINEBUFFER_SHIFT = 2  # Resource conv: cycles of a pixel that only shifts the line buffer


def adder_levels(n_terms: int) -> int:
    return math.ceil(math.log2(n_terms)) if n_terms > 1 else 0


def comb_cycles(delay_ns: float, clock_mhz: float) -> int:
    """Register stages a combinational path of delay_ns needs at clock_mhz (0: it fits one cycle)."""
    period = 1000.0 / clock_mhz * USABLE_PERIOD
    return int(delay_ns // period)


@dataclass
class LayerTiming:
    """Per-layer figures of the model: initiation interval and latency of one matrix-vector product
    (dense) or one window (conv), in cycles, and the strategy/RF they come from."""

    ii: int
    latency: int
    strategy: str
    reuse_factor: int


def matvec_timing(layer: Layer, choice: dict, clock_mhz: float) -> LayerTiming:
    """One constant matrix-vector product of a conv/dense layer with its reuse factor and strategy."""
    rf = int(choice.get("reuse_factor", 1) or 1)
    strategy = str(choice.get("strategy", "latency")).lower()
    if strategy == "resource":
        # ReuseLoop: RF iterations pipelined at II 1 (rewind), then the accumulators.
        return LayerTiming(rf, rf + RESOURCE_OVERHEAD, strategy, rf)
    # dense_latency under PIPELINE II=RF: the products of ceil(n/RF) multipliers, then the adder tree
    # over n_in products and the bias.
    per_rf_inputs = math.ceil(layer.n_in / rf)
    delay = T_MULT_NS + T_ADD_NS * adder_levels(per_rf_inputs + 1)
    return LayerTiming(rf, rf - 1 + comb_cycles(delay, clock_mhz), strategy, rf)


def pool_depth(layer: Layer, clock_mhz: float) -> int:
    """Max: a comparator tree over the window; average: an adder tree, then the division by the
    window's count (a shift for a constant power of two, else a sequential divider of the accumulator's
    width)."""
    kh, kw = layer.kernel if layer.op != Op.GLOBAL_AVGPOOL else layer.in_shape[:2]
    depth = comb_cycles(T_ADD_NS * adder_levels(kh * kw), clock_mhz)
    if layer.op in (Op.AVGPOOL2D, Op.GLOBAL_AVGPOOL):
        # count_pad false: with padding the divisor is a per-window variable (a divider in any case).
        variable = layer.op == Op.AVGPOOL2D and any(layer.pads)
        if variable or (kh * kw) & (kh * kw - 1):
            width = (layer.accum_type or layer.input_type).width
            depth += width + DIVIDER_EXTRA
    return depth


def io_type_of(design: Design) -> str:
    io = design.backend_info.get("io_type")
    if io is None:
        ios = {c.get("io_type") for c in design.layer_choices.values() if c.get("io_type")}
        io = ios.pop() if len(ios) == 1 else None
    if io not in ("io_stream", "io_parallel"):
        raise SimError(f"sim: design {design.graph.name}: io_type must be io_stream or io_parallel (backend_info or "
                       f"layer_choices), got {io!r}")
    return io


class Network:
    """Modules and FIFOs of one design, with the layer each module models."""

    def __init__(self, design: Design):
        self.design = design
        self.io_type = io_type_of(design)
        self.modules: list[Module] = []
        self.fifos: list[Fifo] = []
        self.module_layer: list[str] = []
        graph = design.graph
        self._stream_of: dict[tuple[str, str], int] = {}  # (producer, consumer) -> fifo
        # Flatten is an alias: its consumers read its producer's stream.
        self.source: dict[str, str] = {}
        for layer in graph.layers:
            self.source[layer.name] = self.source[layer.inputs[0]] if layer.op == Op.FLATTEN else layer.name
        readers: dict[str, list[str]] = {}
        for layer in graph.layers:
            if layer.op == Op.FLATTEN:
                continue
            for p in layer.inputs:
                readers.setdefault(self.source[p], []).append(layer.name)
        out_src = self.source[graph.output.layer]
        readers.setdefault(out_src, []).append("axi_out")
        self.readers = readers
        for layer in graph.layers:
            if layer.op == Op.FLATTEN:
                continue
            self._add_layer(layer)
        self._add_axi_out()
        for i, m in enumerate(self.modules):
            for step in m.program:
                for f in step.writes:
                    self.fifos[f].writer = i
                for f in step.reads:
                    self.fifos[f].reader = i

    # --- streams ---
    def _new_fifo(self, name: str, layer: Layer, default_depth: int) -> int:
        n_tok = tokens(layer.out_shape)[0] if self.io_type == "io_stream" else 1
        depth = self.design.fifo_depths.get(name, default_depth)
        # io_parallel: the layers of one pipelined top function, joined by wires.
        latency = 1 if self.io_type == "io_stream" else 0
        self.fifos.append(Fifo(name, int(depth), tokens_per_sample=n_tok, latency=latency))
        return len(self.fifos) - 1

    def _outputs(self, layer: Layer) -> list[int]:
        """FIFOs this layer writes: one, or a clone module's input when several layers read it."""
        consumers = self.readers.get(layer.name, [])
        default = (tokens(layer.out_shape)[0] if self.io_type == "io_stream" else PARALLEL_FIFO_DEPTH)
        if len(consumers) <= 1:
            c = consumers[0] if consumers else "axi_out"
            if c == "axi_out" and self.io_type == "io_stream":
                default = 1  # the wrapper's out_local stream
            f = self._new_fifo(layer.name, layer, default)
            self._stream_of[(layer.name, c)] = f
            return [f]
        return [self._new_fifo(layer.name, layer, default)]

    def _input(self, producer: str, consumer: str) -> int:
        return self._stream_of[(self.source[producer], consumer)]

    def _add(self, name: str, op: str, program: list[Step], layer_name: str, ii: int, latency: int, **info) -> None:
        self.modules.append(Module(name, op, program, trip_count=len(program), ii=ii, latency=latency, info=info))
        self.module_layer.append(layer_name)

    def _clone(self, layer: Layer, f_in: int) -> None:
        """hls4ml's clone_stream: copies each token of a tensor read by several layers."""
        consumers = self.readers[layer.name]
        outs = []
        for c in consumers:
            name = f"{layer.name}->{c}"
            default = tokens(layer.out_shape)[0] if self.io_type == "io_stream" else PARALLEL_FIFO_DEPTH
            f = self._new_fifo(name, layer, default)
            self._stream_of[(layer.name, c)] = f
            outs.append(f)
        n = self.fifos[f_in].tokens_per_sample
        prog = [Step(1, ELEMENTWISE_DEPTH, (f_in,), tuple(outs)) for _ in range(n)]
        self._add(f"clone_{layer.name}", "clone", prog, layer.name, 1, n - 1 + ELEMENTWISE_DEPTH)

    # --- layers ---
    def _add_layer(self, layer: Layer) -> None:
        outs = self._outputs(layer)
        f_out = outs[0]
        stream = self.io_type == "io_stream"
        choice = self.design.layer_choices.get(layer.name, {})
        if layer.op == Op.INPUT:
            n_tok, per_tok = tokens(layer.out_shape)
            if stream:
                prog = [Step(per_tok, per_tok, (), (f_out,)) for _ in range(n_tok)]
            else:
                total = n_tok * per_tok
                prog = [Step(total, total, (), (f_out,))]
            self._add("axi_in", "axi_in", prog, layer.name, per_tok if stream else n_tok * per_tok,
                      n_tok * per_tok)
        else:
            ins = [self._input(p, layer.name) for p in layer.inputs]
            if stream:
                self._stream_layer(layer, choice, ins, f_out)
            else:
                self._parallel_layer(layer, choice, ins, f_out)
        if len(self.readers.get(layer.name, [])) > 1:
            self._clone(layer, f_out)

    def _stream_layer(self, layer: Layer, choice: dict, ins: list[int], f_out: int) -> None:
        op = layer.op
        if op in (Op.CONV2D, Op.MAXPOOL2D, Op.AVGPOOL2D):
            f_in = ins[0]
            h, w = layer.in_shape[0], layer.in_shape[1]
            if any(layer.pads):
                # hls4ml's ZeroPadding2D before the layer: one output pixel per cycle.
                top, left, bottom, right = layer.pads
                ph, pw = h + top + bottom, w + left + right
                pad_layer = Layer(f"{layer.name}_pad", Op.QUANT, (layer.inputs[0],), (layer.in_shape,),
                                  (ph, pw, layer.in_shape[2]), input_type=layer.input_type,
                                  result_type=layer.input_type)
                f_pad = self._new_fifo(f"{layer.name}_pad", pad_layer, ph * pw)
                prog = []
                for y in range(ph):
                    for x in range(pw):
                        inside = top <= y < top + h and left <= x < left + w
                        prog.append(Step(1, ELEMENTWISE_DEPTH, (f_in,) if inside else (), (f_pad,)))
                self._add(f"{layer.name}_pad", "zeropad2d", prog, layer.name, 1, len(prog) - 1 + ELEMENTWISE_DEPTH)
                f_in, h, w = f_pad, ph, pw
            kh, kw = layer.kernel
            sh, sw = layer.stride
            if op == Op.CONV2D:
                t = matvec_timing(layer, choice, self.design.clock_mhz)
                resource = t.strategy == "resource"
            else:
                t = LayerTiming(1, pool_depth(layer, self.design.clock_mhz), "latency", 1)
                resource = False
            prog = []
            for y in range(h):
                for x in range(w):
                    emits = y >= kh - 1 and x >= kw - 1 and (y - kh + 1) % sh == 0 and (x - kw + 1) % sw == 0
                    if resource:
                        busy = t.latency + 1 if emits else LINEBUFFER_SHIFT
                    else:
                        busy = t.ii
                    prog.append(Step(busy, t.latency, (f_in,), (f_out,) if emits else ()))
            ii = t.ii if not resource else t.latency + 1
            info = {"reuse_factor": t.reuse_factor, "strategy": t.strategy} if op == Op.CONV2D else {}
            self._add(layer.name, op.value, prog, layer.name, ii, _unstalled_latency(prog), **info)
        elif op == Op.DENSE:
            # nnet::dense: DataPrepare reads the tokens, dense_wrapper (PIPELINE II=RF) computes, ResWrite
            # writes one token; the three loops flatten into one pipeline: a new sample every
            # (tokens - 1) + RF cycles, the result one loop transition after the computation.
            t = matvec_timing(layer, choice, self.design.clock_mhz)
            n_in_tok = self.fifos[ins[0]].tokens_per_sample
            n_out_tok = tokens(layer.out_shape)[0]
            prog = [Step(1, 0, (ins[0],), ()) for _ in range(n_in_tok - 1)]
            prog.append(Step(t.ii, t.latency + 1, (ins[0],), (f_out,)))
            prog += [Step(1, ELEMENTWISE_DEPTH, (), (f_out,)) for _ in range(n_out_tok - 1)]
            self._add(layer.name, op.value, prog, layer.name, t.ii, _unstalled_latency(prog),
                      reuse_factor=t.reuse_factor, strategy=t.strategy)
        elif op == Op.GLOBAL_AVGPOOL:
            n_tok = self.fifos[ins[0]].tokens_per_sample
            prog = [Step(1, 0, (ins[0],), ()) for _ in range(n_tok)]
            prog.append(Step(1, pool_depth(layer, self.design.clock_mhz) + 1, (), (f_out,)))
            self._add(layer.name, op.value, prog, layer.name, 1, _unstalled_latency(prog))
        elif op in (Op.RELU, Op.QUANT, Op.ADD, Op.CONCAT):
            n_tok = tokens(layer.out_shape)[0]
            prog = [Step(1, ELEMENTWISE_DEPTH, tuple(ins), (f_out,)) for _ in range(n_tok)]
            self._add(layer.name, op.value, prog, layer.name, 1, _unstalled_latency(prog))
        else:
            raise SimError(f"sim: layer {layer.name!r}: no io_stream model for op {op.value}")

    def _parallel_layer(self, layer: Layer, choice: dict, ins: list[int], f_out: int) -> None:
        op = layer.op
        if op == Op.DENSE:
            t = matvec_timing(layer, choice, self.design.clock_mhz)
            ii, lat, info = t.ii, t.latency, {"reuse_factor": t.reuse_factor, "strategy": t.strategy}
        elif op == Op.CONV2D:
            # conv_2d_cl io_parallel: the output pixels / PF matrix-vector products, pipelined at II = RF.
            t = matvec_timing(layer, choice, self.design.clock_mhz)
            pf = int(choice.get("parallelization_factor", 1) or 1)
            steps = math.ceil(layer.out_pixels / pf)
            ii, lat = steps * t.ii, (steps - 1) * t.ii + t.latency
            info = {"reuse_factor": t.reuse_factor, "strategy": t.strategy, "parallelization_factor": pf}
        elif op in (Op.MAXPOOL2D, Op.AVGPOOL2D, Op.GLOBAL_AVGPOOL):
            ii, lat, info = 1, pool_depth(layer, self.design.clock_mhz), {}
        elif op in (Op.RELU, Op.QUANT, Op.ADD, Op.CONCAT):
            ii, lat, info = 1, ELEMENTWISE_DEPTH, {}
        else:
            raise SimError(f"sim: layer {layer.name!r}: no io_parallel model for op {op.value}")
        self._add(layer.name, op.value, [Step(ii, lat, tuple(ins), (f_out,))], layer.name, ii, lat, **info)

    def _add_axi_out(self) -> None:
        graph = self.design.graph
        out_layer = graph.layer(self.source[graph.output.layer])
        f = self._stream_of[(out_layer.name, "axi_out")]
        n_tok, per_tok = tokens(graph.output.shape)
        if self.io_type == "io_stream":
            n = self.fifos[f].tokens_per_sample
            per = n_tok * per_tok // n
            prog = [Step(per, per, (f,), ()) for _ in range(n)]
            self._add("axi_out", "axi_out", prog, graph.output.layer, per, n * per)
        else:
            total = n_tok * per_tok
            self._add("axi_out", "axi_out", [Step(total, total, (f,), ())], graph.output.layer, total, total)

    # --- lookups ---
    def module_index(self, name: str) -> int:
        for i, m in enumerate(self.modules):
            if m.name == name:
                return i
        raise KeyError(name)


def _unstalled_latency(prog: list[Step]) -> int:
    """Cycles from the first step's start to the last write (or step end), with no stall."""
    t, end = 0, 0
    for step in prog:
        end = max(end, t + (step.depth if step.writes else step.busy))
        t += step.busy
    return end

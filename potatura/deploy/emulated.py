"""The emulated board: DDR with physical addresses, the AXI DMA and HLS control registers, and the
accelerator computed by potatura's simulator, on a virtual clock.

It satisfies the driver's device interface (see potatura.deploy.driver) and, in the board
environment, backs a pynq.Device subclass (potatura.deploy.pynq_device) so the real pynq Overlay,
allocate, DMA and MMIO code runs against it.

Timing: the virtual clock counts accelerator clock cycles. When both DMA channels hold a transfer
(and the HLS block, if any, is started), the batch completes `Accelerator.cycles(batch).total_cycles`
cycles after the later LENGTH write (the simulator's figure for the batch streamed back to back);
a CPU polling DMASR waits for that event, so the clock jumps to it. Register accesses, cache
maintenance and host code take no virtual time: hardware-only time on this board is the
simulated accelerator time, labelled "emulated".

Faults (`board.faults`, each applies to the next `times` transfers, then clears): hang (the
accelerator never finishes), dma_error {channel: mm2s|s2mm, kind: internal|slave|decode}, flip_bit
{sample, element, bit} (one bit of one output code flipped in the datapath); slow_link_s and
corrupt_upload are applied by the agent to its responses and uploads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from potatura.deploy import driver as drv
from potatura.deploy.errors import DeployError

DDR_BASE = 0x1000_0000  # where the emulated DDR starts (Zynq boards map DDR from 0; any base works)
DDR_BYTES = 64 << 20
PAGE = 4096
DMA_ERROR_BITS = {"internal": 0x10, "slave": 0x20, "decode": 0x40}


class EmulatedBuffer(np.ndarray):
    """A buffer as pynq.allocate returns it: the CPU's cached copy of a DDR region.

    Writes go to the cached copy until flush() copies them to DDR; invalidate() rereads DDR. A
    driver that forgets either sees stale data, as on a board without coherent DMA.
    """

    physical_address: int
    _ddr: "Ddr"

    def __array_finalize__(self, obj) -> None:
        self.physical_address = getattr(obj, "physical_address", 0)
        self._ddr = getattr(obj, "_ddr", None)

    def flush(self) -> None:
        self._ddr.write(self.physical_address, np.ascontiguousarray(self).tobytes())

    def invalidate(self) -> None:
        data = self._ddr.read(self.physical_address, self.nbytes)
        self[...] = np.frombuffer(data, dtype=self.dtype).reshape(self.shape)

    def freebuffer(self) -> None:
        pass  # the bump allocator does not reuse memory (a board session allocates a handful of buffers)

    @property
    def device_address(self) -> int:
        return self.physical_address


class Ddr:
    """Byte-addressed memory from `base`, with a page-aligned bump allocator."""

    def __init__(self, base: int = DDR_BASE, size: int = DDR_BYTES):
        self.base, self.size = base, size
        self.mem = np.zeros(size, dtype=np.uint8)
        self._next = 0
        self._lock = threading.Lock()

    def contains(self, address: int, nbytes: int) -> bool:
        return self.base <= address and address + nbytes <= self.base + self.size

    def alloc(self, nbytes: int) -> int:
        with self._lock:
            offset = self._next
            if offset + nbytes > self.size:
                raise MemoryError(f"emulated DDR: {nbytes} bytes do not fit ({self.size - offset} left)")
            self._next = offset + -(-max(nbytes, 1) // PAGE) * PAGE
        return self.base + offset

    def read(self, address: int, nbytes: int) -> bytes:
        offset = address - self.base
        return self.mem[offset:offset + nbytes].tobytes()

    def write(self, address: int, data: bytes) -> None:
        offset = address - self.base
        self.mem[offset:offset + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def allocate(self, shape, dtype) -> EmulatedBuffer:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = np.zeros(shape, dtype=dtype).view(EmulatedBuffer)
        buf.physical_address = self.alloc(nbytes)
        buf._ddr = self
        return buf


@dataclass
class Faults:
    """Faults to inject; `times` counts the transfers (or uploads/responses) each one still affects."""

    hang: int = 0
    dma_error: Optional[dict] = None  # {channel: "mm2s"|"s2mm", kind: "internal"|"slave"|"decode"}
    dma_error_times: int = 0
    flip_bit: Optional[dict] = None  # {sample, element, bit}
    flip_bit_times: int = 0
    slow_link_s: float = 0.0
    slow_link_times: int = 0
    corrupt_upload: int = 0

    def set(self, spec: dict) -> None:
        """Apply a fault spec (the agent's /faults body): {"hang": {"times": 1}, "dma_error": {...}, ...}."""
        known = {"hang", "dma_error", "flip_bit", "slow_link", "corrupt_upload", "clear"}
        unknown = set(spec) - known
        if unknown:
            raise DeployError(f"faults: unknown {sorted(unknown)}; known: {sorted(known)}")
        if spec.get("clear"):
            self.__init__()
        if "hang" in spec:
            self.hang = int(spec["hang"].get("times", 1))
        if "dma_error" in spec:
            err = dict(spec["dma_error"])
            if err.get("channel") not in ("mm2s", "s2mm") or err.get("kind") not in DMA_ERROR_BITS:
                raise DeployError("faults.dma_error: channel mm2s|s2mm, kind internal|slave|decode")
            self.dma_error, self.dma_error_times = err, int(err.pop("times", 1))
        if "flip_bit" in spec:
            flip = dict(spec["flip_bit"])
            self.flip_bit_times = int(flip.pop("times", 1))
            self.flip_bit = {"sample": int(flip.get("sample", 0)), "element": int(flip.get("element", 0)),
                             "bit": int(flip.get("bit", 0))}
        if "slow_link" in spec:
            self.slow_link_s = float(spec["slow_link"]["seconds"])
            self.slow_link_times = int(spec["slow_link"].get("times", 1))
        if "corrupt_upload" in spec:
            self.corrupt_upload = int(spec["corrupt_upload"].get("times", 1))

    def take(self, name: str) -> bool:
        """Consume one application of a counted fault."""
        counter = {"hang": "hang", "dma_error": "dma_error_times", "flip_bit": "flip_bit_times",
                   "slow_link": "slow_link_times", "corrupt_upload": "corrupt_upload"}[name]
        left = getattr(self, counter)
        if left > 0:
            setattr(self, counter, left - 1)
            return True
        return False


@dataclass
class _Channel:
    dmacr: int = 0
    dmasr: int = drv.DMASR_HALTED
    addr: int = 0
    length: int = 0
    pending: bool = False
    written_at: int = 0  # virtual cycle of the LENGTH write


@dataclass
class _Batch:
    done_at: int  # virtual cycle
    out_bytes: bytes
    hang: bool = False


class _EmulatedZynq:
    """The device interface parts every emulated board shares: IP windows, DDR buffers, the virtual clock.
    Subclasses set ip_map {name: (base, range)}, ddr, clock_hz, _cycle and implement read/write(address)."""

    timing_source = "emulated"
    ip_map: dict
    ddr: Ddr
    clock_hz: float
    _cycle: int

    def __init__(self, accelerator, manifest: dict, ddr: Optional[Ddr] = None):
        self.acc, self.manifest = accelerator, manifest
        self.ddr = ddr or Ddr()
        self.faults = Faults()
        self.clock_hz = float(manifest["clock_mhz"]) * 1e6
        self._cycle = 0
        self._lock = threading.RLock()

    def ip_address(self, name: str):
        if name not in self.ip_map:
            raise DeployError(f"emulated board: no IP {name!r}; it has {sorted(self.ip_map)}")
        return self.ip_map[name]

    def mmio(self, base: int, size: int) -> "_Window":
        return _Window(self, base, size)

    def allocate(self, shape, dtype) -> EmulatedBuffer:
        return self.ddr.allocate(shape, dtype)

    def now(self) -> float:
        return self._cycle / self.clock_hz

    def cycles(self) -> int:
        return self._cycle


class EmulatedBoard(_EmulatedZynq):
    """The device interface over an emulated Zynq: DDR, one AXI DMA, the accelerator (potatura's simulator).

    accelerator: a potatura.sim.api.Accelerator (run(codes) -> codes, cycles(batch) -> CycleReport).
    manifest: the bundle manifest (IP names and addresses, tensors and their wire words, clock).
    """

    def __init__(self, accelerator, manifest: dict, ddr: Optional[Ddr] = None):
        super().__init__(accelerator, manifest, ddr)
        ip = manifest["ip"]
        self.ip_map = {ip["dma"]["name"]: (int(ip["dma"]["phys_addr"]), int(ip["dma"]["addr_range"]))}
        accel = ip["accelerator"]
        self.hls_control = accel.get("control") == "ap_ctrl_hs"
        if self.hls_control:
            self.ip_map[accel["name"]] = (int(accel["phys_addr"]), int(accel["addr_range"]))
        self.x = drv.TensorCodec("input", manifest["tensors"]["input"])
        self.y = drv.TensorCodec("output", manifest["tensors"]["output"])
        self.input_fixed = manifest["tensors"]["input"].get("type")
        self.batches = 0  # batches computed (for tests and the agent's info)
        self._reset_dma()
        self._ctrl = drv.AP_IDLE

    @classmethod
    def from_bundle(cls, bundle_dir, manifest: dict, ddr: Optional[Ddr] = None):
        """The emulated board of a bundle: its simulator design (emulation/) behind its manifest's registers
        (an EmulatedEngineBoard for a memory-mapped engine bundle)."""
        from potatura.sim.api import load_project

        acc = load_project(Path(bundle_dir) / manifest["emulation"]["dir"])
        if manifest.get("protocol") == "memory-mapped-engine":
            return EmulatedEngineBoard(acc, manifest, ddr)
        return cls(acc, manifest, ddr)

    # -- the bus ------------------------------------------------------------------------
    def read(self, address: int) -> int:
        with self._lock:
            dma_base, dma_range = self.ip_map[self.manifest["ip"]["dma"]["name"]]
            if dma_base <= address < dma_base + dma_range:
                return self._dma_read(address - dma_base)
            if self.hls_control:
                base, size = self.ip_map[self.manifest["ip"]["accelerator"]["name"]]
                if base <= address < base + size:
                    return self._ctrl_read(address - base)
            raise DeployError(f"emulated board: read of unmapped address 0x{address:x}")

    def write(self, address: int, value: int) -> None:
        with self._lock:
            value = int(value) & 0xFFFFFFFF
            dma_base, dma_range = self.ip_map[self.manifest["ip"]["dma"]["name"]]
            if dma_base <= address < dma_base + dma_range:
                return self._dma_write(address - dma_base, value)
            if self.hls_control:
                base, size = self.ip_map[self.manifest["ip"]["accelerator"]["name"]]
                if base <= address < base + size:
                    return self._ctrl_write(address - base, value)
            raise DeployError(f"emulated board: write of unmapped address 0x{address:x}")

    # -- AXI DMA model ----------------------------------------------------------------------
    def _reset_dma(self) -> None:
        self.mm2s, self.s2mm = _Channel(), _Channel()
        self._batch: Optional[_Batch] = None

    def _channel(self, offset: int):
        return (self.s2mm, offset - drv.S2MM_OFFSET) if offset >= drv.S2MM_OFFSET else (self.mm2s, offset)

    def _dma_read(self, offset: int) -> int:
        channel, reg = self._channel(offset)
        if reg == drv.DMASR:
            self._advance_to_completion()
            return channel.dmasr
        return {drv.DMACR: channel.dmacr, drv.ADDR_LO: channel.addr & 0xFFFFFFFF,
                drv.ADDR_HI: channel.addr >> 32, drv.LENGTH: channel.length}.get(reg, 0)

    def _dma_write(self, offset: int, value: int) -> None:
        channel, reg = self._channel(offset)
        if reg == drv.DMACR:
            if value & drv.DMACR_RESET:  # resets the whole core; the bit reads back 0 at once
                self._reset_dma()
                return
            channel.dmacr = value
            if value & drv.DMACR_RUN:
                channel.dmasr &= ~drv.DMASR_HALTED
            else:
                channel.dmasr |= drv.DMASR_HALTED
        elif reg == drv.ADDR_LO:
            channel.addr = (channel.addr & ~0xFFFFFFFF) | value
        elif reg == drv.ADDR_HI:
            channel.addr = (channel.addr & 0xFFFFFFFF) | (value << 32)
        elif reg == drv.LENGTH:
            if channel.dmasr & drv.DMASR_HALTED:
                return  # a halted channel ignores LENGTH (the transfer never starts)
            channel.length, channel.pending, channel.written_at = value, True, self._cycle
            channel.dmasr &= ~drv.DMASR_IDLE
            name = "mm2s" if channel is self.mm2s else "s2mm"
            if self.faults.dma_error and self.faults.dma_error["channel"] == name and self.faults.take("dma_error"):
                self._dma_fail(channel, DMA_ERROR_BITS[self.faults.dma_error["kind"]])
                return
            if not self.ddr.contains(channel.addr, value):
                self._dma_fail(channel, DMA_ERROR_BITS["decode"])
                return
            self._kick()

    def _dma_fail(self, channel: _Channel, bits: int) -> None:
        channel.dmasr = (channel.dmasr | bits | drv.DMASR_HALTED) & ~drv.DMASR_IDLE
        channel.pending = False
        self._batch = None

    def _kick(self) -> None:
        """Both channels hold a transfer and the IP runs: compute the batch and schedule its completion."""
        if not (self.mm2s.pending and self.s2mm.pending) or self._batch is not None:
            return
        if self.hls_control and not self._ctrl & (drv.AP_START | drv.AP_AUTO_RESTART):
            return  # the HLS block is not started: the stream stalls (a started block kicks again)
        words = np.frombuffer(self.ddr.read(self.mm2s.addr, self.mm2s.length), dtype=self.x.wire_dtype)
        samples = len(words) // self.x.size
        start = max(self.mm2s.written_at, self.s2mm.written_at)
        if samples == 0 or len(words) % self.x.size or self.faults.take("hang"):
            # A short last sample never gets its TLAST through the IP: no output, no completion.
            self._batch = _Batch(done_at=start, out_bytes=b"", hang=True)
            return
        codes = self._input_codes(words).reshape((samples,) + self.x.shape)
        y = np.asarray(self.acc.run(codes), dtype=np.int64).reshape(samples, -1)
        if self.faults.flip_bit and self.faults.take("flip_bit"):
            flip = self.faults.flip_bit
            y[flip["sample"] % samples, flip["element"] % y.shape[1]] ^= 1 << flip["bit"]
        out = (y.reshape(-1) * (2.0 ** -self.y.frac)).astype(self.y.wire_dtype)
        cycles = int(self.acc.cycles(samples).total_cycles)
        self._batch = _Batch(done_at=start + cycles, out_bytes=out.tobytes())
        self.batches += 1

    def _input_codes(self, words: np.ndarray) -> np.ndarray:
        """The IP's cast of float words to the input type: exact words give their code; others are
        rounded and saturated by the simulator's fixed-point implementation (the one model)."""
        values = words.astype(np.float64) * (2.0 ** self.x.frac)
        codes = np.round(values)
        if np.all(codes == values) and codes.min() >= self.x.min_code and codes.max() <= self.x.max_code:
            return codes.astype(np.int64)
        from potatura.hw.types import FixedType
        from potatura.sim import fixed

        return np.asarray(fixed.from_float(words, FixedType.from_dict(self.input_fixed)), dtype=np.int64)

    def _advance_to_completion(self) -> None:
        batch = self._batch
        if batch is None or batch.hang:
            return
        # The CPU polling DMASR waits for the accelerator: the virtual clock jumps to the completion.
        self._cycle = max(self._cycle, batch.done_at)
        room = self.s2mm.length
        data = batch.out_bytes[:room]
        self.ddr.write(self.s2mm.addr, data)
        self.s2mm.length = len(data)  # S2MM LENGTH reads back the bytes received (TLAST may end it early)
        self.s2mm.pending = False
        self.s2mm.dmasr |= drv.DMASR_IDLE
        if len(batch.out_bytes) <= room:
            # The whole packet left the IP, so it has consumed the whole input stream.
            self.mm2s.pending = False
            self.mm2s.dmasr |= drv.DMASR_IDLE
            self._ctrl |= drv.AP_DONE
        else:
            batch.hang = True  # the rest of the packet has nowhere to go: the IP stalls, MM2S never ends
        self._batch = None if not batch.hang else batch

    # -- HLS ap_ctrl_hs model ----------------------------------------------------------------
    def _ctrl_read(self, offset: int) -> int:
        if offset != drv.CTRL:
            return 0
        value = self._ctrl
        if not self._ctrl & (drv.AP_START | drv.AP_AUTO_RESTART):
            value |= drv.AP_IDLE
        self._ctrl &= ~drv.AP_DONE  # ap_done is clear-on-read
        return value

    def _ctrl_write(self, offset: int, value: int) -> None:
        if offset != drv.CTRL:
            return
        self._ctrl = value & (drv.AP_START | drv.AP_AUTO_RESTART)
        if self._ctrl:
            self._ctrl &= ~drv.AP_IDLE
            self._kick()


class EmulatedEngineBoard(_EmulatedZynq):
    """The device interface over an emulated Zynq whose PL holds a memory-mapped engine (HLSinf-style).

    The engine is an HLS core with ap_ctrl_hs at 0x00 and its arguments in AXI-Lite registers from
    0x10 (manifest ip.engine.registers). On ap_start it decodes its arguments, reads its filters and
    biases from DDR at the addresses the driver wrote and identifies the plan's kernel call they
    make (the emulation computes the design's calls only: arguments or weights that match none are
    a DeployError naming them), reads the call's input (and residual) tensor from DDR at act_in
    (act_add), computes the call with the simulator's per-call step (HlsinfAccelerator.call_outputs:
    the functional model, bit-exact with the engine's C simulation) and, when the CPU sees ap_done,
    has written the call's output rows into DDR at act_out. The virtual clock advances by the
    simulator's cycles for that call (HlsinfAccelerator.call_timing).

    Faults: hang (the next call never finishes; reset_pl(), a reload of the overlay, clears it),
    flip_bit {element, bit} (one bit of one code of the next call that writes the network's output),
    an m_axi address outside DDR hangs the engine (a real core stalls on a decode error). DMA faults
    do not apply: there is no DMA.
    """

    def __init__(self, accelerator, manifest: dict, ddr: Optional[Ddr] = None):
        from potatura.hwgen.hlsinf.planner import unpack_activations, pack_activations

        self._unpack, self._pack = unpack_activations, pack_activations
        super().__init__(accelerator, manifest, ddr)
        ip = manifest["ip"]["engine"]
        self.ip_map = {ip["name"]: (int(ip["phys_addr"]), int(ip["addr_range"]))}
        self.registers = ip["registers"]
        self.pointer_args, self.call_args = ip["pointer_args"], ip["call_args"]
        plan = accelerator.plan
        self.plan, self.cpi = plan, plan.engine.cpi
        self.words = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}
        self.timing = accelerator.call_timing()
        self._regs: dict[int, int] = {}
        self._ctrl = drv.AP_IDLE
        self._pending: Optional[dict] = None
        self._frame_cache: Optional[tuple] = None  # (key, the fused layer's whole output tensor)
        self.batches = 0  # samples whose output call completed
        self.calls = 0

    def reset_pl(self) -> None:
        """What reloading the overlay does to the engine: idle, nothing pending, registers cleared."""
        with self._lock:
            self._regs, self._pending, self._ctrl, self._frame_cache = {}, None, drv.AP_IDLE, None

    # -- the bus ------------------------------------------------------------------------
    def _offset(self, address: int) -> int:
        base, size = next(iter(self.ip_map.values()))
        if not base <= address < base + size:
            raise DeployError(f"emulated board: access to unmapped address 0x{address:x}")
        return address - base

    def read(self, address: int) -> int:
        with self._lock:
            offset = self._offset(address)
            if offset != drv.CTRL:
                return self._regs.get(offset, 0)
            pending = self._pending
            if pending is None:
                value = self._ctrl
                self._ctrl &= ~drv.AP_DONE  # ap_done is clear-on-read
                return value
            if pending["hang"]:
                return 0  # busy: not done, not idle
            # The CPU polling ap_done waits for the engine: the virtual clock jumps to the call's end.
            self._cycle = max(self._cycle, pending["done_at"])
            self.ddr.write(pending["address"], pending["data"])
            self._pending = None
            self.calls += 1
            if pending["last"]:
                self.batches += 1
            self._ctrl = drv.AP_IDLE
            return drv.AP_DONE | drv.AP_IDLE

    def write(self, address: int, value: int) -> None:
        with self._lock:
            offset, value = self._offset(address), int(value) & 0xFFFFFFFF
            if offset != drv.CTRL:
                self._regs[offset] = value
            elif value & drv.AP_START and self._pending is None:  # ap_start while busy is ignored
                self._ctrl &= ~(drv.AP_IDLE | drv.AP_DONE)
                self._start()

    # -- the engine ---------------------------------------------------------------------
    def _argument(self, name: str) -> int:
        reg = self.registers[name]
        offset, bits = int(reg["offset"]), int(reg["bits"])
        value = self._regs.get(offset, 0) | ((self._regs.get(offset + 4, 0) << 32) if bits == 64 else 0)
        if reg.get("signed") and value >= 1 << (bits - 1):
            value -= 1 << bits
        return value

    def _read_words(self, address: int, count: int, bits: int) -> Optional[np.ndarray]:
        nbytes = count * bits // 8
        if not self.ddr.contains(address, nbytes):
            return None
        return np.frombuffer(self.ddr.read(address, nbytes), dtype=self.words[bits]).astype(np.int64)

    def _find_call(self, args: list[int], pointers: dict) -> int:
        """The index of the plan's call these arguments and the weights in DDR make."""
        e = self.plan.engine
        packed = self.acc.packed_weights()
        same_args = [i for i, c in enumerate(self.plan.calls) if c.args() == args]
        if not same_args:
            raise DeployError(f"emulated engine: arguments {args} match no kernel call of the design's plan (the "
                              "emulated board computes the calls of the bundle's design only)")
        for i in same_args:
            p = packed[self.plan.calls[i].filters]
            filters = self._read_words(pointers["filters"], p.filters.size, e.weight_bits)
            bias = self._read_words(pointers["bias"], p.bias.size, e.acc_bits)
            if filters is not None and bias is not None and np.array_equal(filters, p.filters.reshape(-1)) \
                    and np.array_equal(bias, p.bias.reshape(-1)):
                return i
        layers = sorted({self.plan.calls[i].layer for i in same_args})
        raise DeployError(f"emulated engine: the filters at 0x{pointers['filters']:x} / bias at 0x{pointers['bias']:x} "
                          f"are not the packed weights of layer(s) {', '.join(layers)} that these arguments run")

    def _frame_rows(self, call, pointers: dict, read_tensor) -> np.ndarray:
        """The call's output rows. The row frames of one layer read the same tensors: the fused layer is
        computed once (keyed by the layer and the bytes it reads) and each frame writes its rows of it."""
        inputs = [(n, read_tensor(n)) for n in (call.input, call.add_input) if n is not None]
        key = (call.layer, tuple((n, a.tobytes()) for n, a in inputs))
        if self._frame_cache is None or self._frame_cache[0] != key:
            known = dict(inputs)
            self._frame_cache = (key, self.acc.call_tensor(call, lambda n: known[n] if n in known else read_tensor(n)))
        full = self._frame_cache[1]
        return full[call.out_row0:call.out_row0 + call.out_rows].copy()

    def _start(self) -> None:
        args = [self._argument(n) for n in self.call_args]
        pointers = {n: self._argument(n) for n in self.pointer_args}
        index = self._find_call(args, pointers)
        call = self.plan.calls[index]
        start = self._cycle
        if self.faults.take("hang"):
            self._pending = {"hang": True}
            return
        data_bits = self.plan.engine.data_bits

        def read_tensor(name: str) -> np.ndarray:
            address = pointers["act_in"] if name == call.input else pointers["act_add"]
            t = self.plan.tensors[name]
            words = self._read_words(address, t.words(self.cpi), data_bits)
            if words is None:
                raise _AxiDecodeError(name)
            return self._unpack(words, t, self.cpi)

        t = self.plan.tensors[call.output]
        current = self._read_words(pointers["act_out"], t.words(self.cpi), data_bits)
        try:
            rows = self._frame_rows(call, pointers, read_tensor)
        except _AxiDecodeError:
            current = None
        if current is None:  # an m_axi read or write outside DDR: the core stalls on the decode error
            self._pending = {"hang": True}
            return
        last = call.output == self.plan.output and call.frame == call.frames - 1
        if call.output == self.plan.output and self.faults.flip_bit and self.faults.take("flip_bit"):
            flip = self.faults.flip_bit
            flat = rows.reshape(-1)
            flat[flip["element"] % flat.size] ^= 1 << flip["bit"]
        full = self._unpack(current, t, self.cpi).copy()
        full[call.out_row0:call.out_row0 + call.out_rows] = rows
        words = self._pack(full, self.cpi).astype(self.words[data_bits])
        self._pending = {"hang": False, "done_at": start + int(self.timing[index]["cycles"]),
                         "address": pointers["act_out"], "data": words.tobytes(), "last": last}


class _AxiDecodeError(Exception):
    """An engine memory access outside DDR (internal to the emulated engine)."""


class _Window:
    """MMIO over one address window of the emulated bus (pynq.MMIO's read/write(offset) interface)."""

    def __init__(self, board: EmulatedBoard, base: int, size: int):
        self.board, self.base, self.size = board, base, size

    def read(self, offset: int = 0, length: int = 4) -> int:
        return self.board.read(self.base + offset)

    def write(self, offset: int, value: int) -> None:
        self.board.write(self.base + offset, value)


def start_emulated_agent(bundle_dir=None, store_dir=None, token: Optional[str] = None):
    """An agent on the emulated board, serving on 127.0.0.1 (an ephemeral port) in a thread of this process.

    With bundle_dir, the bundle is uploaded through the store's checks and loaded, so run() works
    at once (client.deploy(bundle_dir) works too). Returns (url, token, stop); stop() shuts the
    server down and removes a store it made.
    """
    import shutil
    import tempfile

    from potatura.deploy import bundle as bundles
    from potatura.deploy.agent import AgentCore, generate_token, make_server

    own_store = store_dir is None
    store = Path(tempfile.mkdtemp(prefix="potatura-agent-")) if own_store else Path(store_dir)
    token = token or generate_token()
    core = AgentCore(store, emulated=True)
    if bundle_dir is not None:
        bundle_id, _ = bundles.unpack_upload(bundles.pack_bundle(bundle_dir), store, core.max_upload)
        core.load(bundle_id)
    server = make_server(core, token, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="potatura-emulated-agent", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if own_store:
            shutil.rmtree(store, ignore_errors=True)

    return url, token, stop

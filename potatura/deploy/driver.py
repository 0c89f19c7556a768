"""The board-side driver: fixed-point tensors in, AXI DMA + HLS IP, integer codes out, with deadlines.

Runs on the board (stdlib + numpy + pynq; Python 3.10, numpy 1.x) and, unchanged, against the
emulated board. It talks to the hardware through a small device interface that both the real pynq
objects (`PynqDevice`: pynq.Overlay, pynq.MMIO, pynq.allocate) and
`potatura.deploy.emulated.EmulatedBoard` satisfy:

    device.timing_source        "measured" (a real board) or "emulated" (virtual clock, simulated cycles)
    device.ip_address(name)     -> (physical base address, range in bytes) of an IP in the design
    device.mmio(base, size)     -> registers with read(offset) -> int and write(offset, int) (32-bit)
    device.allocate(shape, dtype) -> numpy array with .physical_address, .flush(), .invalidate()
    device.now()                -> seconds on the clock hardware-only time is measured with
    device.cycles()             optional: the accelerator clock's cycle counter (emulated board)

The AXI DMA is programmed through its registers (offsets and status bits of the AXI DMA product
guide, simple mode) rather than pynq's DMA class because pynq's channel.wait() polls with no
timeout (a hung accelerator hangs the caller) and pynq reports every error after the first as
"DMA channel not started": here every wait has a deadline, each DMASR error bit is its own exception,
and an error resets the DMA so the next call works.

Two bundle protocols (manifest "protocol"; `make_driver` picks the driver): "axi-stream-dma" (this
module's Driver: the hls4ml AXI-stream accelerator behind an AXI DMA) and "memory-mapped-engine"
(potatura.deploy.engine.EngineDriver: an HLSinf-style engine with ap_ctrl_hs and m_axi ports, one
register-programmed call per fused layer).

Wire format (the hls4ml AXI-stream wrapper of the hwgen project): one packet per batch, channels-last,
input words float32 holding the exact value code * 2**-frac; output words float32 or float64 (the
manifest says which), exact values of the output type; TLAST on the batch's last word.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from potatura.deploy.errors import (
    DMA_ERRORS, AcceleratorHangError, DeadlineError, DeployError, InputError, WireFormatError)

# AXI DMA (simple mode) register offsets: MM2S (memory -> stream) at 0x00, S2MM at 0x30.
DMACR, DMASR, ADDR_LO, ADDR_HI, LENGTH = 0x00, 0x04, 0x18, 0x1C, 0x28
S2MM_OFFSET = 0x30  # S2MM registers sit 0x30 above their MM2S twins (DA 0x48/0x4C, LENGTH 0x58)
DMACR_RUN, DMACR_RESET = 0x1, 0x4
DMASR_HALTED, DMASR_IDLE = 0x1, 0x2
DMASR_ERRORS = 0x70  # 0x10 internal, 0x20 slave, 0x40 decode

# HLS ap_ctrl_hs block (only for IPs built with one; hls4ml's AXI-stream wrapper is ap_ctrl_none).
CTRL, GIE, IER, ISR = 0x00, 0x04, 0x08, 0x0C
AP_START, AP_DONE, AP_IDLE, AP_READY, AP_AUTO_RESTART = 0x1, 0x2, 0x4, 0x8, 0x80

WIRE_DTYPES = {"float32": np.float32, "float64": np.float64}


class DmaChannel:
    """One direction of the AXI DMA (simple mode) over its registers."""

    def __init__(self, regs, offset: int, name: str, max_length: int):
        self.regs, self.offset, self.name, self.max_length = regs, offset, name, max_length

    def read(self, reg: int) -> int:
        return int(self.regs.read(self.offset + reg))

    def write(self, reg: int, value: int) -> None:
        self.regs.write(self.offset + reg, int(value))

    def start(self) -> None:
        self.write(DMACR, DMACR_RUN)

    def status(self) -> int:
        return self.read(DMASR)

    def transfer(self, physical_address: int, nbytes: int) -> None:
        """Program one transfer of `nbytes` bytes; writing LENGTH starts it."""
        if not 0 < nbytes <= self.max_length:
            raise DeployError(f"{self.name}: transfer of {nbytes} bytes outside 1..{self.max_length} "
                              "(the DMA's length register width)")
        status = self.status()
        if status & DMASR_HALTED:
            self.start()
        self.write(ADDR_LO, physical_address & 0xFFFFFFFF)
        self.write(ADDR_HI, (physical_address >> 32) & 0xFFFFFFFF)
        self.write(LENGTH, nbytes)


class AxiDma:
    """MM2S and S2MM channels of one AXI DMA, with deadline-bounded waits and a reset after errors."""

    def __init__(self, regs, max_length: int = (1 << 26) - 1, name: str = "axi_dma"):
        self.regs, self.name = regs, name
        self.mm2s = DmaChannel(regs, 0, f"{name} MM2S", max_length)
        self.s2mm = DmaChannel(regs, S2MM_OFFSET, f"{name} S2MM", max_length)

    def reset(self, deadline_s: float = 1.0) -> None:
        """Soft reset (DMACR bit 2 resets the whole core), then run both channels."""
        self.mm2s.write(DMACR, DMACR_RESET)
        end = time.monotonic() + deadline_s
        while self.mm2s.read(DMACR) & DMACR_RESET:
            if time.monotonic() > end:
                raise DeadlineError(f"{self.name}: reset did not finish within {deadline_s:g} s")
            time.sleep(1e-4)
        self.mm2s.start()
        self.s2mm.start()

    def _raise_on_error(self) -> None:
        for channel in (self.mm2s, self.s2mm):
            status = channel.status()
            if status & DMASR_ERRORS:
                self.reset()  # the core halts on an error; without a reset every later transfer fails
                for cls in DMA_ERRORS:
                    if status & cls.status_bit:
                        raise cls(f"{channel.name}: DMASR 0x{status:08x} ({cls.__doc__.split(':')[0]}); "
                                  "the DMA was reset")

    def wait(self, deadline_s: float) -> None:
        """Poll both channels until idle; typed error on a DMASR error bit or past `deadline_s` (wall seconds)."""
        end = time.monotonic() + deadline_s
        polls = 0
        while True:
            self._raise_on_error()
            mm2s, s2mm = self.mm2s.status(), self.s2mm.status()
            if mm2s & DMASR_IDLE and s2mm & DMASR_IDLE:
                return
            if time.monotonic() > end:
                raise AcceleratorHangError(
                    f"{self.name}: no complete result within {deadline_s:g} s (MM2S DMASR 0x{mm2s:08x} "
                    f"{'idle' if mm2s & DMASR_IDLE else 'busy'}, S2MM DMASR 0x{s2mm:08x} "
                    f"{'idle' if s2mm & DMASR_IDLE else 'busy'}): the accelerator hangs or the stream is short")
            polls += 1
            if polls > 1000:  # spin for the short transfers, then yield the CPU
                time.sleep(5e-5)


class HlsControl:
    """The HLS ap_ctrl_hs register block: free-running with auto-restart while a bundle is loaded."""

    def __init__(self, regs, name: str = "accelerator"):
        self.regs, self.name = regs, name

    def start_free_running(self) -> None:
        self.regs.write(CTRL, AP_START | AP_AUTO_RESTART)

    def stop(self, deadline_s: float = 1.0) -> None:
        """Clear auto-restart and wait for ap_idle (the current sample finishes)."""
        self.regs.write(CTRL, 0)
        end = time.monotonic() + deadline_s
        while not int(self.regs.read(CTRL)) & AP_IDLE:
            if time.monotonic() > end:
                raise AcceleratorHangError(f"{self.name}: not idle {deadline_s:g} s after stop (CTRL "
                                           f"0x{int(self.regs.read(CTRL)):02x})")
            time.sleep(1e-4)


def check_codes(name: str, codes, shape: tuple, min_code: int, max_code: int) -> np.ndarray:
    """(N, *shape) int64 codes (one sample of `shape` gets a batch axis); InputError for a wrong shape,
    values that are not whole, or codes outside [min_code, max_code]."""
    codes = np.asarray(codes)
    if codes.ndim == len(shape):
        codes = codes[None]
    if tuple(codes.shape[1:]) != tuple(shape):
        raise InputError(f"{name}: codes of shape {list(codes.shape)}, the accelerator takes "
                         f"(N, {', '.join(map(str, shape))})")
    if codes.dtype.kind not in "iu":
        if codes.dtype.kind != "f" or not np.all(np.isfinite(codes)) or np.any(codes != np.round(codes)):
            raise InputError(f"{name}: integer codes expected, got {codes.dtype} values that are not whole")
    codes = codes.astype(np.int64)
    if codes.size and (codes.min() < min_code or codes.max() > max_code):
        raise InputError(f"{name}: codes in [{codes.min()}, {codes.max()}] outside the type's "
                         f"[{min_code}, {max_code}]")
    return codes


class TensorCodec:
    """Integer codes <-> AXI-stream words for one tensor of the manifest.

    spec: {"shape": [...], "frac": f, "min_code": lo, "max_code": hi, "wire": {"dtype": "float32"}};
    a word holds the exact value code * 2**-frac.
    """

    def __init__(self, name: str, spec: dict):
        self.name = name
        self.shape = tuple(int(d) for d in spec["shape"])
        self.size = int(np.prod(self.shape))
        self.frac = int(spec["frac"])
        self.min_code, self.max_code = int(spec["min_code"]), int(spec["max_code"])
        wire = spec["wire"]["dtype"]
        if wire not in WIRE_DTYPES:
            raise DeployError(f"manifest tensor {name}: wire dtype {wire!r}, expected one of {sorted(WIRE_DTYPES)}")
        self.wire_dtype = np.dtype(WIRE_DTYPES[wire])
        self.scale = 2.0 ** -self.frac

    @property
    def bytes_per_sample(self) -> int:
        return self.size * self.wire_dtype.itemsize

    def check_codes(self, codes) -> np.ndarray:
        return check_codes(self.name, codes, self.shape, self.min_code, self.max_code)

    def encode_into(self, codes: np.ndarray, words: np.ndarray) -> None:
        """Write the exact values of `codes` (N, *shape) into the first N*size words of `words`."""
        flat = codes.reshape(-1)
        np.multiply(flat, self.scale, out=words[:flat.size], casting="unsafe")

    def decode(self, words: np.ndarray, n: int) -> np.ndarray:
        """(n, *shape) int64 codes from n*size words; WireFormatError for a word that is no value of the type."""
        values = np.asarray(words[:n * self.size], dtype=np.float64) * (2.0 ** self.frac)
        codes = np.round(values)
        bad = ~np.isfinite(values) | (codes != values) | (codes < self.min_code) | (codes > self.max_code)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WireFormatError(f"{self.name}: word {i} (sample {i // self.size}, element {i % self.size}) = "
                                  f"{float(words[i])!r} is no value of the output type (code range "
                                  f"[{self.min_code}, {self.max_code}], lsb 2**-{self.frac})")
        return codes.astype(np.int64).reshape((n,) + self.shape)


class Driver:
    """One loaded accelerator: run(x_codes) -> (y_codes, timing).

    manifest: the bundle manifest (its "ip", "dma", "tensors" and "timing" sections). Buffers are
    allocated once per batch capacity (pynq.allocate on a board) and reused; a bigger batch
    allocates bigger ones (never a buffer without its own physical address).
    """

    def __init__(self, device, manifest: dict):
        self.device, self.manifest = device, manifest
        ip = manifest["ip"]
        dma_base, dma_range = device.ip_address(ip["dma"]["name"])
        self.dma = AxiDma(device.mmio(dma_base, dma_range), int(manifest["dma"]["max_transfer_bytes"]),
                          ip["dma"]["name"])
        self.control = None
        accel = ip["accelerator"]
        if accel.get("control") == "ap_ctrl_hs":
            base, size = device.ip_address(accel["name"])
            self.control = HlsControl(device.mmio(base, size), accel["name"])
        self.x = TensorCodec("input", manifest["tensors"]["input"])
        self.y = TensorCodec("output", manifest["tensors"]["output"])
        timing = manifest.get("timing", {})
        self.clock_hz = float(manifest["clock_mhz"]) * 1e6
        # Deadline of one transfer: a floor for the host's scheduling plus a margin over the simulated time.
        self.min_deadline_s = float(timing.get("min_deadline_s", 1.0))
        self.cycles_per_sample = float(timing.get("interval_cycles") or 0)
        self.max_batch = max(1, int(manifest["dma"]["max_transfer_bytes"])
                             // max(self.x.bytes_per_sample, self.y.bytes_per_sample))
        self._capacity = 0
        self._in = self._out = None
        self.reset()

    def reset(self) -> None:
        """Reset the DMA and (re)start the HLS block: the state after load, also after an error or hang."""
        if self.control is not None:
            try:
                self.control.stop()
            except AcceleratorHangError:
                pass  # the DMA reset below and a fresh start are the recovery
        self.dma.reset()
        if self.control is not None:
            self.control.start_free_running()

    def _buffers(self, n: int):
        if n > self._capacity:
            capacity = max(n, 2 * self._capacity)
            self._in = self.device.allocate((capacity * self.x.size,), self.x.wire_dtype)
            self._out = self.device.allocate((capacity * self.y.size,), self.y.wire_dtype)
            self._capacity = capacity
        return self._in, self._out

    def deadline_for(self, n: int) -> float:
        """Wall seconds allowed for n samples: the floor, or 10x the simulated time when larger."""
        simulated = n * self.cycles_per_sample / self.clock_hz
        return max(self.min_deadline_s, 10.0 * simulated)

    def run(self, x_codes, deadline_s: Optional[float] = None):
        """(N, *input shape) integer codes -> ((N, *output shape) int64 codes, timing dict).

        timing: end_to_end_s (wall, encode to decode, "measured"), hardware_s (DMA start to both
        channels idle, on device.now(): "measured" on a board, "emulated" on the emulated board),
        hardware_cycles (the emulated board's cycle counter), source, batch.
        """
        t_begin = time.perf_counter()
        codes = self.x.check_codes(x_codes)
        n = len(codes)
        if n == 0:
            raise InputError("input: an empty batch")
        y = np.empty((n,) + self.y.shape, dtype=np.int64)
        hardware_s = 0.0
        cycles = 0 if hasattr(self.device, "cycles") else None
        for start in range(0, n, self.max_batch):
            chunk = codes[start:start + self.max_batch]
            m = len(chunk)
            buf_in, buf_out = self._buffers(m)
            self.x.encode_into(chunk, buf_in)
            buf_in.flush()
            c0 = self.device.cycles() if cycles is not None else 0
            t0 = self.device.now()
            self.dma.s2mm.transfer(buf_out.physical_address, m * self.y.bytes_per_sample)
            self.dma.mm2s.transfer(buf_in.physical_address, m * self.x.bytes_per_sample)
            try:
                self.dma.wait(deadline_s if deadline_s is not None else self.deadline_for(m))
            except AcceleratorHangError:
                self.reset()  # stop the stuck transfer so the next call starts clean
                raise
            hardware_s += self.device.now() - t0
            if cycles is not None:
                cycles += self.device.cycles() - c0
            buf_out.invalidate()
            y[start:start + m] = self.y.decode(buf_out, m)
        timing = {"batch": n, "end_to_end_s": time.perf_counter() - t_begin, "hardware_s": hardware_s,
                  "source": self.device.timing_source}
        if cycles is not None:
            timing["hardware_cycles"] = int(cycles)
        return y, timing


PROTOCOLS = ("axi-stream-dma", "memory-mapped-engine")


def make_driver(device, manifest: dict, bundle_dir):
    """The driver of a bundle's protocol (manifest "protocol"; bundles without one are AXI-stream DMA)."""
    protocol = manifest.get("protocol", "axi-stream-dma")
    if protocol == "memory-mapped-engine":
        from potatura.deploy.engine import EngineDriver

        return EngineDriver(device, manifest, bundle_dir)
    if protocol != "axi-stream-dma":
        raise DeployError(f"bundle protocol {protocol!r}: this driver knows {', '.join(PROTOCOLS)}")
    return Driver(device, manifest)


def fill_zynq7000_clocks(description) -> None:
    """pynq 4.0's metadata parser leaves Zynq-7000 PL clock frequencies empty (download() then fails):
    take them from the PS7's PCW_ACT_FPGA{n}_PERIPHERAL_FREQMHZ parameters."""
    clocks = getattr(description, "clock_dict", None)
    if not clocks:
        return
    params = {}
    for ip in getattr(description, "ip_dict", {}).values():
        if "processing_system7" in str(ip.get("type", "")):
            params = ip.get("parameters", {})
    for index, clock in clocks.items():
        if not clock.get("frequency"):
            value = params.get(f"PCW_ACT_FPGA{index}_PERIPHERAL_FREQMHZ") or params.get(
                f"PCW_FPGA{index}_PERIPHERAL_FREQMHZ")
            if value:
                clock["frequency"] = float(value)


class PynqDevice:
    """The device interface on a real PYNQ board (or any pynq device): Overlay, MMIO, allocate."""

    timing_source = "measured"

    def __init__(self, bitfile: str, download: bool = True, device=None):
        import pynq

        self._pynq = pynq
        self.overlay = pynq.Overlay(str(bitfile), download=False, device=device)
        fill_zynq7000_clocks(self.overlay)
        if download:
            self.overlay.download()
        self._device = device
        backing = device or pynq.Device.active_device
        if getattr(backing, "timing_source", None) == "emulated":
            # potatura's emulated board behind pynq: hardware time is its virtual clock (simulated cycles)
            self.timing_source = "emulated"
            self.now, self.cycles = backing.now, backing.cycles

    def ip_address(self, name: str):
        ip = self.overlay.ip_dict.get(name)
        if ip is None:
            raise DeployError(f"the overlay has no IP {name!r}; it has: {', '.join(sorted(self.overlay.ip_dict))}")
        return int(ip["phys_addr"]), int(ip["addr_range"])

    def mmio(self, base: int, size: int):
        if self._device is not None:
            return self._pynq.MMIO(base, size, device=self._device)
        return self._pynq.MMIO(base, size)

    def allocate(self, shape, dtype):
        if self._device is not None:
            return self._pynq.allocate(shape=shape, dtype=dtype, target=self._device)
        return self._pynq.allocate(shape=shape, dtype=dtype)

    def ip_registers(self, name: str) -> dict:
        """{register name: byte offset} of an IP's AXI-Lite registers as the .hwh describes them (empty
        when it lists none, e.g. potatura's generated .hwh of an unbuilt design)."""
        ip = self.overlay.ip_dict.get(name) or {}
        return {reg: int(info["address_offset"]) for reg, info in (ip.get("registers") or {}).items()
                if "address_offset" in info}

    def reset_pl(self) -> None:
        """Reset the programmable logic by downloading the overlay again (recovers a hung HLS core)."""
        self.overlay.download()

    def now(self) -> float:
        return time.perf_counter()

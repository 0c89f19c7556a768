"""The board-side driver of a memory-mapped engine bundle (HLSinf-style: one fused layer engine, host loop).

Runs on the board (stdlib + numpy + pynq; Python 3.10, numpy 1.x) and, unchanged, against the
emulated board, through the device interface of potatura.deploy.driver. Unlike the AXI-stream
accelerator, the engine reads and writes DDR itself through its m_axi ports: the driver allocates
one buffer per activation tensor of the plan and one filter + one bias buffer per layer, then for
every sample writes the input words, and for every kernel call of the manifest writes the call's
buffer addresses and run-time arguments into the engine's AXI-Lite registers, sets ap_start and
polls ap_done with a deadline (a hung engine raises AcceleratorHangError instead of hanging the
caller), and finally reads the output words back.

Everything model-specific comes from the bundle, computed on the host by potatura's planner (one
implementation): the calls and their argument values (manifest "calls"), the register map
(manifest "ip.engine.registers"), the packed weights and the GHWC word <-> element maps
(engine.npz: "<layer>/filters", "<layer>/bias", "input_index", "output_index").
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from potatura.deploy.driver import AP_DONE, AP_START, CTRL, check_codes
from potatura.deploy.errors import AcceleratorHangError, DeployError, InputError

INT_DTYPES = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}


class EngineDriver:
    """One loaded engine bundle: run(x_codes) -> (y_codes, timing), as potatura.deploy.driver.Driver.

    manifest: the bundle manifest (protocol "memory-mapped-engine"); bundle_dir: where engine.npz is.
    Buffers are allocated once at load (pynq.allocate on a board) and reused for every sample.
    """

    def __init__(self, device, manifest: dict, bundle_dir):
        self.device, self.manifest = device, manifest
        ip = manifest["ip"]["engine"]
        self.name = ip["name"]
        base, size = device.ip_address(ip["name"])
        self.regs = device.mmio(base, size)
        self.registers, self.register_source = self._register_map(device, ip["registers"])
        self.pointer_args, self.call_args = ip["pointer_args"], ip["call_args"]
        cfg = manifest["engine"]
        self.calls = manifest["calls"]
        self.inp, self.out = manifest["tensors"]["input"], manifest["tensors"]["output"]
        self.in_shape, self.out_shape = tuple(self.inp["shape"]), tuple(self.out["shape"])
        self.clock_hz = float(manifest["clock_mhz"]) * 1e6
        timing = manifest.get("timing", {})
        self.min_deadline_s = float(timing.get("min_deadline_s", 1.0))
        data_t = INT_DTYPES[int(cfg["data_bits"])]
        self.buffers = {name: device.allocate((int(b["words"]),), data_t) for name, b in manifest["buffers"].items()}
        self.weights = {}
        with np.load(Path(bundle_dir) / manifest["engine_file"], allow_pickle=False) as data:
            self.input_index = np.asarray(data["input_index"], dtype=np.int64)
            self.output_index = np.asarray(data["output_index"], dtype=np.int64)
            for layer in sorted({c["filters"] for c in self.calls}):
                filters = np.asarray(data[layer + "/filters"]).reshape(-1)
                bias = np.asarray(data[layer + "/bias"]).reshape(-1)
                f = device.allocate((filters.size,), INT_DTYPES[int(cfg["weight_bits"])])
                b = device.allocate((bias.size,), INT_DTYPES[int(cfg["acc_bits"])])
                f[:], b[:] = filters, bias
                f.flush()
                b.flush()
                self.weights[layer] = (f, b)
        for buf in self.buffers.values():  # padded channel words read as zeros
            buf[:] = 0
            buf.flush()
        if len(self.input_index) != len(self.buffers[manifest["input_buffer"]]):
            raise DeployError(f"{self.name}: input_index has {len(self.input_index)} words, the input buffer "
                              f"{len(self.buffers[manifest['input_buffer']])}")

    def _register_map(self, device, registers: dict) -> tuple[dict, str]:
        """The manifest's register map, or the overlay's where the device has one (a built .hwh is
        authoritative: pynq's ip_dict registers). Vivado HLS names a 64-bit argument's low word <name>_1."""
        read = getattr(device, "ip_registers", None)
        found = read(self.name) if read is not None else {}
        if not found:
            return registers, "manifest (potatura's HLS s_axilite layout)"
        mapped = {}
        for name, reg in registers.items():
            offset = found.get(name, found.get(name + "_1"))
            if offset is None:
                raise DeployError(f"{self.name}: the overlay's register map has no {name!r} (nor {name}_1); it has "
                                  f"{', '.join(sorted(found))}: the bitstream was not built from this bundle's project")
            mapped[name] = {**reg, "offset": int(offset)}
        return mapped, "overlay .hwh (pynq ip_dict registers)"

    # -- timing bounds --------------------------------------------------------------------
    def call_deadline(self, call: dict) -> float:
        """Wall seconds one call may take: the floor, or 10x its simulated time when larger."""
        return max(self.min_deadline_s, 10.0 * float(call.get("cycles", 0)) / self.clock_hz)

    def deadline_for(self, n: int) -> float:
        """Wall seconds allowed for n samples: every call of every sample at its own deadline."""
        return n * sum(self.call_deadline(c) for c in self.calls)

    def reset(self) -> None:
        """After a hang: reset the programmable logic when the device can (a board reloads the overlay)."""
        reset_pl = getattr(self.device, "reset_pl", None)
        if reset_pl is not None:
            reset_pl()

    # -- one call ---------------------------------------------------------------------------
    def _write(self, name: str, value: int) -> None:
        reg = self.registers[name]
        bits = int(reg["bits"])
        word = int(value) & ((1 << bits) - 1)
        self.regs.write(int(reg["offset"]), word & 0xFFFFFFFF)
        if bits == 64:
            self.regs.write(int(reg["offset"]) + 4, word >> 32)

    def _call(self, call: dict, end: float) -> None:
        add = call.get("add_input")
        filters, bias = self.weights[call["filters"]]
        # Without a residual the engine never reads act_add: any valid buffer will do.
        addresses = {"act_in": self.buffers[call["input"]], "filters": filters, "bias": bias,
                     "act_add": self.buffers[add or call["output"]], "act_out": self.buffers[call["output"]]}
        for name in self.pointer_args:
            self._write(name, addresses[name].physical_address)
        for name, value in zip(self.call_args, call["args"]):
            self._write(name, value)
        self.regs.write(CTRL, AP_START)
        own = self.call_deadline(call)
        left = max(0.0, end - time.monotonic())
        deadline_s = min(own, left)
        limit = time.monotonic() + deadline_s
        polls = 0
        while not int(self.regs.read(CTRL)) & AP_DONE:  # ap_done clears on read
            if time.monotonic() > limit:
                which = "its deadline" if own <= left else "what was left of the request's deadline"
                raise AcceleratorHangError(
                    f"{self.name}: call of layer {call['layer']} frame {call['frame']} did not finish within "
                    f"{deadline_s:g} s ({which}; CTRL 0x{int(self.regs.read(CTRL)):02x}): the engine hangs")
            polls += 1
            if polls > 1000:  # spin for the short calls, then yield the CPU
                time.sleep(5e-5)

    def run(self, x_codes, deadline_s: Optional[float] = None):
        """(N, *input shape) integer codes -> ((N, *output shape) int64 codes, timing dict), one sample
        after the other through every call. timing as Driver.run (hardware_s: ap_start to ap_done of
        every call, on device.now())."""
        t_begin = time.perf_counter()
        codes = check_codes("input", x_codes, self.in_shape, int(self.inp["min_code"]), int(self.inp["max_code"]))
        n = len(codes)
        if n == 0:
            raise InputError("input: an empty batch")
        end = time.monotonic() + (deadline_s if deadline_s is not None else self.deadline_for(n))
        buf_in = self.buffers[self.manifest["input_buffer"]]
        buf_out = self.buffers[self.manifest["output_buffer"]]
        padding = self.input_index < 0
        y = np.empty((n,) + self.out_shape, dtype=np.int64)
        hardware_s = 0.0
        cycles = 0 if hasattr(self.device, "cycles") else None
        for i, sample in enumerate(codes):
            flat = sample.reshape(-1)
            buf_in[:] = np.where(padding, 0, flat[np.where(padding, 0, self.input_index)])
            buf_in.flush()
            c0 = self.device.cycles() if cycles is not None else 0
            t0 = self.device.now()
            try:
                for call in self.calls:
                    self._call(call, end)
            except AcceleratorHangError:
                self.reset()  # the next run starts on a fresh engine
                raise
            hardware_s += self.device.now() - t0
            if cycles is not None:
                cycles += self.device.cycles() - c0
            buf_out.invalidate()
            y[i] = np.asarray(buf_out, dtype=np.int64)[self.output_index].reshape(self.out_shape)
        timing = {"batch": n, "end_to_end_s": time.perf_counter() - t_begin, "hardware_s": hardware_s,
                  "source": self.device.timing_source}
        if cycles is not None:
            timing["hardware_cycles"] = int(cycles)
        return y, timing

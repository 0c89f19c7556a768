"""PYNQ driver of potatura's HLSinf-style engine (written by `potatura hwgen`; numpy and pynq only,
Python 3.10 / numpy 1.x on the board).

    from hlsinf_driver import HlsinfDriver
    drv = HlsinfDriver("overlay/hlsinf.bit", ".")     # the project directory: plan.json, engine_weights.npz
    y_codes = drv.run(x_codes)                        # (N, *input shape) int codes -> (N, *output shape)

The engine runs one call at a time: the driver packs the input (GHWC), then for every call of
plan.json writes the arguments over AXI-Lite, starts the engine and waits for ap_done (with a
deadline: a hung engine raises instead of hanging the caller), layer after layer; activations stay
in DDR buffers between calls.
"""

import json
import math
import time
from pathlib import Path

import numpy as np

DTYPES = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}
# hlsinf_top's run-time arguments, in the order of each call's "args" in plan.json (call_args.values)
ARGS = @@CALL_ARGS@@


def pack_ghwc(x, cpi):
    """(H, W, C) or (n,) codes -> GHWC words, channels zero-padded to groups of cpi."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x.reshape(1, 1, -1)
    h, w, c = x.shape
    g = math.ceil(c / cpi)
    padded = np.zeros((h, w, g * cpi), dtype=np.int64)
    padded[..., :c] = x
    return padded.reshape(h, w, g, cpi).transpose(2, 0, 1, 3).reshape(-1)


def unpack_ghwc(words, t, cpi):
    x = np.asarray(words)[:t["groups"] * t["h"] * t["w"] * cpi].reshape(t["groups"], t["h"], t["w"], cpi)
    return x.transpose(1, 2, 0, 3).reshape(t["h"], t["w"], -1)[..., :t["c"]]


class HlsinfDriver:
    def __init__(self, bitfile, project_dir=".", timeout_s=5.0):
        from pynq import Overlay, allocate

        project_dir = Path(project_dir)
        self.plan = json.loads((project_dir / "plan.json").read_text())
        self.engine = self.plan["engine"]
        self.cpi = self.engine["cpi"]
        self.timeout_s = timeout_s
        self.overlay = Overlay(str(bitfile))
        self.ip = self.overlay.hlsinf_0
        data_t = DTYPES[self.engine["data_bits"]]
        self.buffers = {name: allocate(shape=(t["groups"] * t["h"] * t["w"] * self.cpi,), dtype=data_t)
                        for name, t in self.plan["tensors"].items()}
        self.weights = {}
        with np.load(project_dir / "engine_weights.npz", allow_pickle=False) as data:
            for name in {c["filters"] for c in self.plan["calls"]}:
                f = allocate(shape=data[name + "/filters"].size, dtype=DTYPES[self.engine["weight_bits"]])
                b = allocate(shape=data[name + "/bias"].size, dtype=DTYPES[self.engine["acc_bits"]])
                f[:] = data[name + "/filters"].reshape(-1)
                b[:] = data[name + "/bias"]
                f.flush()
                b.flush()
                self.weights[name] = (f, b)

    def _call(self, call, values):
        regs = self.ip.register_map
        regs.act_in = self.buffers[call["input"]].physical_address
        regs.act_out = self.buffers[call["output"]].physical_address
        # Without a residual the engine never reads act_add: any valid buffer will do.
        regs.act_add = self.buffers[call.get("add_input") or call["output"]].physical_address
        f, b = self.weights[call["filters"]]
        regs.filters, regs.bias = f.physical_address, b.physical_address
        for name, value in zip(ARGS, values):
            setattr(regs, name, int(value) & (0xFFFFFFFFFFFFFFFF if name.startswith("clip") else 0xFFFFFFFF))
        self.ip.write(0x00, 1)  # ap_start
        deadline = time.monotonic() + self.timeout_s
        while not (self.ip.read(0x00) & 0x2):  # ap_done
            if time.monotonic() > deadline:
                raise TimeoutError(f"hlsinf engine: call of layer {call['layer']} frame {call['frame']} did not "
                                   f"finish within {self.timeout_s} s")

    def run(self, x_codes):
        tensors = self.plan["tensors"]
        t_in, t_out = tensors[self.plan["input"]], tensors[self.plan["output"]]
        out = []
        for sample in np.asarray(x_codes):
            for buf in self.buffers.values():
                buf[:] = 0
            self.buffers[self.plan["input"]][:] = pack_ghwc(sample.reshape(t_in["h"], t_in["w"], t_in["c"]), self.cpi)
            for buf in self.buffers.values():
                buf.flush()
            for call, values in zip(self.plan["calls"], self.plan["call_args"]["values"]):
                self._call(call, values)
            self.buffers[self.plan["output"]].invalidate()
            out.append(unpack_ghwc(self.buffers[self.plan["output"]], t_out, self.cpi).astype(np.int64))
        return np.stack(out)


if __name__ == "__main__":
    import sys

    drv = HlsinfDriver(sys.argv[1] if len(sys.argv) > 1 else "overlay/hlsinf.bit")
    with np.load("golden_codes.npz", allow_pickle=False) as g:
        y = drv.run(g["x_codes"])
        print("bit-exact samples:", int(np.all((y.reshape(len(y), -1) == g["y_codes"].reshape(len(y), -1)), axis=1).sum()),
              "of", len(y))

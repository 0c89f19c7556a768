"""The pynq lane: real pynq 4.0 code (Overlay, allocate, DMA, MMIO) against the emulated board.

    POTATURA_EMULATED_PYNQ=1 .venv-board/bin/python -m potatura.deploy.pynq_lane BUNDLE_DIR [OUT.json]

Runs in the board environment (.venv-board). Prints (or writes) a JSON record of each check; the
test tests/deploy/test_pynq_lane.py runs it and asserts on the record.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def run_lane(bundle_dir: Path) -> dict:
    os.environ.setdefault("POTATURA_EMULATED_PYNQ", "1")
    os.environ.pop("PYNQ_REMOTE_DEVICES", None)  # a remote-device setting would hide the local registry
    import pynq

    from potatura.deploy import bundle as bundles
    from potatura.deploy import pynq_device
    from potatura.deploy.agent import AgentCore
    from potatura.deploy.driver import Driver, PynqDevice
    from potatura.deploy.errors import AcceleratorHangError, DmaSlaveError

    out: dict = {"pynq": pynq.__version__, "numpy": np.__version__}
    manifest = bundles.verify_bundle(bundle_dir)
    if manifest.get("protocol") == "memory-mapped-engine":
        return {**out, **run_engine_lane(bundle_dir, manifest)}
    x, y = bundles.load_golden(bundle_dir, manifest)
    bit = str(bundle_dir / manifest["bitstream"]["file"])
    device = pynq.Device.active_device
    out["active_device"] = type(device).__name__
    out["clock_arch"] = device.arch

    try:  # pynq's plain path: download() with the clock frequencies pynq 4.0's parser left empty
        pynq.Overlay(bit)
        out["download_without_fill"] = "ok"
    except Exception as exc:  # noqa: BLE001  (recorded: the reason PynqDevice fills the clocks)
        out["download_without_fill"] = f"{type(exc).__name__}: {exc}"[:200]
    overlay = pynq.Overlay(bit, download=False)
    from potatura.deploy.driver import fill_zynq7000_clocks

    out["clock_before_fill"] = overlay.clock_dict[0].get("frequency")
    fill_zynq7000_clocks(overlay)
    overlay.download()
    out["clock_mhz"] = overlay.clock_dict[0]["frequency"]
    dma_ip = overlay.ip_dict["hier_0/axi_dma_0"]
    out["dma_ip"] = {"phys_addr": dma_ip["phys_addr"], "addr_range": dma_ip["addr_range"], "type": dma_ip["type"]}

    # pynq's own DMA driver (what hls4ml's generated driver calls), twice with the same buffers
    dma = overlay.hier_0.axi_dma_0
    out["dma_driver"] = type(dma).__module__ + "." + type(dma).__name__
    n_in, n_out = int(np.prod(x.shape[1:])), int(np.prod(y.shape[1:]))
    frac_in = manifest["tensors"]["input"]["frac"]
    frac_out = manifest["tensors"]["output"]["frac"]
    exact = []
    for _ in range(2):
        inb = pynq.allocate((len(x) * n_in,), np.float32)
        outb = pynq.allocate((len(x) * n_out,), np.float32)
        inb[:] = (x.reshape(-1) * 2.0 ** -frac_in).astype(np.float32)
        inb.flush()
        dma.sendchannel.transfer(inb)
        dma.recvchannel.transfer(outb)
        dma.sendchannel.wait()
        dma.recvchannel.wait()
        outb.invalidate()
        exact.append(bool(np.array_equal((outb.astype(np.float64) * 2.0 ** frac_out).reshape(y.shape), y)))
    out["pynq_dma_exact"] = exact

    # potatura's driver through pynq (Overlay, MMIO, allocate)
    pdev = PynqDevice(bit)
    driver = Driver(pdev, manifest)
    y1, t1 = driver.run(x)
    y2, t2 = driver.run(x[:5])
    y3, t3 = driver.run(np.concatenate([x, x]))  # a larger batch: new buffers, each with its own address
    out["driver_exact"] = [bool(np.array_equal(y1, y)), bool(np.array_equal(y2, y[:5])),
                           bool(np.array_equal(y3, np.concatenate([y, y])))]
    out["driver_timing"] = t1
    from potatura.sim.api import load_project

    out["sim_total_cycles"] = int(load_project(bundle_dir / manifest["emulation"]["dir"]).cycles(len(x)).total_cycles)

    # a DMA error, then a hang: typed errors, and the next call works (pynq's own channel would
    # report every later error as "DMA channel not started")
    board = device.board
    board.faults.set({"dma_error": {"channel": "s2mm", "kind": "slave"}})
    try:
        driver.run(x)
        out["dma_error"] = "no error"
    except DmaSlaveError as exc:
        out["dma_error"] = type(exc).__name__
    out["after_dma_error_exact"] = bool(np.array_equal(driver.run(x)[0], y))
    board.faults.set({"hang": {"times": 1}})
    try:
        driver.run(x, deadline_s=0.3)
        out["hang"] = "no error"
    except AcceleratorHangError as exc:
        out["hang"] = type(exc).__name__
    out["after_hang_exact"] = bool(np.array_equal(driver.run(x)[0], y))

    # the agent on pynq (not --emulated): its device is PynqDevice, i.e. this same pynq path
    core = AgentCore(bundle_dir.parent / ".lane-agent", emulated=False)
    pdev2 = core.device_factory(bundle_dir, manifest)
    core.bundle_id, core.bundle_dir, core.manifest = "lane", bundle_dir, manifest
    core.device, core.driver = pdev2, Driver(pdev2, manifest)
    report = core.validate()
    out["agent_validate"] = {k: report[k] for k in ("samples", "exact", "passed")}
    out["agent_device"] = type(pdev2).__name__
    out["active_device_module"] = pynq_device.__name__
    return out


def run_engine_lane(bundle_dir: Path, manifest: dict) -> dict:
    """A memory-mapped engine bundle (HLSinf-style) through pynq: Overlay (the .hwh's engine window),
    pynq.MMIO onto its AXI-Lite registers, pynq.allocate buffers in the emulated DDR, potatura's
    EngineDriver; a hang, then the overlay reload that clears it."""
    import pynq

    from potatura.deploy import bundle as bundles
    from potatura.deploy.driver import PynqDevice, make_driver
    from potatura.deploy.errors import AcceleratorHangError
    from potatura.sim.api import load_project

    out: dict = {}
    x, y = bundles.load_golden(bundle_dir, manifest)
    bit = str(bundle_dir / manifest["bitstream"]["file"])
    device = pynq.Device.active_device
    out["active_device"] = type(device).__name__
    pdev = PynqDevice(bit)
    name = manifest["ip"]["engine"]["name"]
    engine_ip = pdev.overlay.ip_dict[name]
    out["engine_ip"] = {"phys_addr": engine_ip["phys_addr"], "addr_range": engine_ip["addr_range"],
                        "type": engine_ip["type"]}
    driver = make_driver(pdev, manifest, bundle_dir)
    out["buffer_type"] = type(next(iter(driver.buffers.values()))).__module__
    y1, t1 = driver.run(x)
    y2, _ = driver.run(x[:3])
    out["driver_exact"] = [bool(np.array_equal(y1, y)), bool(np.array_equal(y2, y[:3]))]
    out["driver_timing"] = t1
    out["sim_total_cycles"] = int(load_project(bundle_dir / manifest["emulation"]["dir"]).cycles(len(x)).total_cycles)
    device.board.faults.set({"hang": {"times": 1}})
    try:
        driver.run(x[:1], deadline_s=0.3)
        out["hang"] = "no error"
    except AcceleratorHangError as exc:
        out["hang"] = type(exc).__name__
    out["after_hang_exact"] = bool(np.array_equal(driver.run(x)[0], y))  # reset_pl reloaded the overlay
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    result = run_lane(Path(argv[0]))
    text = json.dumps(result, indent=2, default=str)
    if len(argv) > 1:
        Path(argv[1]).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

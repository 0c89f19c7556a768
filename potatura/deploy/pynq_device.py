"""The emulated board as a pynq Device, so the real pynq Overlay, allocate, DMA and MMIO code runs against it.

Board environment only (.venv-board: pynq 4.0, numpy<2). Importing this module registers
`EmulatedPynqDevice` in pynq's device registry (a Device subclass with _probe_ and a priority below
the embedded/XRT devices' 40+, so it is pynq's active device); it exists while
$POTATURA_EMULATED_PYNQ is set (any value).

What pynq sees: REGISTER_RW capability (MMIO goes through read_registers/write_registers onto the
emulated bus), a DDR with physical addresses (allocate -> potatura's cached EmulatedBuffer), the
.hwh beside the bundle's .bit (parsed by pynq's own metadata parser), and PS registers (the
Zynq-7000 SLCR clock registers that pynq's Clocks code reads and writes, seeded with a 50 MHz
reference and IO PLL at 1000 MHz). download() builds the emulated board for the bundle the bitstream
belongs to (bundle/overlay/<name>.bit -> bundle/manifest.json, the simulator design in bundle/emulation).

Facts this relies on (pynq 4.0.0): its metadata parser leaves every Zynq-7000 clock frequency empty
(potatura.deploy.driver.fill_zynq7000_clocks fills them from PCW_ACT_FPGA{n}_PERIPHERAL_FREQMHZ);
Clocks picks the Zynq-7000 code from device.arch == "armv7l"; PYNQ_REMOTE_DEVICES must be unset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pynq.pl_server.device import Device

from potatura.deploy.emulated import Ddr, EmulatedBoard

ENV = "POTATURA_EMULATED_PYNQ"
SLCR_BASE = 0xF800_0000
# Zynq-7000 SLCR reset values pynq's clock code needs: PLL feedback dividers (bits 18:12) and
# FPGA0_CLK_CTRL (IO PLL source, DIVISOR0 5, DIVISOR1 2: 1000 MHz / 10 = 100 MHz).
SLCR_SEED = {0x100: 26 << 12, 0x104: 21 << 12, 0x108: 20 << 12, 0x120: 0x1F000200 | (2 << 8),
             0x170: (2 << 20) | (5 << 8), 0x180: (2 << 20) | (5 << 8), 0x190: (2 << 20) | (5 << 8),
             0x1A0: (2 << 20) | (5 << 8)}


class _EmulatedMemory:
    """pynq's default_memory: allocate(shape, dtype) from the emulated DDR."""

    def __init__(self, device: "EmulatedPynqDevice"):
        self.device = device

    def allocate(self, shape, dtype, **kwargs):
        return self.device.ddr.allocate(shape, dtype)


class EmulatedPynqDevice(Device):
    """pynq's device interface over potatura's emulated board."""

    _probe_priority_ = 30

    @classmethod
    def _probe_(cls):
        return [cls()] if os.environ.get(ENV) else []

    def __init__(self, family: str = "zynq-7000"):
        super().__init__("potatura_emulated")
        self.name = "potatura emulated board"
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False, "CALLABLE": False}
        self.arch = "armv7l" if family == "zynq-7000" else "aarch64"
        self.ddr = Ddr()
        self.board = None  # the EmulatedBoard (or EmulatedEngineBoard) of the downloaded bundle
        self.ps_registers = dict((SLCR_BASE + k, v) for k, v in SLCR_SEED.items())
        self.default_memory = _EmulatedMemory(self)

    timing_source = "emulated"

    def now(self) -> float:
        return self.board.now() if self.board is not None else 0.0

    def cycles(self) -> int:
        return self.board.cycles() if self.board is not None else 0

    # -- metadata and download ----------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False):
        # pynq's own path for a full bitstream on an embedded board: pynqmetadata's runtime parser.
        # (The XRT memory-topology step of EmbeddedDevice is left out: it needs xclbinutil and XRT, and
        # the emulated DDR is not XRT memory.)
        from pynqmetadata.frontends import Metadata
        from pynqmetadata.views.runtime import RuntimeMetadataParser

        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise RuntimeError(f"{bitfile_name}: no {hwh.name} beside it")
        parser = RuntimeMetadataParser(Metadata(input=hwh))
        parser.refresh_hierarchy_dict()
        # Zynq-7000 clock frequencies stay empty here, as on a board: PynqDevice fills them (the driver's fix).
        return parser

    def download(self, bitstream, parser=None):
        from potatura.deploy.bundle import read_manifest

        bundle_dir = Path(bitstream.bitfile_name).resolve().parent.parent
        manifest = read_manifest(bundle_dir)
        # a download resets the PL: a fresh board (engine idle, faults cleared) over the same DDR
        self.board = EmulatedBoard.from_bundle(bundle_dir, manifest, ddr=self.ddr)
        self.post_download(bitstream, parser, self.name)

    def gen_cache(self, bitstream, parser=None):
        pass

    def shutdown(self):
        pass

    # -- REGISTER_RW --------------------------------------------------------------------
    def read_registers(self, address: int, length: int) -> bytes:
        words = []
        for a in range(address, address + length, 4):
            if a in self.ps_registers or self.board is None:
                words.append(self.ps_registers.get(a, 0))
            else:
                words.append(self.board.read(a))
        return np.array(words, dtype=np.uint32).tobytes()[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        words = np.frombuffer(bytes(data).ljust(-(-len(data) // 4) * 4, b"\0"), dtype=np.uint32)
        for i, value in enumerate(words):
            a = address + 4 * i
            if SLCR_BASE <= a < SLCR_BASE + 0x1000 or self.board is None:
                self.ps_registers[a] = int(value)
            else:
                self.board.write(a, int(value))

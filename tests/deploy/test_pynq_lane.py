"""The pynq lane: the real pynq 4.0 Overlay, allocate, DMA and MMIO code against the emulated board.

pynq pins numpy<2, so it lives in the board environment (.venv-board, made by scripts/env-board);
this test runs potatura.deploy.pynq_lane there and checks its record. CI builds that environment
(.ci/run), so there a missing one is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOARD_PYTHON = REPO / ".venv-board" / "bin" / "python"

if os.environ.get("CI") and not BOARD_PYTHON.exists():
    raise RuntimeError(f"CI: the board environment is missing ({BOARD_PYTHON}); .ci/run must run scripts/env-board")
pytestmark = pytest.mark.skipif(not BOARD_PYTHON.exists(), reason=f"no board environment ({BOARD_PYTHON}); "
                                "make it with scripts/env-board")


def run_lane(bundle: Path, tmp_path: Path) -> dict:
    """potatura.deploy.pynq_lane on `bundle` in the board environment; its JSON record."""
    out = tmp_path / "lane.json"
    env = {k: v for k, v in os.environ.items() if k != "PYNQ_REMOTE_DEVICES"}
    env.update(POTATURA_EMULATED_PYNQ="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([str(BOARD_PYTHON), "-m", "potatura.deploy.pynq_lane", str(bundle), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_real_pynq_drives_the_emulated_board_bit_exact(bundle, tmp_path):
    lane = run_lane(bundle, tmp_path)
    assert lane["pynq"] == "4.0.0" and lane["numpy"].startswith("1.")
    assert lane["active_device"] == "EmulatedPynqDevice" and lane["clock_arch"] == "armv7l"
    assert lane["clock_before_fill"] is None and lane["clock_mhz"] == 100.0  # pynq 4.0 leaves it empty
    assert lane["dma_ip"] == {"phys_addr": 0x4040_0000, "addr_range": 0x10000, "type": "xilinx.com:ip:axi_dma:7.1"}
    assert lane["dma_driver"] == "pynq.lib.dma.DMA"
    assert lane["pynq_dma_exact"] == [True, True]
    assert lane["driver_exact"] == [True, True, True]
    assert lane["driver_timing"]["source"] == "emulated"
    assert lane["driver_timing"]["hardware_cycles"] == lane["sim_total_cycles"]
    assert lane["dma_error"] == "DmaSlaveError" and lane["after_dma_error_exact"]
    assert lane["hang"] == "AcceleratorHangError" and lane["after_hang_exact"]
    assert lane["agent_device"] == "PynqDevice"
    assert lane["agent_validate"] == {"samples": 24, "exact": 24, "passed": True}

"""The simulator's HLSinf-style module model: cycles from the engine's schedule, DDR at the board bandwidth,
loaded from design.json by backend name, outputs from the IR reference ops."""

import dataclasses

import numpy as np
import pytest

from potatura.boards.catalog import get_board
from potatura.hw.ir import Design, save_design
from potatura.hwgen.hlsinf.planner import EngineConfig, plan_graph
from potatura.sim.api import load_project
from potatura.sim.hlsinf import HlsinfAccelerator
from tests.hwgen.test_hlsinf import conv_graph


def _design(graph, engine: EngineConfig, board: str = "zcu104") -> Design:
    plan = plan_graph(graph, engine)
    return Design(graph, "hlsinf", board, 100.0, {}, {}, {"engine": engine.to_dict(), "plan": plan.to_dict()})


def test_66692_cycles_through_design_json(tmp_path):
    """docs/hardware.md section 3: 256x256, I=O=CPI=CPO=4, padding 1 -> 66,692 cycles (public C-synthesis report)."""
    graph = conv_graph(256, 256, [4, 4])
    save_design(_design(graph, EngineConfig(4, 4, 256, 256)), tmp_path)
    acc = load_project(tmp_path)
    assert isinstance(acc, HlsinfAccelerator)
    report = acc.cycles(batch=3)
    assert report.latency_cycles == 66_692 == report.interval_cycles
    assert report.total_cycles == 3 * 66_692
    call = report.per_layer[0]
    assert (call["compute_cycles"], call["stall_cycles"], call["trip_count"]) == (66_692, 0, 258 * 258)
    # DDR: 256*256*4 16-bit words in and out, 144 weight bytes + 16 bias bytes; at 19.2 GB/s, 100 MHz.
    assert call["ddr_bytes"] == 2 * 256 * 256 * 4 * 2 + 4 * 4 * 9 + 4 * 4
    assert call["memory_cycles"] == -(-call["ddr_bytes"] * 100 // 19_200)  # ceil(bytes / 19.2e9 * 1e8)
    assert report.to_dict()["kind"].startswith("simulated")


def test_outputs_are_the_ir_reference_ops():
    from potatura.sim.api import Accelerator

    graph = conv_graph(10, 10, [3, 6, 5], pool=True, seed=3)
    acc = HlsinfAccelerator(_design(graph, EngineConfig(4, 4, 4, 16)))
    x = np.random.default_rng(0).integers(-128, 128, (4, 10, 10, 3))
    reference = Accelerator.run(acc, x)
    assert np.array_equal(acc.run(x), reference) and reference.shape == (4, 2, 2, 5)


def test_pruned_model_fewer_cycles_in_the_ratio_of_channel_groups():
    engine = EngineConfig(4, 4, 64, 64)
    dense = HlsinfAccelerator(_design(conv_graph(16, 16, [8, 32, 32]), engine)).cycles()
    pruned = HlsinfAccelerator(_design(conv_graph(16, 16, [8, 16, 16]), engine)).cycles()
    # Channel groups (I_ITER*O_ITER summed over layers): dense 2*8 + 8*8 = 80, pruned 2*4 + 4*4 = 24;
    # each takes 18*18 padded pixels, plus L_PIPE = 128 per output group (dense 16, pruned 8).
    assert dense.latency_cycles == 80 * 324 + 16 * 128
    assert pruned.latency_cycles == 24 * 324 + 8 * 128
    ratio = dense.latency_cycles / pruned.latency_cycles
    assert 80 / 24 * 0.95 < ratio < 80 / 24


def test_memory_bound_calls_stall_at_the_board_bandwidth():
    graph = conv_graph(64, 64, [4, 4])
    design = _design(graph, EngineConfig(4, 4, 64, 64), board="pynq-z2")
    slow = dataclasses.replace(get_board("pynq-z2"), bandwidth_gbs=0.05)
    report = HlsinfAccelerator(design, board=slow).cycles()
    call = report.per_layer[0]
    compute = 66 * 66 + 128
    assert call["compute_cycles"] == compute
    assert call["memory_cycles"] == -(-call["ddr_bytes"] * 100 // 50) > compute  # ceil(bytes / 0.05e9 * 1e8)
    assert report.latency_cycles == call["memory_cycles"]
    assert call["stall_cycles"] == call["memory_cycles"] - compute
    fast = HlsinfAccelerator(design).cycles()  # the catalog's 2.1 GB/s: compute bound
    assert fast.latency_cycles == compute


def test_taller_than_ho_max_runs_in_frames():
    graph = conv_graph(20, 12, [4, 4], pool=True)
    report = HlsinfAccelerator(_design(graph, EngineConfig(4, 4, 7, 16))).cycles()
    # Frames of 6, 6, 6, 2 conv rows: padded input rows 8, 8, 8, 4 of 14 padded columns, + 128 each.
    assert [c["compute_cycles"] for c in report.per_layer] == [8 * 14 + 128] * 3 + [4 * 14 + 128]
    with pytest.raises(Exception, match="batch"):
        HlsinfAccelerator(_design(graph, EngineConfig(4, 4, 7, 16))).cycles(batch=0)

"""The latency protocol: statistics on targets with known (sleep-based) timings, thread settings,
labels, and the board agent's answers turned into labelled results."""

import time

import numpy as np
import pytest
import torch

from potatura.bench.harness import (MIN_TIMED_RUNS, LatencyPoint, Target, TargetResult, run_targets, speedups,
                                    time_calls, torch_threads)
from potatura.bench.targets import TorchTarget, batch_of, board_results
from potatura.errors import DataError


class SleepTarget(Target):
    """Sleeps `per_sample_s` x batch per call: a target whose latency is known."""

    name = "sleep"
    description = "time.sleep"

    def __init__(self, per_sample_s: float):
        self.per_sample_s = per_sample_s
        self.batch = 1
        self.calls = 0
        self.synced = 0

    def setup(self, batch: int) -> None:
        self.batch = batch

    def run(self) -> None:
        self.calls += 1
        time.sleep(self.per_sample_s * self.batch)

    def synchronize(self) -> None:
        self.synced += 1


def test_percentiles_of_a_sleeping_target_bracket_the_sleep():
    target = SleepTarget(0.002)
    (result,) = target.measure([1, 4], iterations=30, warmup=3)
    one, four = result.single_stream, result.point(4)
    assert (one.runs, four.runs) == (30, 30)
    assert target.calls == target.synced == 2 * (30 + 3)  # warm-up runs are made and synchronized too
    # sleep() never returns early; a generous upper band absorbs a loaded machine
    assert 0.002 <= one.min_s <= one.p50_s <= one.p90_s <= one.p99_s <= one.max_s
    assert one.p50_s < 0.002 * 10
    assert 0.008 <= four.p50_s < 0.008 * 10
    assert one.min_s <= one.mean_s <= one.max_s
    # offline throughput: samples over the timed seconds, 4 samples per call at batch 4
    assert four.throughput_per_s == pytest.approx(4 / four.mean_s)
    assert four.throughput_per_s < 4 / 0.008


def test_time_budget_stops_after_the_minimum_runs():
    target = SleepTarget(0.005)
    point = time_calls(target.run, target.synchronize, 1, iterations=1000, warmup=0, max_seconds=0.05)
    # 20 runs of >= 5 ms pass the 50 ms budget: the protocol stops at its minimum count
    assert point.runs == MIN_TIMED_RUNS
    assert target.calls == MIN_TIMED_RUNS


def test_statistics_of_known_seconds():
    seconds = np.arange(1, 101) * 1e-3  # 1, 2, ..., 100 ms
    p = LatencyPoint.from_seconds(8, seconds)
    assert p.runs == 100
    assert p.p50_s == pytest.approx(50.5e-3)
    assert p.p90_s == pytest.approx(90.1e-3)
    assert p.p99_s == pytest.approx(99.01e-3)
    assert p.mean_s == pytest.approx(50.5e-3)
    assert (p.min_s, p.max_s) == (pytest.approx(1e-3), pytest.approx(0.1))
    assert p.throughput_per_s == pytest.approx(8 * 100 / 5.05)
    computed = LatencyPoint.computed(4, 2e-6)
    assert (computed.p50_s, computed.p99_s, computed.std_s, computed.runs) == (2e-6, 2e-6, 0.0, 1)
    assert computed.throughput_per_s == pytest.approx(2e6)
    with pytest.raises(ValueError, match="no timed runs"):
        LatencyPoint.from_seconds(1, [])


def test_results_carry_a_kind_and_round_trip():
    with pytest.raises(ValueError, match="kind 'estimated' is not one of measured, emulated, simulated"):
        TargetResult("x", "estimated", "cpu", "", 1, [])
    r = TargetResult("x", "simulated", "fpga", "d", None, [LatencyPoint.computed(1, 1e-6)], {"cycles": {"a": 1}})
    assert TargetResult.from_dict(r.to_dict()) == r


def test_speedups_are_ratios_of_batch_one_medians():
    fast = TargetResult("fast", "simulated", "fpga", "", None, [LatencyPoint.computed(1, 1e-6)])
    slow = TargetResult("slow", "measured", "cpu", "", 1, [LatencyPoint.computed(1, 5e-5)])
    only_batch = TargetResult("b64", "measured", "cpu", "", 1, [LatencyPoint.computed(64, 1e-3)])
    s = speedups([fast, slow, only_batch], slow)
    assert s == {"fast": pytest.approx(50.0), "slow": pytest.approx(1.0), "b64": None}


def test_a_failing_target_becomes_a_skipped_entry_and_the_others_run():
    class Broken(SleepTarget):
        name = "broken"

        def run(self):
            raise RuntimeError("device lost\nsecond line")

    results, skipped = run_targets([Broken(0.0), SleepTarget(0.0005)], [1], iterations=5, warmup=1)
    assert [r.name for r in results] == ["sleep"]
    assert skipped[0].name == "broken"
    assert skipped[0].reason == "failed while measuring: RuntimeError: device lost"


def test_torch_target_fixes_and_restores_the_thread_count():
    before = torch.get_num_threads()
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.get_num_threads(), x.shape[0]))
            return x.sum(1)

    x = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    target = TorchTarget("probe", Probe(), x, threads=2, description="probe")
    (result,) = target.measure([1, 5], iterations=3, warmup=1)
    assert torch.get_num_threads() == before
    assert set(seen) == {(2, 1), (2, 5)}
    assert result.threads == 2 and result.kind == "measured" and result.device == "cpu"
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_batches_cycle_through_the_samples():
    x = np.arange(3)[:, None]
    assert batch_of(x, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert batch_of(x, 2)[:, 0].tolist() == [0, 1]


def _agent_row(batch, hw, e2e, iterations=20):
    stats = lambda v: {"p50": v, "p90": 1.5 * v, "p99": 2 * v, "mean": 1.2 * v, "min": 0.9 * v, "max": 3 * v}
    return {"batch": batch, "iterations": iterations, "warmup": 3, "hardware_s": stats(hw), "end_to_end_s": stats(e2e)}


def test_board_answers_become_hardware_and_end_to_end_results():
    raw = {"device": "emulated", "hardware_source": "emulated", "end_to_end_source": "measured", "clock_mhz": 100.0,
           "rows": [_agent_row(1, 2e-6, 1e-3), _agent_row(8, 9e-6, 2e-3)]}
    hw, e2e = board_results("fpga pynq-z2", "bundle", "emulated", raw, {"board": "pynq-z2"})
    assert (hw.name, e2e.name) == ("fpga pynq-z2 hardware-only", "fpga pynq-z2 end-to-end")
    assert hw.kind == e2e.kind == "emulated" and hw.device == "fpga"
    one = hw.single_stream
    assert (one.p50_s, one.p90_s, one.p99_s, one.runs) == (2e-6, 3e-6, 4e-6, 20)
    assert hw.point(8).throughput_per_s == pytest.approx(8 / (1.2 * 9e-6))
    assert e2e.point(8).p50_s == 2e-3
    assert hw.details["sources"]["hardware_source"] == "emulated"
    # the agent's device decides: a real board is never shown as emulated
    (real, _) = board_results("b", "d", "emulated", {"device": "pynq", "rows": [_agent_row(1, 1e-6, 1e-4)]})
    assert real.kind == "measured"
    with pytest.raises(DataError, match="no hardware-only or end-to-end times"):
        board_results("b", "d", "emulated", {"device": "emulated", "rows": [{"batch": 1}]})
    with pytest.raises(DataError, match="has no 'rows'"):
        board_results("b", "d", "emulated", {"error": "x"})


def test_board_benchmarks_saved_by_the_deploy_stage_are_read_not_rerun(tmp_path):
    from potatura.artifacts import write_json
    from potatura.bench.targets import ReportedBoardTarget, deploy_benchmarks

    answer = {"device": "emulated", "hardware_source": "emulated", "rows": [_agent_row(1, 3e-6, 2e-3)]}
    write_json(tmp_path / "deploy" / "pynq-z2" / "benchmark.json", answer)
    write_json(tmp_path / "deploy" / "pynq-z2" / "validate.json", {"samples": 64, "exact": True})
    write_json(tmp_path / "deploy" / "zcu104" / "report.json", {"benchmark": dict(answer, device="pynq", hardware_source="measured")})
    found = deploy_benchmarks(tmp_path)
    assert [(p.parent.name, a["device"]) for p, a in found] == [("pynq-z2", "emulated"), ("zcu104", "pynq")]
    target = ReportedBoardTarget("fpga pynq-z2 emulated", *found[0])
    hw, e2e = target.measure([1], iterations=1, warmup=0)
    assert (hw.kind, hw.single_stream.p50_s, e2e.single_stream.p50_s) == ("emulated", 3e-6, 2e-3)
    assert ReportedBoardTarget("b", *found[1]).kind == "measured"


def test_the_emulated_board_behind_pynq_is_labelled_emulated_not_measured(tmp_path):
    """The pynq lane against the emulated board (POTATURA_EMULATED_PYNQ): the agent answers device "pynq"
    with hardware_source "emulated"; its hardware time is simulated cycles on a virtual clock, its
    end-to-end time includes the simulator: both emulated, as for device "emulated"."""
    from potatura.artifacts import write_json
    from potatura.bench.report import accuracy_rows
    from potatura.bench.targets import ReportedBoardTarget, board_kind, deploy_benchmarks

    lane = {"device": "pynq", "hardware_source": "emulated", "end_to_end_source": "measured",
            "rows": [_agent_row(1, 2e-6, 1e-3)]}
    hw, e2e = board_results("fpga pynq-z2", "bundle", "measured", lane)
    assert hw.kind == e2e.kind == "emulated"
    # a real board: hardware and end-to-end measured, whatever the caller expected
    real = dict(lane, hardware_source="measured")
    assert [r.kind for r in board_results("b", "d", "emulated", real)] == ["measured", "measured"]
    # an emulated device never reads as measured; an unknown source is refused, not guessed
    assert board_kind({"device": "emulated", "hardware_source": "measured"}) == "emulated"
    with pytest.raises(DataError, match="neither measured nor emulated"):
        board_results("b", "d", "measured", dict(lane, hardware_source="guessed"))
    # the deploy stage's record of the same answer (its result.json): benchmark and golden check
    write_json(tmp_path / "deploy" / "pynq-z2" / "hls4ml.result.json",
               {"board": "pynq-z2", "backend": "hls4ml", "target": "board", "agent": {"device": "pynq"},
                "golden": {"samples": 24, "exact": 24}, "benchmark": lane})
    (path, answer), = deploy_benchmarks(tmp_path)
    target = ReportedBoardTarget("fpga pynq-z2", path, answer)
    assert target.kind == "emulated" and "emulated hardware" in target.description
    assert {r.kind for r in target.measure([1], iterations=1, warmup=0)} == {"emulated"}
    (row,) = [r for r in accuracy_rows(tmp_path) if r["stage"] == "deploy"]
    assert row["how"] == "emulated" and "emulated board" in row["model"]
    # discovery files it under the emulated family, named emulated, not under the board's
    from potatura.bench.config import BenchConfig
    from potatura.bench.targets import discover_targets

    np.savez(tmp_path / "golden.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    write_json(tmp_path / "manifest.json", {"stages": {"quant": {"status": "done",
                                                                 "outputs": {"golden": {"path": "golden.npz"}}}}})
    found, _, _ = discover_targets(tmp_path, BenchConfig(targets=["emulated"]), tmp_path / "bench")
    assert [(t.name, t.kind) for t in found] == [("fpga pynq-z2/hls4ml emulated", "emulated")]
    assert discover_targets(tmp_path, BenchConfig(targets=["measured"]), tmp_path / "bench")[0] == []


@pytest.mark.parametrize("via", ["flow", "env"])
def test_an_explicitly_requested_board_that_cannot_be_reached_fails_the_bench(tmp_path, monkeypatch, via):
    """bench.board_url / $POTATURA_BOARD name a board: an unreachable agent is an error naming the
    URL and why, not a "not measured" line (CUDA absent, a discovered target, still is one)."""
    import socket

    from potatura.artifacts import write_json
    from potatura.bench.config import BenchConfig
    from potatura.bench.stage import run_bench
    from potatura.errors import PotaturaError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    np.savez(tmp_path / "golden.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    write_json(tmp_path / "manifest.json", {"stages": {"quant": {"status": "done",
                                                                 "outputs": {"golden": {"path": "golden.npz"}}}}})
    write_json(tmp_path / "deploy" / "pynq-z2" / "hls4ml" / "manifest.json", {"format": "bundle"})
    if via == "flow":
        monkeypatch.delenv("POTATURA_BOARD", raising=False)
        cfg = BenchConfig(targets=["measured", "cuda"], board_url=f"127.0.0.1:{port}")
    else:
        monkeypatch.setenv("POTATURA_BOARD", f"127.0.0.1:{port}")
        cfg = BenchConfig(targets=["measured", "cuda"])
    with pytest.raises(PotaturaError) as err:
        run_bench(tmp_path, cfg, tmp_path / "bench")
    message = str(err.value)
    assert "\n" not in message
    assert f"the board agent at http://127.0.0.1:{port} ({'bench.board_url' if via == 'flow' else '$POTATURA_BOARD'})" in message
    assert "cannot reach the agent" in message and "fpga pynq-z2/hls4ml board" in message
    # Without a board asked for, the same run directory benches with the board in the not-measured list.
    monkeypatch.delenv("POTATURA_BOARD", raising=False)
    out = run_bench(tmp_path, BenchConfig(targets=["measured"]), tmp_path / "bench2")
    from potatura.artifacts import read_json
    skipped = read_json(out["latency"])["skipped"]
    assert [s["name"] for s in skipped] == ["fpga board"]

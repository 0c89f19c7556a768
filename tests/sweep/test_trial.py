"""One trial without Dask: the metrics of a flow with hwgen and sim, and waiting for a run directory in use."""

import subprocess
import sys

from potatura.artifacts import read_json
from potatura.sweep.trial import UNLABELLED_FIT_CYCLES, collect_metrics, run_trial, wait_for_run_dir

FLOW = {"stages": ["train", "simplify", "quant", "hwgen", "sim"],
        "model": {"name": "lenet300", "options": {"hidden": [24, 12]}},
        "train": {"method": "serene", "epochs": 2, "preset": "off", "pwe": 1, "finetune_epochs": 0},
        "quant": {"calibration_samples": 128, "weight_bits": 6, "act_bits": 6},
        "hwgen": {"csim": False, "boards": ["ultra96-v2"]}}


def test_trial_metrics_come_from_quant_hwgen_fit_and_the_simulator(tmp_path):
    result = run_trial({"number": 3, "flow": dict(FLOW, name="3", runs_dir=str(tmp_path)), "stage_cache": None,
                        "threads": 1})
    assert result["status"] == "complete", result.get("reason")
    run = tmp_path / "3"
    m, src = result["metrics"], result["sources"]
    quant = read_json(run / "quant" / "summary.json")
    assert m["accuracy"] == quant["accuracy"]["test"]["quantized"] and src["accuracy"].startswith("measured")
    assert m["weight_bytes"] == quant["weights"]["nonzero_bytes_at_bit_width"]
    project = next(p for p in read_json(run / "hwgen" / "index.json") if p["board"] == "ultra96-v2")
    fit = read_json(run / project["path"] / "fit_report.json")
    assert (m["board"], m["backend"], m["fits"]) == ("ultra96-v2", "hls4ml", True)
    assert m["lut_fraction"] == fit["utilization"]["lut"] and m["max_fraction"] == max(fit["utilization"][r] for r in ("lut", "ff", "dsp", "bram18"))
    sim = read_json(run / "sim" / "ultra96-v2" / "hls4ml" / "report.json")["cycles"]
    assert m["latency_cycles"] == sim["latency_cycles"] > 0 and src["latency_cycles"] == "simulated (sim stage)"
    assert m["latency_us"] == sim["latency_cycles"] / sim["clock_mhz"]
    assert set(result["stages"]) == set(FLOW["stages"]) and not any(s["cached"] for s in result["stages"].values())


def test_a_bad_trial_is_a_result_not_an_exception(tmp_path):
    result = run_trial({"number": 0, "flow": dict(FLOW, name="0", runs_dir=str(tmp_path), hwgen={"boards": ["nope"]}),
                        "stage_cache": None, "threads": 1})
    assert result["status"] == "failed" and "unknown board(s) 'nope'" in result["reason"]


def test_wait_for_run_dir_waits_for_the_runner_lock(tmp_path):
    wait_for_run_dir(tmp_path)  # no lock file: returns at once
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         f"fd = os.open({str(tmp_path / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.readline()\n"
         f"open({str(tmp_path / 'released')!r}, 'w').close()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        wait_for_run_dir(tmp_path)
        # the holder wrote "released" before its exit dropped the lock, so the wait ended after that
        assert (tmp_path / "released").is_file()
    finally:
        holder.kill()
        holder.wait()


def _run_with_fit(run, backend, fit, sim=None, summary=None):
    from potatura.artifacts import write_json

    write_json(run / "hwgen" / "index.json", [{"board": "pynq-z2", "backend": backend, "path": f"hwgen/pynq-z2/{backend}",
                                                "fits": True}])
    write_json(run / "hwgen" / "pynq-z2" / backend / "fit_report.json", fit)
    if summary is not None:
        write_json(run / "hwgen" / "report.json", {"projects": [dict(summary, board="pynq-z2", backend=backend)]})
    if sim is not None:
        write_json(run / "sim" / "pynq-z2" / backend / "report.json", {"cycles": sim})
    return collect_metrics(run)


def test_fit_cycles_are_labelled_by_the_fit_reports_own_cycles_field(tmp_path):
    """hls4ml's fit report takes its cycles from the simulator (labelled simulated), hlsinf's from the
    planner's cycle model (estimated): the sweep repeats what the report says, the sim stage's figures
    replace both when it ran."""
    from potatura.boards.catalog import get_board
    from potatura.hwgen.hls4ml.timing import CYCLES_SOURCE
    from potatura.hwgen.hlsinf.fitter import fit_engine
    from tests.hwgen.test_hlsinf import conv_graph

    hls4ml = {"clock_mhz": 100.0, "figures": "estimated", "cycles": CYCLES_SOURCE, "utilization": {"lut": 0.5},
              "latency_cycles": 1200, "interval_cycles": 800}
    m, src = _run_with_fit(tmp_path / "a", "hls4ml", hls4ml)
    assert m["latency_cycles"] == 1200 and m["latency_us"] == 12.0
    assert src["latency_cycles"] == src["interval_cycles"] == src["latency_us"] == \
        "simulated (hwgen fit: " + CYCLES_SOURCE[len("simulated ("):]
    assert src["lut_fraction"] == "estimated (hwgen fit)"
    m, src = _run_with_fit(tmp_path / "b", "hls4ml", hls4ml, sim={"latency_cycles": 1300, "interval_cycles": 810,
                                                                   "clock_mhz": 100.0})
    assert m["latency_cycles"] == 1300 and src["latency_cycles"] == src["latency_us"] == "simulated (sim stage)"
    fit = fit_engine(conv_graph(8, 8, [1, 8, 8]), get_board("pynq-z2"))
    m, src = _run_with_fit(tmp_path / "c", "hlsinf", fit.to_dict())
    assert m["latency_cycles"] == fit.latency_cycles
    assert src["latency_cycles"] == src["interval_cycles"] == "estimated (hwgen fit: the engine's schedule per call, compute only)"
    # a fit report without the field: hwgen/report.json's entry for the project says it, else "estimated"
    old = {k: v for k, v in hls4ml.items() if k != "cycles"}
    _, src = _run_with_fit(tmp_path / "d", "hls4ml", old, summary={"cycles": CYCLES_SOURCE})
    assert src["latency_cycles"].startswith("simulated (hwgen fit: potatura.sim")
    _, src = _run_with_fit(tmp_path / "e", "hls4ml", old)
    assert src["latency_cycles"] == UNLABELLED_FIT_CYCLES and UNLABELLED_FIT_CYCLES.startswith("estimated")

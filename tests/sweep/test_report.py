"""Sweep results from hand-made trial rows: fronts per board, infeasible and failed trials left out, CSV."""

import csv
import io

from potatura.sweep.config import validate_sweep
from potatura.sweep.report import _csv, fronts, markdown, summarize

SWEEP = {"name": "r", "flow": {"stages": ["train", "simplify", "quant", "hwgen"]},
         "space": {"bits": {"choices": [4, 8], "keys": ["quant.weight_bits"]}, "hwgen.boards": {"choices": ["pynq-z2", "zcu104"]}},
         "objectives": ["accuracy", "latency_us"]}


def _row(n, acc, lat, board, state="complete", feasible=True, cached=()):
    stages = {s: {"status": "done", "cached": s in cached, "source_seconds": 2.0 if s in cached else None}
              for s in ("train", "simplify", "quant", "hwgen")}
    return {"number": n, "state": state, "params": {"bits": 4, "hwgen.boards": board},
            "values": [acc, lat] if state == "complete" else None, "feasible": feasible,
            "reason": None if state == "complete" else "FitError: does not fit", "sources": {},
            "metrics": {"accuracy": acc, "latency_us": lat, "board": board}, "stages": stages,
            "cache_hits": sorted(cached), "seconds": 1.0, "worker": "h:1", "run_dir": None}


def test_fronts_per_board_leave_out_failed_and_infeasible_trials():
    loaded = validate_sweep(SWEEP, "r.yaml")
    rows = [
        _row(0, 0.90, 2.0, "pynq-z2"),
        _row(1, 0.95, 3.0, "pynq-z2"),
        _row(2, 0.85, 2.5, "pynq-z2"),                  # dominated by 0
        _row(3, 0.99, 1.0, "pynq-z2", feasible=False),  # would dominate all, but breaks a constraint
        _row(4, 0.93, 1.5, "zcu104", cached=("train", "simplify")),
        _row(5, 0.97, 1.8, "zcu104"),
        _row(6, 0.99, 0.5, "zcu104", state="fail"),     # failed: no values
    ]
    f = fronts(loaded, rows)
    # overall, zcu104 trial 5 (0.97, 1.8) dominates pynq-z2 trial 1 (0.95, 3.0), and 4 dominates 0
    assert f == {"all": [4, 5], "pynq-z2": [0, 1], "zcu104": [4, 5]}
    table = list(csv.DictReader(io.StringIO(_csv(loaded, rows, set(f["all"])))))
    assert [r["pareto"] for r in table] == ["0", "0", "0", "0", "1", "1", "0"]
    assert table[6]["reason"] == "FitError: does not fit" and table[4]["cache_hits"] == "simplify train"
    s = summarize(rows, wall_seconds=10.0)
    assert s["stage_executions"]["train"] == 6 and s["stage_cache_hits"] == {"train": 1, "simplify": 1}
    assert s["seconds_saved_by_cache"] == 4.0 and (s["complete"], s["failed"]) == (6, 1)
    md = markdown(loaded, rows, f, s, ["front_pynq-z2.png"])
    assert "## Pareto front: zcu104" in md and "- trial 6: FitError: does not fit" in md
    assert "train 6 run / 1 reused" in md

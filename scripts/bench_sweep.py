#!/usr/bin/env python
"""Sweep throughput: trials per hour with 1 vs 2 Dask workers, with and without the shared stage cache.

The same sweep (a grid, so every configuration runs the same trials) runs four times, each in its
own folder on a fresh LocalCluster (processes, 1 thread per worker, 1 torch thread per trial):

    workers  stage cache
       1        off        the baseline: every trial trains
       1        on         trials sharing a training config train once
       2        off
       2        on

Wall time is measured from the first trial submitted to the last result (the cluster is started
before the clock starts; its start-up time is printed separately). All figures are measured on this
machine in one run; the ratios are against the first row.

    python scripts/bench_sweep.py --quick   # MLP 24-12 on digits, 2 epochs, 6 trials (~2 min on 2 cores)
    python scripts/bench_sweep.py           # LeNet-5 on digits with hwgen + sim, 12 trials
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

QUICK = {
    "flow": {"stages": ["train", "simplify", "quant"], "model": {"name": "lenet300", "options": {"hidden": [24, 12]}},
             "train": {"method": "serene", "epochs": 2, "preset": "off", "pwe": 1, "finetune_epochs": 0},
             "quant": {"calibration_samples": 128}},
    "space": {"quant.weight_bits": {"choices": [4, 6, 8]}, "train.lr": {"choices": [0.05, 0.1]}},
    "objectives": ["accuracy", "weight_bytes"],
}
FULL = {
    "flow": {"stages": ["train", "simplify", "quant", "hwgen", "sim"],
             "model": {"name": "lenet5", "options": {"channels": [8, 32], "hidden": 32}},
             "train": {"method": "magnitude-oneshot", "target_neurons_pct": 50, "epochs": 6, "finetune_epochs": 3,
                       "preset": "off", "lr": 0.05},
             "quant": {"calibration_samples": 256}, "hwgen": {"csim": False}},
    "space": {"bits": {"choices": [4, 6, 8], "keys": ["quant.weight_bits", "quant.act_bits"]},
              "train.target_neurons_pct": {"choices": [30, 50]}, "hwgen.boards": {"choices": ["pynq-z2", "ultra96-v2"]}},
    "objectives": ["accuracy", "latency_us", "lut_fraction"],
}


def _warm() -> None:
    import torch  # noqa: F401

    from potatura.flow import available_stages

    available_stages()


def run_one(spec: dict, root: Path, workers: int, cache: bool) -> dict:
    from dask.distributed import Client, LocalCluster

    from potatura.sweep.config import validate_sweep
    from potatura.sweep.study import grid_points, run_sweep

    name = f"w{workers}-{'cache' if cache else 'nocache'}"
    raw = dict(spec, name=name, runs_dir=str(root), sampler={"name": "grid"}, workers=workers, stage_cache=cache)
    loaded = validate_sweep(raw, "bench")
    loaded.config.n_trials = len(grid_points(loaded))
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.run(_warm)  # workers import torch and the stages before the clock starts
    startup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        outcome = run_sweep(loaded, client=client)
        wall = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    s = outcome.summary
    return {"workers": workers, "cache": cache, "trials": s["trials"], "complete": s["complete"], "wall": wall,
            "startup": startup, "per_hour": s["trials"] / wall * 3600, "train_runs": s["stage_executions"].get("train", 0),
            "hits": sum(s["stage_cache_hits"].values()), "reused_s": s["seconds_saved_by_cache"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the MLP sweep (6 trials)")
    parser.add_argument("--keep", type=Path, help="keep the sweep folders here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    spec = QUICK if args.quick else FULL
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    rows = []
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    try:
        for workers in (1, 2):
            for cache in (False, True):
                rows.append(run_one(spec, root, workers, cache))
                r = rows[-1]
                print(f"  measured: {workers} worker(s), cache {'on' if cache else 'off'}: {r['wall']:.1f} s", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    base = rows[0]["wall"]
    print()
    print(f"sweep bench ({'quick: MLP 24-12, 2 epochs' if args.quick else 'LeNet-5 on digits, hwgen + sim'}); "
          f"{os.cpu_count()} CPU cores, 1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
          f"LocalCluster processes, "
          f"1 thread per worker, torch threads 1 per trial, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print()
    print("| workers | stage cache | trials (complete) | wall s | trials/hour | speed-up | train runs | stages reused "
          "| stage s reused | cluster start s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {'on' if r['cache'] else 'off'} | {r['trials']} ({r['complete']}) | {r['wall']:.1f} | "
              f"{r['per_hour']:.0f} | {base / r['wall']:.2f}x | {r['train_runs']} | {r['hits']} | {r['reused_s']:.1f} | "
              f"{r['startup']:.1f} |")
    print()
    print("All times measured in this run (wall clock, perf_counter). Speed-up: wall time of the first row / this row.")


if __name__ == "__main__":
    main()

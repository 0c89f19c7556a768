"""Benchmark: potatura's simulator vs hls4ml's C simulation on one 8-bit LeNet-5 project, same 1,000 samples.

One run measures, on the same hwgen project (io_stream LeNet-5, 8-bit, pynq-z2) and the same inputs
(scikit-learn digits, 1,000 samples):
- steady throughput (samples/s) of csim (the compiled library, one sample per call as hls4ml's
  predict does) and of the simulator (one batched call); outputs must be identical;
- project-to-verified-outputs seconds: csim = compile (build_lib.sh, g++) + run; sim = load
  design.json + run (both then compared with the other's outputs);
- seconds for the simulator's cycle report (batch 8, FIFO sizing included).

Threads: OMP/MKL/OpenBLAS pinned to 1 thread (set below, before numpy loads); g++ runs single-job.
Steady throughput is the fastest of --repeats runs of each side (the machine is shared: the fastest
run is the least disturbed one); the first run of each is the one in project-to-verified-outputs.

    python scripts/bench_sim.py                 # builds the project first (train -> hwgen, ~1 min)
    python scripts/bench_sim.py --run-dir DIR   # a run directory whose hwgen stage has a LeNet-5 project
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FLOW = {
    "name": "bench-sim", "stages": ["train", "simplify", "quant", "hwgen"],
    "model": {"name": "lenet5", "options": {"channels": [8, 32], "hidden": 32}},
    "train": {"method": "magnitude-oneshot", "target_neurons_pct": 50, "epochs": 6, "finetune_epochs": 3,
              "preset": "off", "lr": 0.05},
    "quant": {"calibration_samples": 256},
    "hwgen": {"boards": ["pynq-z2"]},
}


def build_run(runs_dir: Path) -> Path:
    from potatura.config import load_config
    from potatura.flow import run_flow

    cfg = load_config(None, dict(FLOW, runs_dir=str(runs_dir)))
    run_flow(cfg, show_progress=False)
    return cfg.run_dir()


def samples(n: int) -> np.ndarray:
    """n digits inputs (float32 NCHW, the training preprocessing): validation split, then training split."""
    import torch

    from potatura.config import DataConfig
    from potatura.data import load_dataset

    data = load_dataset(DataConfig(), seed=0)
    x = torch.cat([data.x_val, data.x_train]).numpy().astype(np.float32)
    if len(x) < n:
        raise SystemExit(f"only {len(x)} samples in the dataset, {n} asked")
    return x[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, help="run directory with a hwgen LeNet-5 project (default: build one)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side; the fastest is its throughput")
    args = parser.parse_args()

    from potatura.sim.api import load_project
    from potatura.sim.csim import compile_csim, csim_predict
    from potatura.sim.stage import hwgen_projects

    t_build = None
    if args.run_dir is None:
        t0 = time.perf_counter()
        run_dir = build_run(Path(tempfile.mkdtemp(prefix="bench_sim_")))
        t_build = time.perf_counter() - t0
    else:
        run_dir = args.run_dir
    project = next(p["path"] for p in hwgen_projects(run_dir / "hwgen") if p["fits"])
    x = samples(args.samples)

    # csim: compile, then run every sample through the library.
    t_compile = compile_csim(project)
    acc_for_layout = load_project(project)
    x_in = x.transpose(0, 2, 3, 1) if len(acc_for_layout.input_shape) == 3 else x.reshape(len(x), -1)
    n_out = int(np.prod(acc_for_layout.output_shape))
    t0 = time.perf_counter()
    y_csim = csim_predict(project, x_in, n_out)
    t_csim_first = time.perf_counter() - t0
    t_csim_run = t_csim_first
    for _ in range(args.repeats - 1):
        t0 = time.perf_counter()
        csim_predict(project, x_in, n_out)
        t_csim_run = min(t_csim_run, time.perf_counter() - t0)

    # sim: load the design, run every sample in one call.
    t0 = time.perf_counter()
    acc = load_project(project)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    y_sim = acc.decode(acc.run(acc.encode(x))).reshape(len(x), -1)
    t_sim_first = time.perf_counter() - t0
    t_sim_run = t_sim_first
    for _ in range(args.repeats - 1):
        t0 = time.perf_counter()
        acc.decode(acc.run(acc.encode(x)))
        t_sim_run = min(t_sim_run, time.perf_counter() - t0)
    identical = bool(np.array_equal(y_sim, y_csim))
    t0 = time.perf_counter()
    report = acc.cycles(batch=8)
    t_cycles = time.perf_counter() - t0
    if not identical:
        bad = int(np.sum(np.any(y_sim != y_csim, axis=1)))
        raise SystemExit(f"outputs differ on {bad}/{len(x)} samples: the benchmark is void")

    n = len(x)
    csim_rate, sim_rate = n / t_csim_run, n / t_sim_run
    csim_total, sim_total = t_compile + t_csim_first, t_load + t_sim_first
    print(f"project: {project} ({acc.graph.name}, {report.io_type}, input {acc.input_type.ap()}, "
          f"output {acc.output_type.ap()})")
    print(f"samples: {n} digits inputs; outputs identical: {identical}; threads: 1 (OMP/MKL/OpenBLAS); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if t_build is not None:
        print(f"(project built by the flow first in {t_build:.1f} s, not counted below)")
    print()
    print("| measure | hls4ml csim | potatura sim | ratio (csim / sim) |")
    print("|---|---:|---:|---:|")
    print(f"| steady throughput (samples/s) | {csim_rate:,.0f} | {sim_rate:,.0f} | {sim_rate / csim_rate:,.1f}x faster |")
    print(f"| run {n} samples, fastest of {args.repeats} (s) | {t_csim_run:.3f} | {t_sim_run:.4f} | "
          f"{t_csim_run / t_sim_run:,.1f} |")
    print(f"| run {n} samples, first run (s) | {t_csim_first:.3f} | {t_sim_first:.4f} | "
          f"{t_csim_first / t_sim_first:,.1f} |")
    print(f"| prepare (s): csim compile / sim load | {t_compile:.2f} | {t_load:.4f} | {t_compile / t_load:,.0f} |")
    print(f"| project to verified outputs (s) | {csim_total:.2f} | {sim_total:.3f} | {csim_total / sim_total:,.1f} |")
    print(f"| cycle report, batch 8 + FIFO sizing (s) | - | {t_cycles:.3f} | - |")
    print()
    print(f"simulated: latency {report.latency_cycles:,} cycles ({report.seconds(report.latency_cycles) * 1e6:.2f} us at "
          f"{report.clock_mhz:g} MHz), interval {report.interval_cycles:,} cycles")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Training speed against the thread setting, with and without other busy processes (issue 9 item 7).

Runs the demo's training (LeNet-5 on digits, SeReNe) for a few epochs as a fresh `potatura run`
per setting, and reads the measured train seconds per epoch from its summary.json:

    2 threads, OpenMP's default wait policy (spinning: torch's default before potatura 0.1 fixed it)
    2 threads, OMP_WAIT_POLICY=PASSIVE
    1 thread (potatura's default for models under 1M parameters)

each on the machine as it is, then with `--busy` extra processes spinning on the CPUs (what other
users of a shared machine do). Ratios are to the 1-thread row of the same load, measured in the
same run of this script. Test accuracy is printed too: it depends on the thread count, and is the
same for the same setting.

    python scripts/bench_threads.py [--epochs 10] [--busy 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOW = """
name: threads
seed: 0
runs_dir: {runs}
stages: [train]
train: {{epochs: {epochs}}}
"""

SETTINGS = [("2 threads, OpenMP default wait", "2", ""), ("2 threads, PASSIVE wait", "2", "PASSIVE"),
            ("1 thread", "1", "PASSIVE")]


def _spin() -> None:
    while True:
        pass


def run_once(work: Path, epochs: int, threads: str, wait_policy: str) -> dict:
    runs = Path(tempfile.mkdtemp(dir=work))
    flow = runs / "flow.yaml"
    flow.write_text(FLOW.format(runs=runs, epochs=epochs))
    # An empty OMP_WAIT_POLICY leaves OpenMP's own default (potatura sets PASSIVE only when unset).
    env = dict(os.environ, POTATURA_THREADS=threads, OMP_WAIT_POLICY=wait_policy)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "potatura", "--quiet", "run", str(flow)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    summary = json.loads((runs / "threads" / "train" / "summary.json").read_text())
    manifest = json.loads((runs / "threads" / "manifest.json").read_text())
    return {"wall": wall, "per_epoch": summary["train_seconds_per_epoch"], "accuracy": summary["test_accuracy"],
            "threads": manifest["stages"]["train"]["threads"]["torch_threads"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--busy", type=int, default=2, help="extra spinning processes for the contended rows")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    rows = []
    for load_label, busy in (("as is", 0), (f"+{args.busy} busy processes", args.busy)):
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        try:
            load = os.getloadavg()[0]
            results = [(label, run_once(work, args.epochs, n, policy)) for label, n, policy in SETTINGS]
        finally:
            for p in spinners:
                p.terminate()
        one = results[-1][1]["per_epoch"]
        for label, r in results:
            rows.append((load_label, load, label, r, r["per_epoch"] / one))
    print(f"demo training (LeNet-5, digits, SeReNe), {args.epochs} epochs, measured; {os.cpu_count()} CPUs, "
          f"{len(os.sched_getaffinity(0))} available\n")
    print("| load | load avg | setting | train s/epoch | x 1 thread | wall s | test accuracy |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for load_label, load, label, r, ratio in rows:
        print(f"| {load_label} | {load:.1f} | {label} | {r['per_epoch']:.3f} | {ratio:.2f} | {r['wall']:.1f} | "
              f"{100 * r['accuracy']:.2f}% |")


if __name__ == "__main__":
    main()

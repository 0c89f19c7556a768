#!/usr/bin/env python
"""Start-up time of the `potatura` command (issue 9 item 8): --help, a config error, a cached re-run.

Each command runs as a fresh process (`python -m potatura ...`, what the console script does),
N times (default 5); the table gives the median, min and max wall time in seconds, measured
here, with the machine's load average before and after (a shared machine slows every row).

    python scripts/bench_cli.py                      # prepares a small cached run first
    python scripts/bench_cli.py --flow runs/demo/config.yaml   # the cached re-run of a finished run

Goals: --help and a config error < 0.5 s, a fully cached re-run < 1.5 s. The cached re-run
checks every stage's inputs (hashes) and prints the run table; it trains nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL_FLOW = """
name: bench-cli
seed: 0
runs_dir: {runs}
stages: [train, simplify]
model: {{name: lenet300, options: {{hidden: [16, 8]}}}}
data: {{limit_train: 300}}
train: {{method: none, epochs: 1}}
"""


def timed(args: list[str], expect: int, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "potatura", *args], capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - t0
    if proc.returncode != expect:
        raise SystemExit(f"`potatura {' '.join(args)}` exited {proc.returncode}, expected {expect}:\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--flow", type=Path, help="flow file of a finished run (default: a small run made here)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    bad = work / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")  # a typo: `epoch` for `epochs`
    flow = args.flow
    if flow is None:
        flow = work / "flow.yaml"
        flow.write_text(SMALL_FLOW.format(runs=work / "runs"))
        timed(["run", str(flow)], 0, work)  # makes the run; the timed runs below are all cached
    cases = [("potatura --help", ["--help"], 0, 0.5),
             ("config error (unknown field)", ["run", str(bad)], 2, 0.5),
             (f"cached re-run ({flow.name})", ["run", str(flow)], 0, 1.5)]
    load_before = os.getloadavg()[0]
    rows = []
    for label, argv, expect, goal in cases:
        timed(argv, expect, work)  # warm the file cache
        times = [timed(argv, expect, work) for _ in range(args.repeat)]
        rows.append((label, statistics.median(times), min(times), max(times), goal))
    load_after = os.getloadavg()[0]
    threads = os.environ.get("POTATURA_THREADS", "default (potatura/threads.py)")
    print(f"potatura start-up, wall seconds, median of {args.repeat} (measured; {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} before, {load_after:.1f} after; threads: {threads})\n")
    print(f"| {'command':<36} | median s | min s | max s | goal s | median / goal |")
    print(f"|{'-' * 38}|---------:|------:|------:|-------:|--------------:|")
    for label, med, lo, hi, goal in rows:
        print(f"| {label:<36} | {med:8.3f} | {lo:5.3f} | {hi:5.3f} | {goal:6.1f} | {med / goal:13.2f} |")


if __name__ == "__main__":
    main()

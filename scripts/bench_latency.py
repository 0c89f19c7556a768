#!/usr/bin/env python
"""Benchmark: the bench stage's latency protocol on a finished run, with a longer protocol.

Measures every target of potatura.bench on the artifacts of RUN_DIR (train, simplify, quant; hwgen,
sim and deploy outputs when present) in one process, one target at a time, and prints the batch-1
table (p50/p99, best throughput, ratio to torch eager on the float model) and the thread setting.
The run directory is only read: latency.json and report.html go to --out (default a temporary
folder, removed after the table is printed).

Run:   .venv/bin/python scripts/bench_latency.py runs/demo                      (1 thread, ~10 s)
       .venv/bin/python scripts/bench_latency.py runs/demo --threads 2 --iterations 5000 --out /tmp/lat
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from potatura.bench.config import TARGET_FAMILIES, BenchConfig
from potatura.bench.report import load_latency, terminal_table
from potatura.bench.stage import run_bench
from potatura.errors import PotaturaError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (runs/<name>) with train, simplify and quant done")
    parser.add_argument("--threads", type=int, default=1, help="torch and single-thread onnxruntime threads")
    parser.add_argument("--iterations", type=int, default=2000, help="timed runs per (target, batch size)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed runs before them")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="time cap per (target, batch size)")
    parser.add_argument("--batch-sizes", default="1,16,256", help="offline sweep, comma-separated")
    parser.add_argument("--targets", default=",".join(TARGET_FAMILIES), help="target families, comma-separated")
    parser.add_argument("--out", type=Path, default=None, help="keep latency.json and report.html here")
    args = parser.parse_args(argv)
    cfg = BenchConfig(iterations=args.iterations, warmup=args.warmup, max_seconds=args.max_seconds,
                      batch_sizes=[int(b) for b in args.batch_sizes.split(",")], threads=args.threads,
                      targets=args.targets.split(","))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_latency."))
    console = Console(width=160)
    try:
        run_bench(args.run_dir.resolve(), cfg, out)
        latency = load_latency(args.run_dir, out)
        console.print(terminal_table(latency))
        for s in latency["skipped"]:
            console.print(f"  not measured: {s.name}: {s.reason}", highlight=False)
        console.print(f"threads: torch {cfg.threads} (torch.set_num_threads), onnxruntime intra-op {cfg.threads} "
                      f"or every core ({os.cpu_count()}) as named; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
                      f"{latency['machine']['processor']}", highlight=False)
    except PotaturaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    if args.out is not None:
        console.print(f"latency.json and report.html in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

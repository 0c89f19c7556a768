"""bench: latency of every target under one protocol, and the run report.

    run_bench(run_dir, BenchConfig, out_dir)      measure, write latency.json and report.html
                                                  (potatura.bench.stage; STAGE is the flow stage)
    write_report(run_dir, out=None)               rebuild report.html from a run directory
                                                  (potatura.bench.report; `potatura report RUN_DIR`)
    Target, TargetResult, LatencyPoint            the protocol (potatura.bench.harness)
    discover_targets(run_dir, BenchConfig, out)   the targets a run directory allows, and the ones
                                                  it does not with the reason (potatura.bench.targets)

Every figure carries its kind: measured (wall clock here or on a real board), emulated (the
emulated board) or simulated (potatura's simulator: cycles / clock).
"""

"""The `bench` stage: latency of every target under one protocol, and the run report.

Reads train, simplify and quant outputs (required) and, when the run has them, the hwgen projects,
the sim stage's reports and the deploy bundles. Writes under <run>/bench/:

    latency.json    protocol, machine, every target's points (kind: measured / emulated /
                    simulated), the targets not measured and why, ONNX export checks
    onnx/*.onnx     the float and simplified models exported for onnxruntime
    report.html     the run report (self-contained; potatura.bench.report)
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from potatura.artifacts import read_json, write_json
from potatura.bench.config import BenchConfig
from potatura.bench.harness import run_targets
from potatura.bench.report import LATENCY_FORMAT, latency_summary, write_report
from potatura.bench.targets import discover_targets
from potatura.flow import Stage, StageContext

# Later-stage outputs the bench reads when a run has them (not required: the stage runs without).
OPTIONAL_STAGES = ("hwgen", "sim", "deploy")


def machine() -> dict:
    import onnxruntime
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(), "processor": _cpu_model(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average": _load_average()}


def _load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages when the OS has them: a loaded machine explains noisy figures."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_bench(run_dir: Path, cfg: BenchConfig, out_dir: Path, log=None, progress=None) -> dict[str, Path]:
    """Measure every target of cfg on the artifacts of run_dir; write latency.json and report.html."""
    import logging

    from potatura.flow import Progress

    log = log or logging.getLogger("potatura.bench")
    progress = progress or Progress(enabled=False)
    host = machine()  # before the measurements: the load average says how busy the machine was
    targets, skipped, exports = discover_targets(run_dir, cfg, out_dir)
    for s in skipped:
        log.info("bench: %s not measured: %s", s.name, s.reason)
    with progress.task("bench", total=len(targets)) as bar:
        def on_target(target) -> None:
            bar(advance=1, description=f"bench: {target.name}")
            log.info("bench: %s (%s)", target.name, target.description)

        results, failed = run_targets(targets, cfg.batch_sizes, cfg.iterations, cfg.warmup, cfg.max_seconds,
                                      on_target=on_target)
    for s in failed:
        log.warning("bench: %s: %s", s.name, s.reason)
    latency = {
        "format": LATENCY_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": host,
        "protocol": {
            "description": "MLPerf-style: single-stream batch-1 latency (p50/p90/p99/mean of per-call seconds) "
                           "and offline throughput (samples / timed seconds) per batch size; one target at a time.",
            "iterations": cfg.iterations, "warmup": cfg.warmup, "max_seconds": cfg.max_seconds,
            "batch_sizes": cfg.batch_sizes, "threads": cfg.threads,
            "inputs": "the quant stage's golden inputs (validation samples), repeated to fill a batch",
        },
        "results": [r.to_dict() for r in results],
        "skipped": [vars(s) for s in skipped + failed],
        "onnx_exports": exports,
    }
    latency.update(latency_summary(results))
    outputs = {"latency": write_json(out_dir / "latency.json", latency)}
    outputs["report"] = write_report(run_dir, out_dir / "report.html", bench_dir=out_dir)
    if (out_dir / "onnx").is_dir():
        outputs["onnx"] = out_dir / "onnx"
    best = latency.get("fastest_cpu_batch1")
    if best:
        log.info("bench: fastest CPU batch-1 latency %.1f us (%s, measured)", best["p50_s"] * 1e6, best["name"])
    log.info("bench: report in %s", outputs["report"])
    return outputs


def run(ctx: StageContext) -> dict:
    return run_bench(ctx.run_dir, ctx.config.bench, ctx.out_dir, ctx.log, ctx.progress)


def headline(stage_dir: Path) -> Optional[str]:
    """One line for the end-of-run report: fastest CPU, fastest FPGA per kind, report path."""
    from potatura.bench.report import fastest, load_latency

    latency = load_latency(stage_dir.parent, stage_dir)
    if latency is None:
        return None
    results = latency["results"]
    parts = []
    cpu = fastest(results, "cpu")
    if cpu:
        parts.append(f"fastest CPU batch 1: {cpu.name} {cpu.single_stream.p50_s * 1e6:.1f} us p50 "
                     f"({cpu.threads} thread(s), measured)")
    for kind in ("simulated", "emulated", "measured"):
        fpga = fastest(results, "fpga", kind)
        if fpga:
            parts.append(f"{fpga.name}: {fpga.single_stream.p50_s * 1e6:.2f} us ({kind})")
    if not any(r.device == "fpga" for r in results):
        parts.append("no FPGA figure (" + "; ".join(f"{s.name}: {s.reason}" for s in latency["skipped"]
                                                     if s.name in ("simulated", "emulated")) + ")")
    parts.append(f"report {stage_dir / 'report.html'}")
    return "; ".join(parts)


def fingerprint(cfg) -> dict[str, Any]:
    """Content hashes of the optional later-stage outputs the bench reads (hwgen, sim, deploy), so
    that a rerun of any of them reruns the bench; and of the board agent's URL."""
    manifest = cfg.run_dir() / "manifest.json"
    identity: dict[str, Any] = {"board": cfg.bench.board_url or os.environ.get("POTATURA_BOARD")}
    if manifest.is_file():
        try:
            stages = read_json(manifest).get("stages", {})
        except ValueError:
            stages = {}
        for name in OPTIONAL_STAGES:
            record = stages.get(name, {})
            if record.get("status") == "done":
                identity[name] = {k: v.get("sha256") for k, v in record.get("outputs", {}).items()}
    return identity


STAGE = Stage(
    name="bench",
    run=run,
    config_sections=("bench",),
    needs=("train", "simplify", "quant"),
    description="latency of CPU (torch, onnxruntime), GPU and FPGA (simulated, emulated, board) targets; "
                "the run report",
    headline=headline,
    fingerprint=fingerprint,
)

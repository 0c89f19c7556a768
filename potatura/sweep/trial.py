"""One sweep trial: a normal flow run in its own run directory, then its metrics.

run_trial() is the function Dask runs on a worker. It never raises for a trial that fails
(does not fit, diverges, bad input): the failure is part of the result, with its reason. A
worker that dies mid-trial loses nothing but time: Dask reruns the task elsewhere, and the flow
runner resumes the run directory from the stage that was running (training from its last epoch).
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from potatura.artifacts import read_json


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def stage_records(run_dir: Path) -> dict[str, dict]:
    """Per stage of the run's manifest: status, seconds, and whether it came from the stage cache."""
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return {}
    try:
        stages = read_json(manifest).get("stages", {})
    except ValueError:
        return {}
    out = {}
    for name, rec in stages.items():
        cache = rec.get("cache")
        out[name] = {"status": rec.get("status"), "seconds": rec.get("seconds"),
                     "cached": bool(cache), "source_seconds": (cache or {}).get("source_seconds"),
                     "error": rec.get("error")}
    return out


def _output(run_dir: Path, stage: str, name: str) -> Optional[Path]:
    try:
        rec = read_json(run_dir / "manifest.json")["stages"][stage]
        return run_dir / rec["outputs"][name]["path"]
    except (KeyError, ValueError, OSError):
        return None


def _projects(run_dir: Path) -> list[dict]:
    """(board, backend, project dir, fits) of each hwgen project: hwgen/index.json, else report.json."""
    index = run_dir / "hwgen" / "index.json"
    if index.is_file():
        return [{"board": p["board"], "backend": p["backend"], "dir": run_dir / p["path"], "fits": p.get("fits")}
                for p in read_json(index)]
    report = run_dir / "hwgen" / "report.json"
    if report.is_file():
        return [{"board": p["board"], "backend": p["backend"], "dir": run_dir / "hwgen" / p["dir"], "fits": p.get("fits")}
                for p in read_json(report).get("projects", [])]
    return []


def _sim_report(run_dir: Path, board: str, backend: str) -> Optional[dict]:
    """The simulator's CycleReport of a project, when the sim stage ran."""
    path = run_dir / "sim" / board / backend / "report.json"
    if not path.is_file():
        return None
    report = read_json(path)
    return report.get("cycles", report) if isinstance(report, dict) else None


# Fit reports written before the hls4ml fitter took its cycles from the simulator carry no `cycles`
# field: their cycles were the fitter's own estimate.
UNLABELLED_FIT_CYCLES = "estimated (hwgen fit: its report does not say where its cycles come from)"


def fit_cycles_source(fit: dict, summary: Optional[dict] = None) -> str:
    """Where a fit report's latency_cycles/interval_cycles come from, in the fit report's own words.

    The fit report's `cycles` field (hls4ml: "simulated (potatura.sim: ...)", the simulator's
    schedule and a simulation of the chosen design; hlsinf: "estimated (the engine's schedule per
    call, ...)", the planner's cycle model), else hwgen/report.json's entry for the project
    (`summary`, the same field), else UNLABELLED_FIT_CYCLES. Returned as "<kind> (hwgen fit: <detail>)".
    """
    text = fit.get("cycles") if isinstance(fit.get("cycles"), str) else None
    if text is None and summary and isinstance(summary.get("cycles"), str):
        text = summary["cycles"]
    if not text:
        return UNLABELLED_FIT_CYCLES
    kind, _, detail = text.strip().partition(" ")
    detail = detail.strip()
    if detail.startswith("(") and detail.endswith(")"):
        detail = detail[1:-1]
    return f"{kind} (hwgen fit: {detail})" if detail else f"{kind} (hwgen fit)"


def _report_entry(run_dir: Path, board: str, backend: str) -> Optional[dict]:
    """hwgen/report.json's entry of a project, when there is one."""
    path = run_dir / "hwgen" / "report.json"
    try:
        projects = read_json(path).get("projects", []) if path.is_file() else []
    except (ValueError, AttributeError):
        return None
    return next((p for p in projects if p.get("board") == board and p.get("backend") == backend), None)


def collect_metrics(run_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics, source of each) of a finished (or partly finished) run directory."""
    metrics: dict[str, Any] = {}
    sources: dict[str, str] = {}
    summary_path = _output(run_dir, "quant", "summary")
    if summary_path is not None and summary_path.is_file():
        s = read_json(summary_path)
        test = s.get("accuracy", {}).get("test", {})
        if test.get("quantized") is not None:
            metrics["accuracy"] = test["quantized"]
            sources["accuracy"] = "measured (quant: test split)"
        if test.get("input") is not None:
            metrics["float_accuracy"] = test["input"]
            sources["float_accuracy"] = "measured (quant: test split)"
        weights = s.get("weights") or {}
        if weights.get("nonzero_bytes_at_bit_width") is not None:
            metrics["weight_bytes"] = weights["nonzero_bytes_at_bit_width"]
            sources["weight_bytes"] = "computed"
    projects = _projects(run_dir)
    if projects:
        p = projects[0]
        metrics["board"], metrics["backend"], metrics["fits"] = p["board"], p["backend"], p["fits"]
        fit_path = Path(p["dir"]) / "fit_report.json"
        if fit_path.is_file():
            fit = read_json(fit_path)
            figures = fit.get("figures", "estimated")
            for r, v in (fit.get("utilization") or {}).items():
                metrics[f"{r}_fraction"] = v
                sources[f"{r}_fraction"] = f"{figures} (hwgen fit)"
            fractions = [metrics.get(f"{r}_fraction") for r in ("lut", "ff", "dsp", "bram18")]
            if all(f is not None for f in fractions):
                metrics["max_fraction"] = max(fractions)
                sources["max_fraction"] = f"{figures} (hwgen fit)"
            metrics["clock_mhz"] = fit.get("clock_mhz")
            if any(fit.get(k) is not None for k in ("latency_cycles", "interval_cycles")):
                cycles = fit_cycles_source(fit, None if "cycles" in fit else _report_entry(run_dir, p["board"], p["backend"]))
            for k in ("latency_cycles", "interval_cycles"):
                if fit.get(k) is not None:
                    metrics[k] = fit[k]
                    sources[k] = cycles
        sim = _sim_report(run_dir, p["board"], p["backend"])
        if sim is not None:
            for k in ("latency_cycles", "interval_cycles"):
                if sim.get(k) is not None:
                    metrics[k] = sim[k]
                    sources[k] = "simulated (sim stage)"
            if sim.get("clock_mhz"):
                metrics["clock_mhz"] = sim["clock_mhz"]
        if metrics.get("latency_cycles") is not None and metrics.get("clock_mhz"):
            metrics["latency_us"] = metrics["latency_cycles"] / metrics["clock_mhz"]
            sources["latency_us"] = sources["latency_cycles"]
    return metrics, sources


def wait_for_run_dir(run_dir: Path) -> None:
    """Wait while another process runs this trial's flow (the runner's flock on <run>/.lock).

    After a driver was killed, its trial may still be running on a remote worker when --resume
    submits it again: the new attempt waits for it, then finds its stages done or resumes them."""
    import fcntl

    lock = run_dir / ".lock"
    if not lock.is_file():
        return
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)  # closing releases it


def run_trial(spec: dict) -> dict:
    """Run trial spec["number"]: its flow (spec["flow"], a flow mapping) with the stage cache.

    spec: number, flow (mapping validated here), stage_cache (folder or None), threads (torch
    threads). Returns a JSON-able result: status "complete" | "failed", reason, metrics, sources,
    stages (per-stage status and cache use), seconds, worker (host:pid).
    """
    # The flow runner's thread setting (potatura.threads): a worker runs one trial at a time, with
    # spec["threads"] torch threads; OpenMP threads wait passively (set before torch loads).
    os.environ["POTATURA_THREADS"] = str(int(spec.get("threads", 1)))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from potatura import stagecache
    from potatura.config import validate_config
    from potatura.errors import PotaturaError
    from potatura.flow import run_flow

    number = spec["number"]
    torch.set_num_threads(int(spec["threads"]) if spec.get("threads") else 1)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"number": number, "status": "complete", "reason": None,
                              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    run_dir = None
    try:
        cfg = validate_config(spec["flow"], f"trial {number}")
        run_dir = cfg.run_dir().resolve()
        wait_for_run_dir(run_dir)
        run_flow(cfg, show_progress=False, stage_cache=spec.get("stage_cache"))
    except PotaturaError as exc:
        result.update(status="failed", reason=_first_line(exc))
    except Exception as exc:  # a bug or a numerical failure in a stage: recorded, the sweep goes on
        result.update(status="failed", reason=_first_line(exc), traceback=traceback.format_exc(limit=8))
    finally:
        stagecache.release()
    result["seconds"] = time.perf_counter() - t0
    if run_dir is not None:
        result["run_dir"] = str(run_dir)
        result["stages"] = stage_records(run_dir)
        metrics, sources = collect_metrics(run_dir)
        result["metrics"] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        result["sources"] = sources
        if result["status"] == "complete" and metrics.get("fits") is False:
            result.update(status="failed", reason=f"does not fit {metrics.get('board')}")
    return result

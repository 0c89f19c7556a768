"""The `sim` stage: every hwgen project through the simulator: outputs checked bit-exactly, cycles reported.

Reads hwgen's projects (hwgen/index.json when present, else its report.json; each project dir
holds design.json) and quant's golden.npz (x float32 NCHW inputs; y reference outputs, or
x_codes / y_codes integer codes). Writes sim/<board>/<backend>/report.json|md per project and
sim/report.json|md: per layer II, latency, trip count, stalls; per FIFO depth, maximum occupancy
and sized depth; latency and throughput in cycles and seconds at the board clock (simulated).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from potatura.artifacts import npz_read_error, read_json, write_json, write_text
from potatura.errors import DataError
from potatura.hwgen.index import hwgen_projects
from potatura.flow import Stage, StageContext


def load_golden_codes(path: Path, acc, samples: Optional[int]) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """(input codes, expected output codes or None, where the expectation comes from)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise npz_read_error(path, exc) from None
    n = samples
    if "x_codes" in arrays:
        x = arrays["x_codes"][:n].astype(np.int64).reshape(-1, *acc.input_shape)
    elif "x" in arrays:
        x = acc.encode(arrays["x"][:n])
    else:
        raise DataError(f"{path}: golden file has neither x nor x_codes; arrays: {', '.join(arrays)}")
    out_shape = (len(x), *acc.output_shape)
    if "y_codes" in arrays:
        return x, arrays["y_codes"][:n].astype(np.int64).reshape(out_shape), "golden y_codes"
    if "y" in arrays:
        scaled = np.asarray(arrays["y"][:n], dtype=np.float64) * 2.0 ** acc.output_type.frac
        if scaled.size == len(x) * int(np.prod(acc.output_shape)) and np.all(scaled == np.round(scaled)):
            return x, np.round(scaled).astype(np.int64).reshape(out_shape), "golden y (QONNX reference values / LSB)"
        return x, None, "golden y is not on the output type's grid"
    return x, None, "golden file has no y"


def simulate_project(project_dir: Path, golden: Optional[Path], cfg) -> dict:
    """Load, run the golden set, report the cycles of one project."""
    from potatura.sim.api import load_project

    t0 = time.perf_counter()
    acc = load_project(project_dir)
    load_s = time.perf_counter() - t0
    check: dict = {"checked": False, "reason": "no golden data"}
    if golden is not None:
        x, expected, source = load_golden_codes(golden, acc, cfg.samples)
        t0 = time.perf_counter()
        y = acc.run(x)
        run_s = time.perf_counter() - t0
        if expected is None:
            check = {"checked": False, "reason": source, "samples": len(x)}
        else:
            same = np.all((y == expected).reshape(len(x), -1), axis=1)
            diff = np.abs(y.astype(np.float64) - expected).reshape(len(x), -1)
            check = {"checked": True, "against": source, "samples": int(len(x)), "exact_matches": int(same.sum()),
                     "bit_exact": bool(same.all()), "max_difference_codes": float(diff.max()) if diff.size else 0.0,
                     "seconds": round(run_s, 4)}
    t0 = time.perf_counter()
    report = acc.cycles(cfg.batch, size_fifos=cfg.size_fifos)
    cycles_s = time.perf_counter() - t0
    return {"design": {"graph": acc.graph.name, "backend": acc.design.backend, "board": acc.design.board,
                       "io_type": report.io_type, "clock_mhz": acc.clock_mhz},
            "outputs": check, "cycles": report.to_dict(),
            "seconds": {"load": round(load_s, 4), "cycle_report": round(cycles_s, 4)}}


def _project_markdown(name: str, r: dict) -> str:
    c = r["cycles"]
    o = r["outputs"]
    lines = [f"# sim {name}", "",
             f"{r['design']['graph']} ({r['design']['io_type']}) at {c['clock_mhz']:g} MHz, batch {c['batch']} "
             "(all figures simulated by potatura.sim)", "",
             f"- latency {c['latency_cycles']:,} cycles = {c['latency_seconds'] * 1e6:.2f} us",
             f"- interval {c['interval_cycles']:,} cycles = {c['interval_seconds'] * 1e6:.2f} us "
             f"({c['throughput_samples_per_second']:,.0f} samples/s)",
             f"- batch of {c['batch']}: {c['total_cycles']:,} cycles",
             f"- DMA per sample: {c['dma']['bytes_in']} B in ({c['dma']['cycles_in']} cycles), "
             f"{c['dma']['bytes_out']} B out ({c['dma']['cycles_out']} cycles); {c['dma']['bandwidth_source']}",
             "- outputs: " + (f"{o['exact_matches']}/{o['samples']} bit-exact against {o['against']}"
                               if o.get("checked") else f"not checked ({o.get('reason')})"), "",
             "| module | layer | op | II | latency | trip count | stalls (in + out) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for m in c["per_layer"]:
        lines.append(f"| {m['name']} | {m['layer']} | {m['op']} | {m['ii']} | {m['latency']} | {m['trip_count']} | "
                     f"{m['stall_cycles']:,} ({m['stall_in_cycles']:,} + {m['stall_out_cycles']:,}) |")
    lines += ["", "| FIFO | depth | max occupancy | unbounded max occupancy | sized depth |", "|---|---:|---:|---:|---:|"]
    for f in c["fifos"]:
        lines.append(f"| {f['name']} | {f['depth']} | {f['max_occupancy']} | {f['unbounded_max_occupancy']} | "
                     f"{f['sized_depth'] if f['sized_depth'] is not None else '-'} |")
    return "\n".join(lines) + "\n"


def run_sim(cfg, hwgen_dir: Path, golden: Optional[Path], out_dir: Path, log=None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    projects = [p for p in hwgen_projects(Path(hwgen_dir)) if p["fits"]]
    if not projects:
        raise DataError(f"sim: {hwgen_dir}: no fitting hwgen project to simulate")
    outputs: dict[str, Path] = {}
    summary = []
    for p in projects:
        result = simulate_project(Path(p["path"]), golden, cfg)
        where = out_dir / p["board"] / p["backend"]
        outputs[f"{p['board']}.{p['backend']}"] = write_json(where / "report.json", result)
        write_text(where / "report.md", _project_markdown(f"{p['board']}/{p['backend']}", result))
        summary.append({"board": p["board"], "backend": p["backend"], "dir": f"{p['board']}/{p['backend']}",
                        **{k: result["cycles"][k] for k in ("latency_cycles", "interval_cycles", "clock_mhz",
                                                            "latency_seconds", "interval_seconds", "io_type")},
                        "fifos_sized": sum(1 for f in result["cycles"]["fifos"] if f["sized_depth"] is not None),
                        "outputs": result["outputs"], "seconds": result["seconds"]})
        if log is not None:
            log.info("sim %s/%s: %s", p["board"], p["backend"], _headline_part(summary[-1]))
    outputs["report"] = write_json(out_dir / "report.json", {"projects": summary,
                                                             "kind": "simulated (potatura.sim)"})
    md = ["# sim report", "", "| board | backend | io | latency (cycles) | latency (us) | interval (cycles) | "
          "FIFOs sized | outputs bit-exact |", "|---|---|---|---:|---:|---:|---:|---|"]
    for s in summary:
        o = s["outputs"]
        md.append(f"| {s['board']} | {s['backend']} | {s['io_type']} | {s['latency_cycles']:,} | "
                  f"{s['latency_seconds'] * 1e6:.2f} | {s['interval_cycles']:,} | {s['fifos_sized']} | "
                  + (f"{o['exact_matches']}/{o['samples']}" if o.get("checked") else "not checked") + " |")
    md += ["", "All cycle figures are simulated by potatura.sim (its model of hls4ml's dataflow); per project "
           "details in <board>/<backend>/report.md.", ""]
    outputs["summary"] = write_text(out_dir / "report.md", "\n".join(md))
    return outputs


def _headline_part(s: dict) -> str:
    o = s["outputs"]
    exact = (f"outputs bit-exact {o['exact_matches']}/{o['samples']}" if o.get("checked")
             else f"outputs not checked ({o.get('reason')})")
    return (f"latency {s['latency_cycles']:,} cycles ({s['latency_seconds'] * 1e6:.2f} us at {s['clock_mhz']:g} MHz), "
            f"interval {s['interval_cycles']:,} cycles, {s['fifos_sized']} FIFOs sized, {exact} (simulated)")


def run(ctx: StageContext) -> dict:
    hwgen_dir = Path(ctx.input("hwgen", "report")).parent
    golden = ctx.inputs.get("quant", {}).get("golden")
    return run_sim(ctx.config.sim, hwgen_dir, golden, ctx.out_dir, ctx.log)


def headline(stage_dir: Path) -> Optional[str]:
    path = stage_dir / "report.json"
    if not path.is_file():
        return None
    return "; ".join(f"{s['board']}/{s['backend']}: {_headline_part(s)}" for s in read_json(path)["projects"])


STAGE = Stage(
    name="sim",
    run=run,
    config_sections=("sim",),
    needs=("quant", "hwgen"),
    description="cycle-accurate simulation of every hwgen project: outputs bit-exact against golden, cycles, FIFOs",
    headline=headline,
)

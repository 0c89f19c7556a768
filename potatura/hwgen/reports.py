"""Read vendor reports back: the HLS C-synthesis XML and Vivado's utilization report."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from potatura.errors import DataError


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None  # "undef" for data-dependent latencies


def parse_csynth_xml(path: str | Path) -> dict:
    """Figures of a Vivado/Vitis HLS <top>_csynth.xml: resources, latency and interval (cycles), clock (ns)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"{path}: not a readable C-synthesis report: {exc}") from None
    perf = root.find("PerformanceEstimates")
    area = root.find("AreaEstimates/Resources")
    if perf is None or area is None:
        raise DataError(f"{path}: no PerformanceEstimates/AreaEstimates: not a csynth.xml report")
    latency = perf.find("SummaryOfOverallLatency")

    def lat(tag: str) -> float | None:
        return _number(latency.findtext(tag)) if latency is not None else None

    def res(*tags: str) -> int | None:
        for tag in tags:
            value = _number(area.findtext(tag))
            if value is not None:
                return int(value)
        return None

    return {
        "source": "HLS C-synthesis report (synthesized estimate)",
        "file": str(path),
        "part": root.findtext("UserAssignments/Part"),
        "target_clock_ns": _number(root.findtext("UserAssignments/TargetClockPeriod")),
        "estimated_clock_ns": _number(perf.findtext("SummaryOfTimingAnalysis/EstimatedClockPeriod")),
        "latency_best_cycles": lat("Best-caseLatency"),
        "latency_worst_cycles": lat("Worst-caseLatency"),
        "interval_min_cycles": lat("Interval-min"),
        "interval_max_cycles": lat("Interval-max"),
        "bram18": res("BRAM_18K"),
        "dsp": res("DSP48E", "DSP"),
        "ff": res("FF"),
        "lut": res("LUT"),
        "uram": res("URAM"),
    }


_UTIL_ROWS = {
    "lut": ("Slice LUTs", "CLB LUTs"),
    "ff": ("Slice Registers", "CLB Registers"),
    "bram36": ("Block RAM Tile",),
    "dsp": ("DSPs",),
    "uram": ("URAM",),
}


def parse_utilization(path: str | Path) -> dict:
    """Used counts of Vivado's `report_utilization` (flat) text report, after implementation."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: utilization report not found")
    out: dict = {"source": "Vivado utilization report (implemented design)", "file": str(path)}
    rows = {}
    for line in path.read_text(errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] and cells[0] not in rows:
            rows[cells[0]] = cells[1]
    for key, names in _UTIL_ROWS.items():
        for name in names:
            if name in rows:
                value = _number(rows[name])
                if value is not None:
                    out[key] = value if key == "bram36" else int(value)
                    break
    if "bram36" in out:
        out["bram18"] = int(round(2 * out["bram36"]))  # a tile is one BRAM36 = two BRAM18 (0.5 tiles: one BRAM18)
    if not any(k in out for k in _UTIL_ROWS):
        raise DataError(f"{path}: no LUT/FF/BRAM/DSP rows: not a Vivado utilization report")
    return out


def find_reports(project_dir: Path, project_name: str) -> dict[str, Path]:
    """Report files a build left in the project, by kind (csynth, utilization)."""
    found = {}
    csynth = project_dir / f"{project_name}_prj" / "solution1" / "syn" / "report" / f"{project_name}_axi_csynth.xml"
    if csynth.is_file():
        found["csynth"] = csynth
    util = project_dir / "reports" / "utilization.rpt"
    if util.is_file():
        found["utilization"] = util
    return found



def measured_figures(reports: dict) -> dict | None:
    """The figures a build measured, for headlines and report.json: resources from the implemented
    design's utilization report when there is one, else from the C-synthesis report; cycles from the
    C-synthesis report. None when no build left a report."""
    if not reports:
        return None
    out: dict = {}
    for kind, label in (("utilization", "implemented"), ("csynth", "synthesized")):
        rep = reports.get(kind)
        if rep and "lut" not in out:
            out.update({k: rep[k] for k in ("lut", "ff", "dsp", "bram18", "uram") if rep.get(k) is not None})
            out["resources"] = f"{label} ({rep.get('source', kind)})"
    csynth = reports.get("csynth") or {}
    if csynth.get("latency_worst_cycles") is not None:
        out["latency_cycles"] = int(csynth["latency_worst_cycles"])
        out["cycles"] = "synthesized (HLS C-synthesis report)"
    if csynth.get("interval_max_cycles") is not None:
        out["interval_cycles"] = int(csynth["interval_max_cycles"])
    return out or None

"""The run report: runs/<name>/bench/report.html (self-contained) and the terminal table.

Everything is read from the run directory: the stages' JSON outputs, the hwgen fit reports, the
sim stage's reports when present, and bench/latency.json (written by the bench stage). Plots are
matplotlib PNGs embedded as base64, so the file opens anywhere without its run directory.
Every figure says how it was obtained: measured, emulated, simulated, estimated or counted.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional

from potatura.artifacts import read_json, write_text
from potatura.bench.harness import Skipped, TargetResult, speedups

LATENCY_FORMAT = "potatura-bench/1"
BASELINE = "torch float"
# the goal for the pruned accelerator (seconds per image, simulated at the board clock)
GOAL_LATENCY_S = 20e-6
KIND_COLORS = {"measured": "#1f77b4", "emulated": "#ff7f0e", "simulated": "#2ca02c"}


# -- reading the run directory ---------------------------------------------------------------------


def _json(path: Path) -> Optional[Any]:
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:
        return None


def load_latency(run_dir: Path, bench_dir: Optional[Path] = None) -> Optional[dict]:
    """latency.json (of bench_dir, default <run>/bench) with TargetResult objects, or None when absent."""
    data = _json(Path(bench_dir or Path(run_dir) / "bench") / "latency.json")
    if data is None:
        return None
    data = dict(data)
    data["results"] = [TargetResult.from_dict(r) for r in data.get("results", [])]
    data["skipped"] = [Skipped(**s) for s in data.get("skipped", [])]
    return data


def fastest(results: Iterable[TargetResult], device: str, kind: str = "measured") -> Optional[TargetResult]:
    """The result of `device`/`kind` with the smallest batch-1 p50."""
    pool = [r for r in results if r.device == device and r.kind == kind and r.single_stream is not None]
    return min(pool, key=lambda r: r.single_stream.p50_s, default=None)


def latency_summary(results: list[TargetResult]) -> dict:
    """Baseline, speedups over it and the fastest CPU figure (batch 1, p50)."""
    baseline = next((r for r in results if r.name == BASELINE), None) or fastest(results, "cpu")
    cpu = fastest(results, "cpu")
    return {
        "baseline": baseline.name if baseline else None,
        "baseline_p50_s": baseline.single_stream.p50_s if baseline and baseline.single_stream else None,
        "speedup_vs_baseline_batch1": speedups(results, baseline),
        "fastest_cpu_batch1": {"name": cpu.name, "p50_s": cpu.single_stream.p50_s, "threads": cpu.threads}
        if cpu else None,
    }


def goal_check(results: list[TargetResult]) -> list[dict]:
    """The issue's goal for each simulated accelerator: <= 20 us per image and below the fastest CPU
    batch-1 latency of the same run. Each row says met / missed / not evaluated, and why."""
    cpu = fastest(results, "cpu")
    rows = []
    for r in results:
        if r.kind != "simulated" or r.single_stream is None:
            continue
        s = r.single_stream.p50_s
        rows.append({"target": r.name, "check": "<= 20 us per image (simulated)", "value_s": s,
                     "met": s <= GOAL_LATENCY_S})
        if cpu is not None:
            rows.append({"target": r.name, "check": f"below the fastest CPU batch-1 latency ({cpu.name}, measured)",
                         "value_s": s, "reference_s": cpu.single_stream.p50_s, "met": s < cpu.single_stream.p50_s})
        rows.append({"target": r.name, "check": ">= 10x below the unpruned accelerator", "value_s": s, "met": None,
                     "why": "a run builds only the pruned model's accelerator "
                            "(scripts/bench_hwgen.py compares dense and pruned)"})
    if not rows:
        rows.append({"target": "FPGA", "check": "<= 20 us per image; below the fastest CPU", "met": None,
                     "why": "no simulated accelerator in this run (see the skipped targets)"})
    return rows


def accuracy_rows(run_dir: Path) -> list[dict]:
    """Accuracy through the stages: [{stage, model, split, accuracy, how}]."""
    from potatura.bench.targets import board_kind

    rows = []
    train = _json(run_dir / "train" / "summary.json")
    if train:
        rows.append({"stage": "train", "model": f"{train['model']} float ({train['method']})", "split": "test",
                     "accuracy": train["test_accuracy"], "how": "measured"})
    simplify = _json(run_dir / "simplify" / "summary.json")
    if simplify and simplify.get("validation"):
        v = simplify["validation"]
        for key, label in (("accuracy_before", "before simplify"), ("accuracy_after", "simplified")):
            if v.get(key) is not None:
                rows.append({"stage": "simplify", "model": label, "split": f"validation ({v['samples']})",
                             "accuracy": v[key], "how": "measured"})
    quant = _json(run_dir / "quant" / "summary.json")
    if quant:
        test = quant["accuracy"]["test"]
        for key, label in (("input", "simplified float (quant input)"), ("ptq", "PTQ fake-quantized"),
                           ("qat", "QAT fake-quantized")):
            if test.get(key) is not None:
                rows.append({"stage": "quant", "model": label, "split": "test", "accuracy": test[key],
                             "how": "measured"})
    for project in _hwgen_report_projects(run_dir):
        csim = project.get("csim") or {}
        if csim.get("samples"):
            rows.append({"stage": "hwgen", "model": f"{project['board']}/{project['backend']} C simulation",
                         "split": f"agreement with QONNX ({csim['samples']} golden)",
                         "accuracy": csim.get("argmax_agreement"), "how": "simulated",
                         "note": f"{csim['exact_matches']}/{csim['samples']} bit-exact"})
    for path in sorted((run_dir / "sim").glob("*/*/report.json")):
        outputs = (_json(path) or {}).get("outputs") or {}
        if outputs.get("checked") and outputs.get("samples"):
            rows.append({"stage": "sim", "model": f"{path.parent.parent.name}/{path.parent.name} potatura simulator",
                         "split": f"agreement with {outputs.get('against', 'golden')} ({outputs['samples']})",
                         "accuracy": outputs["exact_matches"] / outputs["samples"], "how": "simulated",
                         "note": f"{outputs['exact_matches']}/{outputs['samples']} bit-exact"})
    for path in sorted((run_dir / "deploy").glob("*/*.result.json")):
        result = _json(path) or {}
        golden = result.get("golden") or {}
        if golden.get("samples"):
            # the agent's hardware source decides (board_kind): the emulated board behind pynq is emulated
            how = board_kind({"device": (result.get("agent") or {}).get("device", result.get("target")),
                              "hardware_source": (result.get("benchmark") or {}).get("hardware_source")})
            rows.append({"stage": "deploy", "model": f"{result.get('board')}/{result.get('backend')} on the "
                                                     f"{'emulated board' if how == 'emulated' else 'board'}",
                         "split": f"golden codes ({golden['samples']})",
                         "accuracy": golden["exact"] / golden["samples"],
                         "how": how,
                         "note": f"{golden['exact']}/{golden['samples']} bit-exact"})
    return rows


def _hwgen_report_projects(run_dir: Path) -> list[dict]:
    report = _json(run_dir / "hwgen" / "report.json")
    return report.get("projects", []) if report else []


def layer_rows(run_dir: Path) -> list[dict]:
    """Neurons and parameters per layer: before pruning, kept by pruning, after simplify (counted)."""
    sparsity = _json(run_dir / "train" / "sparsity.json")
    simplify = _json(run_dir / "simplify" / "summary.json")
    after = {row["layer"]: row for row in (simplify or {}).get("layers", [])}
    rows = []
    for layer in (sparsity or {}).get("layers", []):
        s = after.get(layer["name"], {})
        rows.append({"layer": layer["name"], "type": layer["type"], "neurons": layer["neurons"],
                     "neurons_remaining": layer["neurons_remaining"], "neurons_after": s.get("out_after"),
                     "parameters": layer["parameters"], "parameters_nonzero": layer["parameters_remaining"],
                     "parameters_after": s.get("params_after"), "macs": layer["macs"], "macs_after": s.get("macs_after")})
    return rows


def resource_rows(run_dir: Path) -> list[dict]:
    """Each hwgen project's fit report: totals against the device and the budget."""
    from potatura.bench.targets import hwgen_projects

    rows = []
    for p in hwgen_projects(run_dir):
        fit = _json(Path(p["path"]) / "fit_report.json")
        if not fit:
            continue
        rows.append({"board": p["board"], "backend": p["backend"], "part": fit.get("part"), "fits": fit.get("fits"),
                     "figures": fit.get("figures", "estimated"), "clock_mhz": fit.get("clock_mhz"),
                     "totals": fit.get("totals", {}), "device": fit.get("device", {}), "budget": fit.get("budget", {}),
                     "utilization": fit.get("utilization", {}), "layers": fit.get("layers", [])})
    return rows


def cycle_reports(run_dir: Path, results: list[TargetResult]) -> list[dict]:
    """Per-layer cycles and FIFO occupancy: the sim stage's reports when present, else the cycle
    reports the bench's simulated targets got from potatura.sim.api. [{source, report}]."""
    out = []
    sim = run_dir / "sim"
    if sim.is_dir():
        for path in sorted(sim.rglob("*.json")):
            data = _json(path)
            if isinstance(data, dict):
                found = data if "per_layer" in data else data.get("cycles") if isinstance(data.get("cycles"), dict) else None
                if found and "per_layer" in found:
                    out.append({"source": f"sim stage: {path.relative_to(run_dir)}", "report": found})
    if not out:
        for r in results:
            if r.kind == "simulated" and isinstance(r.details.get("cycles"), dict):
                out.append({"source": f"bench: {r.name} (potatura.sim.api, batch 1)", "report": r.details["cycles"]})
    return out


def stage_headlines(run_dir: Path) -> list[tuple[str, str]]:
    """Each completed stage's headline line (the stage's own summary of its outputs)."""
    from potatura.flow import available_stages

    manifest = _json(run_dir / "manifest.json") or {}
    lines = []
    for name, stage in available_stages().items():
        if manifest.get("stages", {}).get(name, {}).get("status") != "done" or stage.headline is None:
            continue
        try:
            line = stage.headline(run_dir / name)
        except (KeyError, ValueError, TypeError) as exc:  # a report format this version does not know
            line = f"(headline unavailable: {type(exc).__name__}: {exc})"
        if line:
            lines.append((name, line))
    return lines


def collect(run_dir: Path, bench_dir: Optional[Path] = None) -> dict:
    """Every section of the report, as data (what report.html shows)."""
    run_dir = Path(run_dir)
    latency = load_latency(run_dir, bench_dir)
    results = latency["results"] if latency else []
    return {
        "run_dir": str(run_dir),
        "name": run_dir.name,
        "latency": latency,
        "summary": latency_summary(results) if results else None,
        "goal": goal_check(results) if latency else [],
        "accuracy": accuracy_rows(run_dir),
        "layers": layer_rows(run_dir),
        "resources": resource_rows(run_dir),
        "cycles": cycle_reports(run_dir, results),
        "headlines": stage_headlines(run_dir),
        "train_metrics": _json(run_dir / "train" / "metrics.json") or [],
        "curves_png": run_dir / "train" / "curves.png",
    }


# -- plots ----------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_latency(results: list[TargetResult]) -> Optional[str]:
    rows = [r for r in results if r.single_stream is not None]
    if not rows:
        return None
    rows.sort(key=lambda r: r.single_stream.p50_s)
    fig = _figure(8, 0.45 * len(rows) + 1.4)
    ax = fig.add_subplot()
    y = range(len(rows))
    p50 = [r.single_stream.p50_s * 1e6 for r in rows]
    err = [[0] * len(rows), [(r.single_stream.p99_s - r.single_stream.p50_s) * 1e6 for r in rows]]
    ax.barh(list(y), p50, xerr=err, color=[KIND_COLORS[r.kind] for r in rows], capsize=3,
            hatch=None, edgecolor="black", linewidth=0.4)
    ax.set_yticks(list(y), [f"{r.name} [{r.kind}]" for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency, microseconds (bar: p50, whisker: p99)")
    for kind, color in KIND_COLORS.items():
        if any(r.kind == kind for r in rows):
            ax.barh([0], [0], color=color, label=kind)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3, which="both")
    return _png(fig)


def plot_throughput(results: list[TargetResult]) -> Optional[str]:
    rows = [r for r in results if len(r.points) > 1]
    if not rows:
        return None
    fig = _figure(8, 4)
    ax = fig.add_subplot()
    for r in rows:
        pts = sorted(r.points, key=lambda p: p.batch)
        ax.plot([p.batch for p in pts], [p.throughput_per_s for p in pts], marker="o",
                linestyle="--" if r.kind != "measured" else "-", label=f"{r.name} [{r.kind}]")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples per second")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_accuracy(rows: list[dict]) -> Optional[str]:
    rows = [r for r in rows if r.get("accuracy") is not None]
    if not rows:
        return None
    fig = _figure(8, 0.4 * len(rows) + 1.2)
    ax = fig.add_subplot()
    labels = [f"{r['stage']}: {r['model']} ({r['split']})" for r in rows]
    ax.barh(range(len(rows)), [100 * r["accuracy"] for r in rows],
            color=[KIND_COLORS.get(r["how"], "#1f77b4") for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    low = min(100 * r["accuracy"] for r in rows)
    ax.set_xlim(max(0.0, low - 10), 100.5)
    ax.set_xlabel("accuracy / agreement, %")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_layers(rows: list[dict]) -> Optional[str]:
    if not rows:
        return None
    import numpy as np

    fig = _figure(10, 3.6)
    names = [r["layer"] for r in rows]
    x = np.arange(len(rows))
    for i, (title, keys) in enumerate((("neurons (output channels / units)", ("neurons", "neurons_remaining", "neurons_after")),
                                       ("parameters", ("parameters", "parameters_nonzero", "parameters_after")))):
        ax = fig.add_subplot(1, 2, i + 1)
        width = 0.27
        for j, (key, label) in enumerate(zip(keys, ("before pruning", "kept by pruning", "after simplify"))):
            ax.bar(x + (j - 1) * width, [r[key] or 0 for r in rows], width, label=label)
        ax.set_xticks(x, names, fontsize=8)
        ax.set_title(title, fontsize=9)
        if i == 1:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_resources(rows: list[dict]) -> Optional[str]:
    rows = [r for r in rows if r["device"]]
    if not rows:
        return None
    import numpy as np

    keys = [k for k in ("lut", "ff", "dsp", "bram18", "uram") if any(r["device"].get(k) for r in rows)]
    fig = _figure(8, 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    width = 0.8 / len(rows)
    for j, r in enumerate(rows):
        used = [100 * r["totals"].get(k, 0) / r["device"][k] if r["device"].get(k) else 0 for k in keys]
        ax.bar(x + j * width - 0.4 + width / 2, used, width, label=f"{r['board']}/{r['backend']} ({r['figures']})")
    budget = [100 * rows[0]["budget"].get(k, 0) / rows[0]["device"][k] if rows[0]["device"].get(k) else 0 for k in keys]
    ax.scatter(x, budget, marker="_", s=600, color="red", label="budget (max utilization)", zorder=3)
    ax.set_xticks(x, [k.upper() for k in keys])
    ax.set_ylabel("% of the device")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_cycles(report: dict) -> Optional[str]:
    layers = report.get("per_layer") or []
    if not layers:
        return None
    import numpy as np

    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    width = 0.27
    for j, key in enumerate(("latency", "ii", "stall_cycles")):
        ax.bar(x + (j - 1) * width, [float(layer.get(key) or 0) for layer in layers], width, label=key)
    ax.set_xticks(x, [str(layer.get("name")) for layer in layers], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("cycles (simulated)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_training(metrics: list[dict]) -> Optional[str]:
    if not metrics:
        return None
    fig = _figure(10, 3.4)
    epochs = [m["epoch"] for m in metrics]
    panels = (("loss", ("train_loss", "val_loss", "test_loss")),
              ("accuracy", ("train_accuracy", "val_accuracy", "test_accuracy")),
              ("remaining %", ("remaining_parameters_pct", "remaining_neurons_pct")))
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k in keys:
            ys = [m.get(k) for m in metrics]
            if any(y is not None for y in ys):
                ax.plot(epochs, [float("nan") if y is None else y for y in ys], marker=".", label=k)
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


# -- HTML -----------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.kind-measured { color: #1f77b4; } .kind-emulated { color: #ff7f0e; } .kind-simulated { color: #2ca02c; }
.note { color: #555; font-size: 0.85em; } .met { color: #2a2; } .missed { color: #c22; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _us(seconds: Optional[float]) -> str:
    """Microseconds: two decimals below 10 us (FPGA figures), one above."""
    if seconds is None:
        return "-"
    us = seconds * 1e6
    return f"{us:,.2f}" if us < 10 else f"{us:,.1f}"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _table(headers: list[str], rows: list[list[str]], numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: Optional[str], alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{png}">' if png else ""


def _missing(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def render_html(data: dict) -> str:
    latency = data["latency"]
    results: list[TargetResult] = latency["results"] if latency else []
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>potatura run "
             f"{_e(data['name'])}</title><style>{CSS}</style></head><body>",
             f"<h1>potatura run <code>{_e(data['name'])}</code></h1>",
             f"<p class=\"note\">{_e(data['run_dir'])}; report built "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. Labels: <b>measured</b> (wall clock), "
             "<b>emulated</b> (emulated board), <b>simulated</b> (potatura's simulator or C simulation), "
             "<b>estimated</b> (hwgen's resource model), <b>counted</b> (from the weights).</p>"]

    parts.append('<h2 id="summary">Stages</h2>')
    if data["headlines"]:
        parts.append("<ul>" + "".join(f"<li><b>{_e(n)}</b>: {_e(line)}</li>" for n, line in data["headlines"])
                     + "</ul>")
    else:
        parts.append(_missing("no completed stage in this run directory"))

    parts.append('<h2 id="accuracy">Accuracy through the stages</h2>')
    if data["accuracy"]:
        parts.append(_img(plot_accuracy(data["accuracy"]), "accuracy per stage"))
        parts.append(_table(["stage", "model", "split", "accuracy / agreement", "how", "note"],
                            [[_e(r["stage"]), _e(r["model"]), _e(r["split"]),
                              "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%", _e(r["how"]),
                              _e(r.get("note", ""))] for r in data["accuracy"]], numeric=[3]))
    else:
        parts.append(_missing("no stage summaries with accuracies"))

    parts.append('<h2 id="layers">Neurons and parameters per layer</h2>')
    if data["layers"]:
        parts.append(_img(plot_layers(data["layers"]), "neurons and parameters per layer"))
        parts.append(_table(["layer", "type", "neurons", "kept", "after simplify", "parameters", "nonzero",
                             "after simplify", "MACs", "MACs after"],
                            [[_e(r["layer"]), _e(r["type"]), _num(r["neurons"]), _num(r["neurons_remaining"]),
                              _num(r["neurons_after"]), _num(r["parameters"]), _num(r["parameters_nonzero"]),
                              _num(r["parameters_after"]), _num(r["macs"]), _num(r["macs_after"])]
                             for r in data["layers"]], numeric=range(2, 10)))
        parts.append(_missing("counted from the weights; MACs per input sample"))
    else:
        parts.append(_missing("no train/sparsity.json in this run"))

    parts.append('<h2 id="resources">Resources against the board</h2>')
    if data["resources"]:
        parts.append(_img(plot_resources(data["resources"]), "resource utilization"))
        rows = []
        for r in data["resources"]:
            for k in ("lut", "ff", "dsp", "bram18", "uram"):
                if k in r["device"] or k in r["totals"]:
                    rows.append([_e(f"{r['board']}/{r['backend']}"), _e(k.upper()), _num(r["totals"].get(k)),
                                 _num(r["budget"].get(k)), _num(r["device"].get(k)),
                                 f"{100 * r['totals'].get(k, 0) / r['device'][k]:.1f}%" if r["device"].get(k) else "-",
                                 "yes" if r["fits"] else "no", _e(r["figures"])])
        parts.append(_table(["project", "resource", "used", "budget", "device", "utilization", "fits", "figures"],
                            rows, numeric=[2, 3, 4, 5]))
    else:
        parts.append(_missing("no hwgen fit reports in this run (the hwgen stage did not run)"))

    parts.append('<h2 id="latency">Latency</h2>')
    if latency:
        proto = latency.get("protocol", {})
        machine = latency.get("machine", {})
        parts.append(f"<p class=\"note\">Protocol: {_e(proto.get('description', ''))} Warm-up "
                     f"{_e(proto.get('warmup'))}, up to {_e(proto.get('iterations'))} timed runs per point "
                     f"(at most {_e(proto.get('max_seconds'))} s), batch sizes {_e(proto.get('batch_sizes'))}, "
                     f"torch threads {_e(proto.get('threads'))}. Machine: {_e(machine.get('processor') or machine.get('machine'))}, "
                     f"{_e(machine.get('cpu_count'))} cores, {_e(machine.get('platform'))}, load average "
                     f"{_e(machine.get('load_average'))} at the start, OMP_NUM_THREADS={_e(machine.get('OMP_NUM_THREADS'))}.</p>")
        if results:
            summary = data["summary"] or {}
            spd = summary.get("speedup_vs_baseline_batch1", {})
            parts.append(_img(plot_latency(results), "batch-1 latency per target"))
            rows = []
            for r in results:
                s = r.single_stream
                best = r.best_throughput()
                rows.append([_e(r.name), f'<span class="kind-{_e(r.kind)}">{_e(r.kind)}</span>', _e(r.device),
                             _num(r.threads), _us(s.p50_s if s else None), _us(s.p90_s if s else None),
                             _us(s.p99_s if s else None), _us(s.mean_s if s else None), _num(s.runs if s else None),
                             f"{best.throughput_per_s:,.0f} @ {best.batch}" if best else "-",
                             f"{spd[r.name]:.3g}x" if spd.get(r.name) else "-"])
            parts.append(_table(["target", "kind", "device", "threads", "p50 us", "p90 us", "p99 us", "mean us",
                                 "runs", "best samples/s @ batch", f"speedup vs {summary.get('baseline')} batch 1"],
                                rows, numeric=range(3, 11)))
            parts.append(_img(plot_throughput(results), "offline throughput per batch size"))
            cpu = summary.get("fastest_cpu_batch1")
            if cpu:
                parts.append(f"<p>Fastest CPU batch-1 latency (measured): {_e(cpu['name'])}, "
                             f"{_us(cpu['p50_s'])} us p50, {_e(cpu['threads'])} thread(s).</p>")
        else:
            parts.append(_missing("no target was measured"))
        if latency.get("onnx_exports"):
            parts.append(_table(["ONNX export", "samples", "max |onnxruntime - torch|", "argmax agreement"],
                                [[_e(k), _num(v["samples"]), f"{v['max_abs_difference_vs_torch']:.3g}",
                                  f"{v['argmax_agreement']:.4f}"] for k, v in latency["onnx_exports"].items()],
                                numeric=[1, 2, 3]))
        if latency["skipped"]:
            parts.append("<h3>Targets not measured</h3><ul>" + "".join(
                f"<li><b>{_e(s.name)}</b>: {_e(s.reason)}</li>" for s in latency["skipped"]) + "</ul>")
        parts.append("<h3>Goal: the pruned accelerator against the CPU</h3>")
        parts.append(_table(["target", "check", "value us", "reference us", "result"],
                            [[_e(g["target"]), _e(g["check"]), _us(g.get("value_s")), _us(g.get("reference_s")),
                              ('<span class="met">met</span>' if g["met"] else '<span class="missed">missed</span>')
                              if g["met"] is not None else _e("not evaluated: " + g.get("why", ""))]
                             for g in data["goal"]], numeric=[2, 3]))
    else:
        parts.append(_missing("no bench/latency.json: run the bench stage (`potatura bench FLOW`)"))

    parts.append('<h2 id="cycles">Cycles and FIFOs per layer</h2>')
    if data["cycles"]:
        for entry in data["cycles"]:
            rep = entry["report"]
            parts.append(f"<h3>{_e(entry['source'])}</h3><p class=\"note\">simulated, batch {_num(rep.get('batch'))}: latency "
                         f"{_num(rep.get('latency_cycles'))} cycles, interval {_num(rep.get('interval_cycles'))} "
                         f"cycles at {_num(rep.get('clock_mhz'))} MHz</p>")
            parts.append(_img(plot_cycles(rep), f"cycles per layer, {entry['source']}"))
            layers = rep.get("per_layer") or []
            if layers:
                parts.append(_table(["layer", "op", "II", "latency", "trip count", "stall cycles"],
                                    [[_e(layer.get("name")), _e(layer.get("op")), _num(layer.get("ii")),
                                      _num(layer.get("latency")), _num(layer.get("trip_count")),
                                      _num(layer.get("stall_cycles"))] for layer in layers], numeric=[2, 3, 4, 5]))
            fifos = rep.get("fifos") or []
            if fifos:
                parts.append(_table(["FIFO", "depth", "max occupancy", "sized depth"],
                                    [[_e(f.get("name")), _num(f.get("depth")), _num(f.get("max_occupancy")),
                                      _num(f.get("sized_depth"))] for f in fifos], numeric=[1, 2, 3]))
            if rep.get("dma"):
                parts.append(_table(["DMA", "value"], [[_e(k), _num(v)] for k, v in rep["dma"].items()], numeric=[1]))
    else:
        why = next((s.reason for s in (latency or {}).get("skipped", []) if s.name == "simulated"), None)
        parts.append(_missing("no cycle report: " + (why or "the simulator has not run on this run's projects")))

    parts.append('<h2 id="training">Training curves</h2>')
    png = plot_training(data["train_metrics"])
    parts.append(_img(png, "training curves") if png else _missing("no train/metrics.json in this run"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: Path, out: Optional[Path] = None, bench_dir: Optional[Path] = None) -> Path:
    """Build report.html from the run directory (default: <run>/bench/report.html), with the
    latencies of bench_dir/latency.json (default <run>/bench)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "bench" / "report.html"
    return write_text(out, render_html(collect(run_dir, bench_dir)))


# -- terminal -------------------------------------------------------------------------------------


def terminal_table(latency: dict):
    """A rich Table of the batch-1 latencies, best throughput and speedups."""
    from rich.table import Table

    results: list[TargetResult] = latency["results"]
    summary = latency_summary(results) if results else {}
    spd = summary.get("speedup_vs_baseline_batch1", {})
    proto = latency.get("protocol", {})
    table = Table(title=f"latency, batch 1 (threads {proto.get('threads')} unless the row says; "
                        f"{latency.get('machine', {}).get('cpu_count')} cores)")
    for col, justify in (("target", "left"), ("kind", "left"), ("threads", "right"), ("p50 us", "right"),
                         ("p99 us", "right"), ("best samples/s @ batch", "right"),
                         (f"vs {summary.get('baseline')}", "right")):
        table.add_column(col, justify=justify)
    for r in results:
        s = r.single_stream
        best = r.best_throughput()
        table.add_row(r.name, r.kind, "-" if r.threads is None else str(r.threads), _us(s.p50_s if s else None),
                      _us(s.p99_s if s else None), f"{best.throughput_per_s:,.0f} @ {best.batch}" if best else "-",
                      f"{spd[r.name]:.3g}x" if spd.get(r.name) else "-")
    return table

"""Sweep results: sweep.json and sweep.csv after every trial; Pareto fronts, plots and sweep.md at the end."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional

from potatura.artifacts import atomic_path, write_json, write_text
from potatura.sweep.config import METRICS, LoadedSweep
from potatura.sweep.pareto import pareto_front

_SHOWN = ("accuracy", "float_accuracy", "latency_cycles", "latency_us", "interval_cycles", "lut_fraction",
          "ff_fraction", "dsp_fraction", "bram18_fraction", "max_fraction", "weight_bytes")


def trial_rows(loaded: LoadedSweep, study) -> list[dict]:
    """One dict per trial of the study, by number."""
    from potatura.sweep.study import flow_params

    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        result = t.user_attrs.get("result") or {}
        stages = result.get("stages") or {}
        rows.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "params": flow_params(loaded, t.params) if t.params else {},
            "values": list(t.values) if t.values else None,
            "feasible": all(v <= 0 for v in t.user_attrs.get("constraints", [0.0])),
            "reason": t.user_attrs.get("reason"),
            "metrics": result.get("metrics") or {},
            "sources": result.get("sources") or {},
            "stages": stages,
            "cache_hits": sorted(s for s, r in stages.items() if r.get("cached")),
            "seconds": result.get("seconds"),
            "worker": result.get("worker"),
            "run_dir": result.get("run_dir"),
        })
    return rows


def summarize(rows: list[dict], wall_seconds: Optional[float]) -> dict:
    executed: dict[str, int] = {}
    hits: dict[str, int] = {}
    saved = 0.0
    for r in rows:
        for stage, rec in r["stages"].items():
            if rec.get("status") != "done":
                continue
            if rec.get("cached"):
                hits[stage] = hits.get(stage, 0) + 1
                saved += rec.get("source_seconds") or 0.0
            else:
                executed[stage] = executed.get(stage, 0) + 1
    done = [r for r in rows if r["state"] in ("complete", "fail")]
    trial_seconds = sum(r["seconds"] or 0.0 for r in done)
    out = {
        "trials": len(rows),
        "complete": sum(r["state"] == "complete" for r in rows),
        "failed": sum(r["state"] == "fail" for r in rows),
        "running": sum(r["state"] == "running" for r in rows),
        "stage_executions": executed,
        "stage_cache_hits": hits,
        "seconds_saved_by_cache": round(saved, 3),
        "trial_seconds_total": round(trial_seconds, 3),
    }
    if wall_seconds:
        out["driver_wall_seconds"] = round(wall_seconds, 3)
    return out


def fronts(loaded: LoadedSweep, rows: list[dict]) -> dict[str, list[int]]:
    """Trial numbers on the Pareto front: over all feasible complete trials, and per board."""
    objectives = loaded.config.objective_list()
    directions = [o.resolved_direction for o in objectives]
    good = [r for r in rows if r["state"] == "complete" and r["feasible"] and r["values"]]
    groups: dict[str, list[dict]] = {"all": good}
    boards = sorted({r["metrics"].get("board") for r in good if r["metrics"].get("board")})
    if len(boards) > 1:
        for b in boards:
            groups[b] = [r for r in good if r["metrics"].get("board") == b]
    return {g: [members[i]["number"] for i in pareto_front([m["values"] for m in members], directions)]
            for g, members in groups.items()}


def _csv(loaded: LoadedSweep, rows: list[dict], on_front: set[int]) -> str:
    params = list(loaded.config.space)
    metric_cols = [m for m in _SHOWN if any(m in r["metrics"] for r in rows)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "state", *params, "board", *metric_cols, "pareto", "cache_hits", "seconds", "reason"])
    for r in rows:
        m = r["metrics"]
        w.writerow([r["number"], r["state"], *[_cell(r["params"].get(p)) for p in params], m.get("board", ""),
                    *[_cell(m.get(c)) for c in metric_cols], int(r["number"] in on_front),
                    " ".join(r["cache_hits"]), _cell(r["seconds"]), r["reason"] or ""])
    return buf.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def write_results(loaded: LoadedSweep, study, wall_seconds: Optional[float] = None, final: bool = True):
    from potatura.sweep.study import SweepOutcome

    sweep_dir = loaded.sweep_dir
    rows = trial_rows(loaded, study)
    front = fronts(loaded, rows)
    summary = summarize(rows, wall_seconds)
    objectives = [{"metric": o.metric, "direction": o.resolved_direction, "measured": METRICS[o.metric][1]}
                  for o in loaded.config.objective_list()]
    doc = {"sweep": loaded.config.name, "objectives": objectives, "n_trials": loaded.config.n_trials,
           "sampler": loaded.config.sampler.model_dump(), "summary": summary, "pareto": front, "trials": rows}
    write_json(sweep_dir / "sweep.json", doc)
    write_text(sweep_dir / "sweep.csv", _csv(loaded, rows, set(front.get("all", []))))
    if final:
        plots = plot_fronts(loaded, rows, front, sweep_dir)
        write_text(sweep_dir / "sweep.md", markdown(loaded, rows, front, summary, plots))
    return SweepOutcome(sweep_dir, rows, summary, front)


def _axes_metrics(loaded: LoadedSweep, rows: list[dict]) -> tuple[str, str, Optional[str]]:
    """x, y and colour metrics of the plots: the objectives first, then accuracy/latency/resources."""
    present = [m for m in _SHOWN if any(r["metrics"].get(m) is not None for r in rows)]
    order = [o.metric for o in loaded.config.objective_list()] + [m for m in ("latency_us", "accuracy", "max_fraction",
                                                                               "lut_fraction") if m in present]
    order = list(dict.fromkeys(m for m in order if m in present))
    if len(order) < 2:
        order += [m for m in present if m not in order]
    x, y = (order + [None, None])[:2]
    colour = order[2] if len(order) > 2 else None
    return x, y, colour


def plot_fronts(loaded: LoadedSweep, rows: list[dict], front: dict[str, list[int]], sweep_dir: Path) -> list[str]:
    """One PNG per board (or one for all): y vs x, colour a third metric, the front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if r["state"] == "complete"]
    x, y, colour = _axes_metrics(loaded, good)
    if not good or x is None or y is None:
        return []
    groups = [g for g in front if g != "all"] or ["all"]
    names = []
    for g in groups:
        members = [r for r in good if g == "all" or r["metrics"].get("board") == g]
        pts = [r for r in members if r["metrics"].get(x) is not None and r["metrics"].get(y) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
        c = [r["metrics"].get(colour) for r in pts] if colour else None
        if c is not None and any(v is None for v in c):
            c = None
        sc = ax.scatter([r["metrics"][x] for r in pts], [r["metrics"][y] for r in pts], c=c,
                        cmap="viridis" if c is not None else None, s=36, edgecolors="none", alpha=0.85)
        if c is not None:
            fig.colorbar(sc, ax=ax, label=colour)
        on = set(front.get(g, front.get("all", [])))
        fp = sorted((r for r in pts if r["number"] in on), key=lambda r: r["metrics"][x])
        if fp:
            # With more than two objectives the front is not a curve in this plane: circles only.
            line = "-" if len(loaded.config.objectives) == 2 else "none"
            ax.plot([r["metrics"][x] for r in fp], [r["metrics"][y] for r in fp], color="r", marker="o", ls=line,
                    mfc="none", ms=9, lw=1, label="Pareto front")
            labels: dict[tuple, list[str]] = {}  # trials at the same point share one label
            for r in fp:
                labels.setdefault((r["metrics"][x], r["metrics"][y]), []).append(str(r["number"]))
            for xy, numbers in labels.items():
                ax.annotate(",".join(numbers), xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"sweep {loaded.config.name}: {g if g != 'all' else 'all trials'} ({len(pts)} trials)")
        ax.grid(alpha=0.3)
        name = f"front_{g}.png"
        with atomic_path(sweep_dir / name) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    return names


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def markdown(loaded: LoadedSweep, rows: list[dict], front: dict[str, list[int]], summary: dict,
             plots: list[str]) -> str:
    objectives = loaded.config.objective_list()
    lines = [f"# sweep {loaded.config.name}", "",
             f"{summary['trials']} trials: {summary['complete']} complete, {summary['failed']} failed; sampler "
             f"{loaded.config.sampler.name}; objectives "
             + ", ".join(f"{o.metric} ({o.resolved_direction})" for o in objectives), "",
             "Stage cache: " + (", ".join(f"{s} {summary['stage_executions'].get(s, 0)} run / "
                                          f"{summary['stage_cache_hits'].get(s, 0)} reused"
                                          for s in dict.fromkeys([*summary["stage_executions"], *summary["stage_cache_hits"]]))
                                or "no stage ran")
             + f"; {summary['seconds_saved_by_cache']:.1f} s of stage time reused.", ""]
    params = list(loaded.config.space)
    by_number = {r["number"]: r for r in rows}
    for g, numbers in front.items():
        lines += [f"## Pareto front: {g}", "",
                  "| trials | " + " | ".join(params) + " | " + " | ".join(o.metric for o in objectives) + " |",
                  "|" + "---|" * (1 + len(params) + len(objectives))]
        # Trials with the same parameters (a sampler may propose a point twice) share one row.
        same: dict[str, list[int]] = {}
        for n in sorted(numbers):
            same.setdefault(repr([(p, by_number[n]["params"].get(p)) for p in params]), []).append(n)
        for group in sorted(same.values(), key=lambda ns: by_number[ns[0]]["values"][0]):
            r = by_number[group[0]]
            lines.append(f"| {', '.join(map(str, group))} | " + " | ".join(_fmt(r["params"].get(p)) for p in params)
                         + " | " + " | ".join(_fmt(v) for v in r["values"]) + " |")
        lines.append("")
    sources = {}
    for r in rows:
        for k, v in r["sources"].items():
            sources.setdefault(k, v)
    if sources:
        lines += ["How each figure was obtained: " + "; ".join(f"{k}: {v}" for k, v in sources.items()), ""]
    failed = [r for r in rows if r["state"] == "fail"]
    if failed:
        lines += ["## Failed trials", ""] + [f"- trial {r['number']}: {r['reason']}" for r in failed] + [""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"

"""`potatura sweep SWEEP.yaml`: design-space exploration over flow keys."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def sweep(
    sweep_file: Path = typer.Argument(..., help="sweep file (YAML): base flow, space, objectives, n_trials"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed or extended sweep; finished trials are kept"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 "
                                            "[default: a LocalCluster on this machine]"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="LocalCluster workers, one thread each "
                                          "[default: the sweep file's workers]"),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="override the sweep file's n_trials"),
) -> None:
    """Explore flow settings with Optuna; trials run as Dask tasks, each a normal flow run.

    Example: potatura sweep flows/sweep-digits.yaml

    Example: potatura sweep flows/sweep-digits.yaml --resume --scheduler tcp://10.0.0.5:8786
    """
    from potatura.cli_common import console
    from potatura.sweep.config import load_sweep
    from potatura.sweep.study import run_sweep

    loaded = load_sweep(sweep_file)
    if n_trials is not None:
        loaded.config.n_trials = n_trials
    console.print(f"sweep {loaded.config.name}: {loaded.config.n_trials} trials in {loaded.sweep_dir} "
                  f"on {scheduler or f'a LocalCluster of {workers or loaded.config.workers} workers'}")

    def progress(result: dict) -> None:
        m = result.get("metrics") or {}
        sources = result.get("sources") or {}

        def labelled(metric: str) -> str:
            # the first word of its source: measured, simulated, estimated, computed
            kind = (sources.get(metric) or "").split(" ")[0]
            return f"{metric} {m[metric]:.4g}" + (f" ({kind})" if kind else "")

        shown = ", ".join(labelled(o.metric) for o in loaded.config.objective_list()
                          if isinstance(m.get(o.metric), (int, float)))
        cached = [s for s, r in (result.get("stages") or {}).items() if r.get("cached")]
        console.print(f"trial {result['number']}: {result['status']}"
                      + (f" ({result['reason']})" if result.get("reason") else "")
                      + (f": {shown}" if shown else "") + (f"; reused {', '.join(cached)}" if cached else ""),
                      highlight=False, markup=False)

    outcome = run_sweep(loaded, resume=resume, scheduler=scheduler, workers=workers, on_result=progress)
    s = outcome.summary
    console.print(f"{s['complete']} complete, {s['failed']} failed; Pareto front: trials "
                  f"{', '.join(map(str, outcome.fronts.get('all', []))) or 'none'}; stage runs "
                  f"{s['stage_executions']}, reused {s['stage_cache_hits']}", highlight=False, markup=False)
    console.print(f"report: {outcome.sweep_dir / 'sweep.md'}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)

"""What the stage commands share: the consoles, --set, loading a flow file, running stages.

A stage's potatura/<pkg>/cli.py imports these from here (not from potatura.cli, the root
command), so a stage never depends on the command that lists it. Importing this module costs
typer and rich only: no stage, no torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

# Piped output (CI logs, files) is not cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

SetOption = typer.Option(None, "--set", "-s", help="override a flow field, e.g. --set train.epochs=3 (repeatable)")


def quiet() -> bool:
    """--quiet (or POTATURA_QUIET=1): no progress bars and no log lines on the terminal; the
    result lines and errors are still printed, and run.log gets everything."""
    return os.environ.get("POTATURA_QUIET", "") not in ("", "0")


def load_flow(flow: Optional[Path], sets: Optional[List[str]], name: Optional[str] = None,
              runs_dir: Optional[Path] = None):
    """The validated FlowConfig of `flow` (None: the embedded demo) with --set overrides."""
    from potatura.config import load_config, parse_set_option

    overrides = parse_set_option(sets or [])
    if name is not None:
        overrides["name"] = name
    if runs_dir is not None:
        overrides["runs_dir"] = str(runs_dir)
    return load_config(flow, overrides)


def report(cfg, outcomes) -> None:
    """The run table and one headline per stage that ran or was cached."""
    from rich.table import Table

    from potatura.flow import load_stage

    table = Table(title=f"run {cfg.name}", show_lines=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("outputs")
    for o in outcomes:
        table.add_row(o.name, o.status, f"{o.seconds:.1f}", ", ".join(o.outputs))
    if not quiet():
        console.print(table)
        if any(o.name == "bench" for o in outcomes):
            # The latency comparison is what a run ends on: show it, not only the report's path.
            from potatura.bench.cli import print_latency_table

            print_latency_table(console, cfg.run_dir())
    for o in outcomes:
        stage = load_stage(o.name)
        line = stage.headline(cfg.run_dir() / o.name) if stage.headline else None
        if line:
            console.print(f"{o.name}: {line}", highlight=False)
    console.print(f"run directory: {cfg.run_dir()}")


def run_stages(cfg, from_stage=None, to_stage=None, only=None, force=False) -> None:
    """Run stages of `cfg` (all, a --from/--to range, or `only`) and print the report."""
    from potatura.flow import run_flow

    outcomes = run_flow(cfg, from_stage=from_stage, to_stage=to_stage, only=only, force=force,
                        console=None if quiet() else console, show_progress=console.is_terminal and not quiet())
    report(cfg, outcomes)


def apply_threads_for(model) -> dict:
    """The thread setting for a command working on one model file (not a flow run)."""
    from potatura import threads

    return threads.apply(threads.choose(parameters=sum(p.numel() for p in model.parameters())))


# The names stage cli.py files used when these lived in potatura/cli.py.
_load = load_flow
_run = run_stages
_report = report

"""`potatura bench` (the bench stage of a flow) and `potatura report RUN_DIR` (rebuild the report)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def print_latency_table(console, run_dir: Path) -> None:
    from potatura.bench.report import load_latency, terminal_table

    latency = load_latency(run_dir)
    if latency is None:
        return
    console.print(terminal_table(latency))
    for s in latency["skipped"]:
        console.print(f"  not measured: {s.name}: {s.reason}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="override a flow field, e.g. "
                                                 "--set bench.iterations=1000 (repeatable)"),
    ) -> None:
        """Latency of every target under one protocol (CPU torch and onnxruntime, GPU, FPGA simulated /
        emulated / board), then the run report bench/report.html.

        Examples:

        potatura bench flows/demo.yaml --set bench.iterations=1000 --set bench.threads=2

        potatura bench flows/demo.yaml --set bench.targets=[torch,onnxruntime]
        """
        from potatura.cli import _load, _run, console

        cfg = _load(flow, sets)
        _run(cfg, only=["bench"], force=True)  # prints the run table and the stage's headline
        print_latency_table(console, cfg.run_dir())

    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="a run directory, e.g. runs/demo"),
        out: Optional[Path] = typer.Option(None, "--out", help="where to write the HTML (default "
                                           "RUN_DIR/bench/report.html)"),
    ) -> None:
        """Rebuild the run report (report.html) from a run directory, without measuring anything.

        Example: potatura report runs/demo
        """
        from potatura.bench.report import write_report
        from potatura.cli import console
        from potatura.errors import DataError

        if not (run_dir / "manifest.json").is_file():
            raise DataError(f"{run_dir}: not a run directory (no manifest.json)")
        path = write_report(run_dir, out)
        print_latency_table(console, run_dir)
        console.print(f"report: {path}", highlight=False)

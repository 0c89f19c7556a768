"""`potatura sim`: the sim stage of a flow, or one hwgen project directory through the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from potatura.cli_common import SetOption, console, load_flow, run_stages


def register(app: typer.Typer) -> None:
    @app.command("sim")
    def sim(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: Optional[List[str]] = SetOption,
        project: Optional[Path] = typer.Option(None, "--project", help="simulate this hwgen project directory "
                                               "(holding design.json) instead of the flow's hwgen output"),
        golden: Optional[Path] = typer.Option(None, "--golden", help="with --project: golden.npz to check the "
                                              "outputs against (bit-exact)"),
        batch: Optional[int] = typer.Option(None, "--batch", help="samples streamed back to back in the cycle "
                                            "report (default: sim.batch of the flow)"),
        out: Optional[Path] = typer.Option(None, "--out", help="with --project: write report.json/md here"),
    ) -> None:
        """Cycle-accurate simulation of the generated accelerators: outputs bit-exact, latency, interval, FIFOs.

        Examples:

        potatura sim flows/demo.yaml

        potatura sim --project runs/demo/hwgen/pynq-z2/hls4ml --golden runs/demo/quant/golden.npz --batch 16
        """
        overrides = list(sets or [])
        if batch is not None:
            overrides.append(f"sim.batch={batch}")
        cfg = load_flow(flow, overrides)
        if project is None:
            given = [flag for flag, value in (("--golden", golden), ("--out", out)) if value is not None]
            if given:
                from potatura.errors import ConfigError

                raise ConfigError(f"{', '.join(given)}: only used with --project")
            run_stages(cfg, only=["sim"], force=True)  # prints the stage's headline
            return
        from potatura.artifacts import write_json, write_text
        from potatura.sim.stage import _headline_part, _project_markdown, simulate_project

        result = simulate_project(project, golden, cfg.sim)
        c = result["cycles"]
        line = {"latency_cycles": c["latency_cycles"], "interval_cycles": c["interval_cycles"],
                "clock_mhz": c["clock_mhz"], "latency_seconds": c["latency_seconds"],
                "fifos_sized": sum(1 for f in c["fifos"] if f["sized_depth"] is not None), "outputs": result["outputs"]}
        console.print(f"sim {project}: {_headline_part(line)}", highlight=False)
        if out is not None:
            write_json(out / "report.json", result)
            write_text(out / "report.md", _project_markdown(str(project), result))
            console.print(f"sim: report in {out / 'report.md'}")

"""The `potatura` command: run, demo, boards, and one subcommand per stage.

Stage packages that define `cli.py` with a `register(app)` function add their own commands;
every available stage also gets `potatura <stage> FLOW.yaml`, which runs that stage alone on
an existing run directory.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from potatura import __version__
from potatura.errors import PotaturaError

# Piped output (CI logs, files) is not cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

app = typer.Typer(
    name="potatura",
    help="From a pruned PyTorch model to a verified FPGA accelerator.\n\n"
    "Examples:\n\n"
    "  potatura demo                          # the whole flow on scikit-learn's digits\n\n"
    "  potatura run flows/fashion-lenet5.yaml # a flow file\n\n"
    "  potatura run flow.yaml --from quant    # redo quant and everything after it\n\n"
    "  potatura boards list",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SetOption = typer.Option(None, "--set", "-s", help="override a flow field, e.g. --set train.epochs=3 (repeatable)")


def _load(flow: Optional[Path], sets: Optional[List[str]], name: Optional[str] = None, runs_dir: Optional[Path] = None):
    from potatura.config import load_config, parse_set_option

    overrides = parse_set_option(sets or [])
    if name is not None:
        overrides["name"] = name
    if runs_dir is not None:
        overrides["runs_dir"] = str(runs_dir)
    return load_config(flow, overrides)


def _report(cfg, outcomes) -> None:
    from potatura.flow import available_stages

    table = Table(title=f"run {cfg.name}", show_lines=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("outputs")
    for o in outcomes:
        table.add_row(o.name, o.status, f"{o.seconds:.1f}", ", ".join(o.outputs))
    console.print(table)
    stages = available_stages()
    for o in outcomes:
        stage = stages[o.name]
        line = stage.headline(cfg.run_dir() / o.name) if stage.headline else None
        if line:
            console.print(f"{o.name}: {line}", highlight=False)
    console.print(f"run directory: {cfg.run_dir()}")


def _run(cfg, from_stage=None, to_stage=None, only=None, force=False) -> None:
    from potatura.flow import run_flow

    outcomes = run_flow(cfg, from_stage=from_stage, to_stage=to_stage, only=only, force=force,
                        console=console, show_progress=console.is_terminal)
    _report(cfg, outcomes)


@app.command()
def run(
    flow: Path = typer.Argument(..., help="flow file (YAML)"),
    from_stage: Optional[str] = typer.Option(None, "--from", help="rerun from this stage (earlier ones must be done)"),
    to_stage: Optional[str] = typer.Option(None, "--to", help="stop after this stage"),
    force: bool = typer.Option(False, "--force", help="rerun stages even when their inputs are unchanged"),
    sets: Optional[List[str]] = SetOption,
) -> None:
    """Run a flow file: every stage in order, skipping stages whose inputs did not change.

    Example: potatura run flows/demo.yaml --set train.epochs=5 --to train
    """
    _run(_load(flow, sets), from_stage, to_stage, force=force)


@app.command()
def demo(
    runs_dir: Optional[Path] = typer.Option(None, help="where the run directory goes [default: runs]"),
    name: Optional[str] = typer.Option(None, help="run name [default: demo]"),
    sets: Optional[List[str]] = SetOption,
) -> None:
    """The whole flow on the embedded default: LeNet-5 on scikit-learn's digits (8x8).

    Example: potatura demo --runs-dir /tmp/runs
    """
    _run(_load(None, sets, name=name, runs_dir=runs_dir))


boards_app = typer.Typer(help="The board catalog: parts, resources, clocks, memory, each with its source.",
                         no_args_is_help=True)
app.add_typer(boards_app, name="boards")


@boards_app.command("list")
def boards_list() -> None:
    """List the boards potatura knows. Example: potatura boards list"""
    from potatura.boards.catalog import load_catalog

    table = Table(title="boards")
    for col in ("name", "part", "LUT", "FF", "DSP", "BRAM18", "URAM", "clock MHz", "shell"):
        table.add_column(col)
    for b in load_catalog().values():
        table.add_row(b.name, b.part, f"{b.lut:,}", f"{b.ff:,}", f"{b.dsp:,}", f"{b.bram18:,}", f"{b.uram:,}",
                      f"{b.clock_mhz:g}", b.shell)
    console.print(table)


@boards_app.command("show")
def boards_show(name: str = typer.Argument(..., help="board name, e.g. pynq-z2")) -> None:
    """Every figure of one board with its source. Example: potatura boards show pynq-z2"""
    import yaml

    from potatura.boards.catalog import get_board

    board = get_board(name)
    typer.echo(yaml.safe_dump(board.raw, sort_keys=False, allow_unicode=True))


def _stage_command(stage_name: str, description: str):
    def command(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: Optional[List[str]] = SetOption,
    ) -> None:
        cfg = _load(flow, sets)
        _run(cfg, only=[stage_name], force=True)

    command.__doc__ = (f"Run the {stage_name} stage alone ({description}) in the flow's run directory.\n\n"
                       f"Example: potatura {stage_name} flows/demo.yaml")
    return command


def _register_stages() -> None:
    from potatura.flow import available_stages

    for name, stage in available_stages().items():
        package = stage.run.__module__.rsplit(".", 1)[0]
        try:
            module = importlib.import_module(f"{package}.cli")
        except ModuleNotFoundError:
            module = None
        if module is not None and hasattr(module, "register"):
            module.register(app)
        else:
            app.command(name)(_stage_command(name, stage.description))


_register_stages()


@app.callback(invoke_without_command=True)
def _version(version: bool = typer.Option(False, "--version", help="print the version and exit")) -> None:
    if version:
        console.print(f"potatura {__version__}")
        raise typer.Exit()


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        app(args=argv, prog_name="potatura")  # usage errors: typer prints them and exits 2
    except PotaturaError as exc:
        for line in str(exc).splitlines():
            err_console.print(f"error: {line}", style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""The `potatura` command: run, demo, boards, and one subcommand per stage.

Stage packages that define `cli.py` with a `register(app)` function add their own commands;
every available stage also gets `potatura <stage> FLOW.yaml`, which runs that stage alone on
an existing run directory. Stage commands are loaded by name only when called (LazyStageGroup
says how a stage adds its commands), so `potatura --help` and usage errors import no stage.
Root options: --quiet, --threads N (potatura --threads 2 run flow.yaml).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import List, Optional

import click
import typer
from typer.core import TyperGroup

from potatura import __version__
from potatura.cli_common import (  # noqa: F401  (stage cli.py files written before cli_common)
    SetOption,
    _load,
    _report,
    _run,
    console,
    err_console,
    load_flow,
    run_stages,
)
from potatura.errors import PotaturaError

_PACKAGE_DIR = Path(__file__).resolve().parent

# Stage commands: `potatura <stage>` for each stage whose potatura/<stage>/stage.py exists, in
# flow order (config.STAGE_ORDER; repeated here so listing them imports nothing: a test keeps them equal).
# The short help shown by `potatura --help` is written here for the same reason.
STAGE_COMMANDS = {
    "train": "Train (and prune) the flow's model.",
    "simplify": "Remove pruned neurons exactly (or simplify one model file).",
    "quant": "Quantize with Brevitas, export QONNX, check the integer reference.",
    "hwgen": "Accelerator projects per board, fitted and checked in C simulation.",
    "sim": "Cycle-accurate simulation of the generated accelerator.",
    "deploy": "Deploy the accelerator to a board (or the emulated board).",
    "bench": "Latency of every target under one protocol.",
}
# Further commands a stage package's register(app) adds: command name -> (module, short help).
EXTRA_COMMANDS = {
    "report": ("potatura.bench.cli", "Rebuild the report of a run directory."),
    "sweep": ("potatura.sweep.cli", "Explore flow settings (Optuna trials, each a flow run)."),
    "analyze": ("potatura.train.cli", "PSP-entropy and sharpness of a run's trained model."),
}


def _module_file(module: str) -> Path:
    return _PACKAGE_DIR.parent.joinpath(*module.split(".")).with_suffix(".py")


def _stage_available(name: str) -> bool:
    return _module_file(f"potatura.{name}.stage").is_file()


class LazyStageGroup(TyperGroup):
    """The root command; stage commands are made only when one of them is called (or asked for
    --help), so `potatura --help` and a typo import no stage, torch or hls4ml.

    How a stage adds commands: potatura/<stage>/cli.py defines register(app) and decorates its
    functions with @app.command("<name>") (the stage's own name, plus any other name listed in
    EXTRA_COMMANDS with that module). Without a cli.py, the stage gets the generic
    `potatura <stage> FLOW.yaml`. Shared helpers (console, load_flow, run_stages, SetOption)
    come from potatura.cli_common.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(super().list_commands(ctx)) + list(self._lazy_names())

    def _lazy_names(self) -> dict[str, str]:
        """Lazily made command name -> short help, for the commands whose module exists."""
        names = {n: h for n, h in STAGE_COMMANDS.items() if _stage_available(n)}
        names.update({n: h for n, (module, h) in EXTRA_COMMANDS.items() if _module_file(module).is_file()})
        return names

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        # Listing (help) asks for every command: a stand-in with the short help, importing nothing.
        command = super().get_command(ctx, name)
        if command is None and name in self._lazy_names():
            command = click.Command(name, help=self._lazy_names()[name])
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        # Running (or --help of) one command: import its module and build the real command.
        if args and args[0] in self._lazy_names() and super().get_command(ctx, args[0]) is None:
            return args[0], self._load(args[0]), args[1:]
        return super().resolve_command(ctx, args)

    @staticmethod
    def _load(name: str) -> click.Command:
        if name in STAGE_COMMANDS:
            module = f"potatura.{name}.cli"
            if not _module_file(module).is_file():
                return typer.main.get_group(_generic_stage_app(name)).commands[name]
        else:
            module = EXTRA_COMMANDS[name][0]
        sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        loaded = importlib.import_module(module)
        if hasattr(loaded, "register"):
            loaded.register(sub)
        elif callable(getattr(loaded, name, None)):  # a module that defines the command function itself
            sub.command(name)(getattr(loaded, name))
        command = typer.main.get_group(sub).commands.get(name)
        if command is None:
            raise click.UsageError(f"{module} registers no command {name!r}")
        return command


def _generic_stage_app(stage_name: str) -> typer.Typer:
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @sub.command(stage_name, help=f"Run the {stage_name} stage alone in the flow's run directory.\n\n"
                 f"Example: potatura {stage_name} flows/demo.yaml")
    def command(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: Optional[List[str]] = SetOption,
    ) -> None:
        run_stages(load_flow(flow, sets), only=[stage_name], force=True)

    return sub


app = typer.Typer(
    name="potatura",
    cls=LazyStageGroup,
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
    run_stages(load_flow(flow, sets), from_stage, to_stage, force=force)


@app.command()
def demo(
    runs_dir: Optional[Path] = typer.Option(None, help="where the run directory goes [default: runs]"),
    name: Optional[str] = typer.Option(None, help="run name [default: demo]"),
    sets: Optional[List[str]] = SetOption,
) -> None:
    """The whole flow on the embedded default: LeNet-5 on scikit-learn's digits (8x8).

    Example: potatura demo --runs-dir /tmp/runs
    """
    run_stages(load_flow(None, sets, name=name, runs_dir=runs_dir))


boards_app = typer.Typer(help="The board catalog: parts, resources, clocks, memory, each with its source.",
                         no_args_is_help=True)
app.add_typer(boards_app, name="boards")


@boards_app.command("list")
def boards_list() -> None:
    """List the boards potatura knows. Example: potatura boards list"""
    from rich.table import Table

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


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="print the version and exit"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or log lines; results and errors only "
                               "(also POTATURA_QUIET=1)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (also "
                                          "POTATURA_THREADS) [default: see potatura/threads.py]"),
) -> None:
    if version:
        console.print(f"potatura {__version__}")
        raise typer.Exit()
    if quiet:
        os.environ["POTATURA_QUIET"] = "1"
    if threads is not None:
        os.environ["POTATURA_THREADS"] = str(threads)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    from potatura.threads import prepare_environment

    prepare_environment()  # before anything imports torch
    try:
        app(args=argv, prog_name="potatura")  # usage errors: typer prints them and exits 2
    except PotaturaError as exc:
        for line in str(exc).splitlines():
            err_console.print(f"error: {line}", style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: run the same command again to resume")
        sys.exit(130)
    except OSError as exc:  # a file or folder the command could not read or write
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"error: {where}{exc.strerror or exc}", style="red", highlight=False, markup=False,
                          soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # a bug: one line here, the traceback with POTATURA_DEBUG=1 (and in run.log)
        if os.environ.get("POTATURA_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        err_console.print(f"internal error: {type(exc).__name__}: {first} (a bug in potatura: please report it; "
                          f"POTATURA_DEBUG=1 shows the traceback)", style="red", highlight=False, markup=False,
                          soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

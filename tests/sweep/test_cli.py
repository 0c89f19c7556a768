"""`potatura sweep`: the command on a LocalCluster, --resume, and one-line errors."""

import typer
from typer.testing import CliRunner

from potatura.sweep.cli import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps `sweep` a subcommand
        pass

    return app


def test_sweep_command_runs_resumes_and_refuses_to_start_over(write_sweep, tmp_path):
    from potatura.errors import ConfigError

    path = write_sweep(name="cli", n_trials=1, space="quant.weight_bits: {choices: [4, 8]}")
    runner = CliRunner()
    result = runner.invoke(_app(), ["sweep", str(path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "trial 0: complete: accuracy" in result.output and "report:" in result.output
    assert (tmp_path / "runs" / "cli" / "sweep.md").is_file()

    again = runner.invoke(_app(), ["sweep", str(path)])
    assert isinstance(again.exception, ConfigError) and "already exists; pass --resume" in str(again.exception)

    # --resume with more trials continues; the finished trial is kept.
    more = runner.invoke(_app(), ["sweep", str(path), "--resume", "--n-trials", "2", "--workers", "1"])
    assert more.exit_code == 0, more.output
    assert "trial 1: complete" in more.output and "trial 0:" not in more.output

    other = write_sweep(name="cli", n_trials=1, space="quant.weight_bits: {choices: [6]}")
    changed = runner.invoke(_app(), ["sweep", str(other), "--resume"])
    assert "differs from the sweep being resumed" in str(changed.exception)
    fresh = write_sweep(name="nothing", n_trials=1, space="quant.weight_bits: {choices: [6]}")
    missing = runner.invoke(_app(), ["sweep", str(fresh), "--resume"])
    assert "nothing to resume" in str(missing.exception)


def test_sweep_is_a_command_of_potatura():
    from potatura.cli import app

    result = CliRunner().invoke(app, ["sweep", "--help"])
    assert result.exit_code == 0 and "--scheduler" in result.output and "--resume" in result.output

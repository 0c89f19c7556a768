"""`potatura train`: the train stage alone, with the common pruning options as flags."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        method: Optional[str] = typer.Option(None, help="none | serene | lobster | magnitude-oneshot"),
        sensitivity: Optional[str] = typer.Option(None, help="SeReNe sensitivity: bounded | full | local | neuron-lobster"),
        lmbda: Optional[float] = typer.Option(None, "--lmbda", "--lambda", help="regularization strength (per step)"),
        epochs: Optional[int] = typer.Option(None, help="epoch budget (fine-tuning included)"),
        twt: Optional[float] = typer.Option(None, help="threshold worsening tolerance (0.05 = 5% validation loss)"),
        pwe: Optional[int] = typer.Option(None, help="plateau waiting epochs before a threshold round"),
        target_params: Optional[float] = typer.Option(None, help="stop pruning at this % of parameters remaining"),
        target_neurons: Optional[float] = typer.Option(None, help="stop pruning at this % of neurons remaining"),
        force: bool = typer.Option(False, "--force", help="train again even when a finished run has the same inputs"),
        sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="override any flow field, e.g. --set train.lr=0.1"),
    ) -> None:
        """Train (and prune) the flow's model in its run directory; a killed run resumes at its last epoch.

        Example:

        potatura train flows/fashion-lenet5.yaml --method serene --sensitivity bounded --lmbda 1e-4
        """
        from potatura.cli import _load, _run

        options = {"method": method, "sensitivity": sensitivity, "lmbda": lmbda, "epochs": epochs, "twt": twt,
                   "pwe": pwe, "target_parameters_pct": target_params, "target_neurons_pct": target_neurons}
        extra = [f"train.{k}={v}" for k, v in options.items() if v is not None]
        cfg = _load(flow, list(sets or []) + extra)
        _run(cfg, only=["train"], force=force)

"""`potatura train`: the train stage alone, with the common pruning options as flags;
`potatura analyze RUN_DIR`: PSP-entropy and sharpness of a run's trained model."""

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
        neq: bool = typer.Option(False, "--neq", help="freeze neurons at equilibrium (NEq, default settings; "
                                 "tune with --set train.neq.eps=...)"),
        shrink_every: Optional[int] = typer.Option(None, help="remove dead neurons from the model every N epochs"),
        threshold: Optional[str] = typer.Option(None, help="threshold rounds zero: parameters (the paper) | "
                                                "neurons+parameters (whole neurons first)"),
        sensitivity_norm: Optional[str] = typer.Option(None, help="SeReNe: none (the paper) | layer-max "
                                                       "(relu(1 - S / max S of the layer))"),
        force: bool = typer.Option(False, "--force", help="train again even when a finished run has the same inputs"),
        sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="override any flow field, e.g. --set train.lr=0.1"),
    ) -> None:
        """Train (and prune) the flow's model in its run directory; a killed run resumes at its last epoch.

        Example:

        potatura train flows/fashion-lenet5.yaml --method serene --sensitivity bounded --lmbda 1e-4
        """
        from potatura.cli_common import _load, _run

        options = {"method": method, "sensitivity": sensitivity, "lmbda": lmbda, "epochs": epochs, "twt": twt,
                   "pwe": pwe, "target_parameters_pct": target_params, "target_neurons_pct": target_neurons,
                   "shrink_every": shrink_every, "threshold": threshold, "sensitivity_norm": sensitivity_norm}
        extra = [f"train.{k}={v}" for k, v in options.items() if v is not None]
        # --neq first, so that --set train.neq.eps=... given with it still applies.
        cfg = _load(flow, (["train.neq={}"] if neq else []) + list(sets or []) + extra)
        _run(cfg, only=["train"], force=force)

    @app.command("analyze")
    def analyze(
        run_dir: Path = typer.Argument(..., help="a run directory whose train stage ran (runs/<name>)"),
        split: str = typer.Option("test", help="data split analysed: train | val | test"),
        alpha: float = typer.Option(0.05, help="sharpness: relative weight perturbation w * (1 + alpha * N(0,1))"),
        trials: int = typer.Option(10, help="sharpness: perturbations drawn"),
        max_samples: Optional[int] = typer.Option(None, help="analyse only the first N samples of the split"),
    ) -> None:
        """PSP-entropy histograms per layer and sharpness of RUN_DIR/train/model.pt (writes RUN_DIR/analyze/).

        Example:

        potatura analyze runs/demo --split test --alpha 0.05
        """
        from potatura.cli_common import console
        from potatura.train.psp import analyze_run

        report = analyze_run(run_dir, split=split, alpha=alpha, trials=trials, max_samples=max_samples)
        for name, layer in report["entropy"]["layers"].items():
            mean = "-" if layer["mean_bits"] is None else f"{layer['mean_bits']:.3f}"
            console.print(f"{name}: {layer['units']} units, mean PSP entropy {mean} bits of "
                          f"{report['entropy']['max_bits']} ({layer['pruned_units']} pruned units left out; measured on the "
                          f"{split} split)")
        sharp = report["sharpness"]
        console.print(f"sharpness: loss {sharp['loss']:.4f}, mean increase {sharp['mean_increase']:.4f} "
                      f"(alpha {sharp['alpha']}, {sharp['trials']} trials; measured on the {split} split)")
        console.print(f"written: {Path(run_dir) / 'analyze'}")

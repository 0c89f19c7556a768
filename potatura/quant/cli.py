"""`potatura quant`: the quant stage of a flow, or quantization of any model file."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("quant")
    def quant(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="override a flow field, e.g. "
                                                 "--set quant.weight_bits=4 (repeatable)"),
        model: Optional[Path] = typer.Option(None, "--model", help="quantize this model file (potatura model "
                                             "file) instead of the flow's simplify output; data come from the flow"),
        out: Optional[Path] = typer.Option(None, "--out", help="with --model: output folder (default "
                                           "<run dir>/quant-<model file name>)"),
    ) -> None:
        """Quantize with Brevitas (PTQ, optional QAT), export QONNX and check the integer reference.

        Examples:

        potatura quant flows/demo.yaml --set quant.qat_epochs=2

        potatura quant --model runs/demo/simplify/model.pt --set quant.weight_bits=4 --out /tmp/q4
        """
        from potatura.cli_common import _load, _run, console

        cfg = _load(flow, sets)
        if model is None:
            given = [flag for flag, value in (("--out", out),) if value is not None]
            if given:
                from potatura.errors import ConfigError

                raise ConfigError(f"{', '.join(given)}: only used with --model")
            _run(cfg, only=["quant"], force=True)  # prints the stage's headline
            return
        import logging

        from potatura.data import load_dataset
        from potatura.progress import Progress
        from potatura.models import load_model_file
        from potatura.quant.pipeline import quantize

        float_model, _ = load_model_file(model)
        from potatura.cli_common import apply_threads_for

        apply_threads_for(float_model)  # the same default as a flow run (results depend on it)
        data = load_dataset(cfg.data, cfg.seed)
        out_dir = out or cfg.run_dir() / f"quant-{model.stem}"
        log = logging.getLogger("potatura.quant")
        existed = out_dir.exists()
        try:
            with Progress(console=console, enabled=console.is_terminal) as progress:
                quantize(float_model, data, cfg.quant, out_dir, seed=cfg.seed, train_cfg=cfg.train, log=log,
                         progress=progress)
        except BaseException:
            if not existed and out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()  # a failed run leaves no empty folder behind
            raise
        from potatura.quant.stage import headline

        console.print(f"quant: {headline(out_dir)}", highlight=False)
        console.print(f"quant: outputs in {out_dir}")

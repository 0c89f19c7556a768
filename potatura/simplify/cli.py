"""`potatura simplify`: the stage of a flow, or one model file alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer

from potatura.errors import ConfigError


def _parse_shape(text: str) -> tuple[int, ...]:
    parts = re.split(r"[,x]", text.strip())
    shape = tuple(int(p) for p in parts) if all(p.strip().isdigit() for p in parts) else ()
    if len(shape) not in (1, 3) or any(v < 1 for v in shape):
        raise ConfigError(f"--input-shape {text!r}: expected C,H,W (e.g. 1,28,28) or F (e.g. 784)")
    return shape


def simplify_file(model_path: Path, out: Path, input_shape: Optional[str], bias_maps: str, samples: int,
                  tolerance: float, seed: int = 0) -> dict:
    """Simplify one model file; write `out` (model) and `out`.json (summary); return the summary.

    Logits are compared on `samples` standard-normal random inputs (there is no dataset here).
    """
    import torch

    from potatura.artifacts import write_json
    from potatura.models import load_model_file, save_model_file
    from potatura.simplify.pipeline import simplify
    from potatura.simplify.report import compare_logits
    from potatura.simplify.stage import check_agreement

    if bias_maps not in ("allow", "refuse"):
        raise ConfigError(f"--bias-maps {bias_maps!r}: accepted values: allow, refuse")
    model, payload = load_model_file(model_path)
    from potatura.cli_common import apply_threads_for

    apply_threads_for(model)  # the same default as a flow run (results depend on it)
    shape = _parse_shape(input_shape) if input_shape else None
    if shape is None:
        known = (payload.get("spec") or {}).get("input_shape") or (payload.get("extra") or {}).get("input_shape")
        if not known:
            raise ConfigError(f"{model_path}: the file does not record its input shape; pass --input-shape C,H,W")
        shape = tuple(known)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, *shape, generator=generator)
    result = simplify(model, x[:1], allow_bias_maps=bias_maps == "allow")
    check = compare_logits(model, result.model, x)
    check["measured"] = f"measured on {samples} standard-normal random inputs (seed {seed})"
    summary = {**result.summary, "source": str(model_path), "validation": check}
    summary_path = out.with_suffix(".json")
    write_json(summary_path, summary)
    check_agreement(result, check, tolerance, "random inputs")
    extra = {"simplified": True, "source_spec": payload.get("spec") or {}, "input_shape": list(shape),
             "bias_map_layers": [b["layer"] for b in result.summary["bias_map_layers"]]}
    save_model_file(out, result.model, extra=extra)
    return summary


def register(app: typer.Typer) -> None:
    @app.command("simplify")
    def simplify_command(
        flow: Optional[Path] = typer.Argument(None, help="flow file (YAML); default: the demo flow"),
        sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="override a flow field (repeatable)"),
        model: Optional[Path] = typer.Option(None, "--model", help="simplify this model file alone, outside a flow"),
        out: Optional[Path] = typer.Option(None, "--out", help="with --model: output model file "
                                           "(default: <model>.simplified.pt; the summary goes beside it as .json)"),
        input_shape: Optional[str] = typer.Option(None, "--input-shape", help="with --model: C,H,W when the file "
                                                  "does not record it"),
        bias_maps: str = typer.Option("allow", "--bias-maps", help="allow | refuse per-position bias maps"),
        samples: int = typer.Option(256, "--samples", min=1, help="with --model: random inputs to compare logits on"),
        tolerance: float = typer.Option(1e-4, "--tolerance", help="with --model: max relative logit difference"),
    ) -> None:
        """Remove pruned neurons exactly: fold BN, fold their constants into consumers, shrink the layers.

        Examples:

        potatura simplify flows/demo.yaml (the stage, in the flow's run directory);

        potatura simplify --model runs/demo/train/model.pt --out small.pt
        """
        from potatura.cli_common import _load, _run, console

        if model is None:
            given = [flag for flag, value in (("--out", out), ("--input-shape", input_shape),) if value is not None]
            if given:
                from potatura.errors import ConfigError

                raise ConfigError(f"{', '.join(given)}: only used with --model")
            _run(_load(flow, sets), only=["simplify"], force=True)
            return
        if flow is not None or sets:
            raise ConfigError("simplify: give either a flow file or --model, not both")
        target = out or model.with_name(model.stem + ".simplified.pt")
        s = simplify_file(model, target, input_shape, bias_maps, samples, tolerance)
        v = s["validation"]
        console.print(f"simplify: parameters {s['parameters_before']} -> {s['parameters_after']} "
                      f"(bias maps {s['bias_map_values']} values), MACs {s['macs_before']} -> {s['macs_after']}; "
                      f"max |logit difference| {v['max_abs_logit_difference']:.3g}, argmax agreement "
                      f"{v['argmax_agreement']:.4f} ({v['measured']})")
        console.print(f"wrote {target} and {target.with_suffix('.json')}")

"""The `quant` stage: simplified float model -> Brevitas (PTQ, optional QAT) -> QONNX + golden IO."""

from __future__ import annotations

from potatura import formats
from potatura.flow import Input, Output, Stage, StageContext


def run(ctx: StageContext) -> dict:
    # Imported here: a cached re-run reads the Stage record only and must not pay for torch/Brevitas.
    from potatura.data import load_dataset
    from potatura.models import load_model_file
    from potatura.quant.pipeline import quantize

    cfg = ctx.config
    data = load_dataset(cfg.data, cfg.seed)
    model, _ = load_model_file(ctx.input("simplify", "model"))
    reference = None
    if "train" in ctx.inputs and "model" in ctx.inputs["train"]:
        reference, _ = load_model_file(ctx.input("train", "model"))
    q = cfg.quant
    ctx.log.info("quant: %s-bit weights, %s-bit activations, %s scales, %s biases", q.weight_bits, q.act_bits, q.scale,
                 f"int{q.bias_bits}" if q.bias_bits else "float")
    outcome = quantize(model, data, q, ctx.out_dir, seed=cfg.seed, train_cfg=cfg.train, log=ctx.log,
                       progress=ctx.progress, reference_model=reference)
    if not outcome.summary["hardware_ready"]:
        ctx.log.warning("quant: not hardware-ready: %s", "; ".join(outcome.summary["hardware_problems"]))
    add_golden_codes(outcome.paths["golden"], outcome.quant_info, ctx.log)
    return dict(outcome.paths)


def add_golden_codes(golden_path, quant_info: dict, log=None) -> list[str]:
    """Add x_codes/x_exponent and y_codes/y_exponent (value = code * 2**exponent) to golden.npz.

    Keeps x and y as they are (float32). Returns the names added (none without a fixed-point grid).
    """
    import numpy as np

    from potatura.artifacts import atomic_path
    from potatura.quant.reference import golden_codes

    with np.load(golden_path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    codes = golden_codes(quant_info, arrays["x"], arrays["y"])
    if codes and "y_codes" not in codes and log is not None:
        log.warning("quant: golden y is not on the output grid in float32 (accumulator over 24 bits): "
                    "golden.npz gets x_codes but no y_codes")
    if codes:
        with atomic_path(golden_path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays, **codes)
    return sorted(codes)


def headline(stage_dir) -> str | None:
    """One line for the end-of-run report, from summary.json."""
    from potatura.artifacts import read_json

    path = stage_dir / "summary.json"
    if not path.is_file():
        return None
    s = read_json(path)
    test, check = s["accuracy"]["test"], s["reference_check"]
    ready = "hardware-ready" if s["hardware_ready"] else "NOT hardware-ready: " + "; ".join(s["hardware_problems"])
    before = test.get("float", test.get("input"))  # "float" only when an unsimplified reference exists
    return (f"test accuracy {100 * before:.2f}% float -> {100 * test['quantized']:.2f}% quantized (measured); "
            f"QONNX == Brevitas on {check['exact_matches']}/{check['samples']} validation samples; {ready}")

STAGE = Stage(
    name="quant",
    run=run,
    config_sections=("data", "model", "train", "simplify", "quant"),
    needs=("train", "simplify"),
    description="quantize with Brevitas (PTQ, optional QAT), export QONNX, check the integer reference",
    headline=headline,
    inputs=(Input("simplify", "model"), Input("train", "model", optional=True)),
    outputs=(Output("qonnx", formats.QONNX, "model.qonnx.onnx"), Output("quant_json", formats.JSON, "quant.json"),
             Output("golden", formats.GOLDEN, "golden.npz"), Output("brevitas_model", formats.BREVITAS, "brevitas.pt"),
             Output("summary", formats.JSON, "summary.json")),
)

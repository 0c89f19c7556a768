"""The `simplify` stage: the trained model -> a smaller model computing the same logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potatura import formats
from potatura.artifacts import write_json
from potatura.errors import PotaturaError
from potatura.flow import Input, Output, Stage, StageContext

if TYPE_CHECKING:
    from potatura.simplify.pipeline import SimplifyResult


class SimplifyCheckError(PotaturaError):
    """The simplified model's logits differ from the original's beyond the configured tolerance."""


def check_agreement(result: "SimplifyResult", check: dict, tolerance: float, where: str) -> None:
    if not check["relative_logit_difference"] <= tolerance:  # NaN compares false: non-finite logits fail
        raise SimplifyCheckError(
            f"simplify: logits differ by {check['max_abs_logit_difference']:.3g} (relative "
            f"{check['relative_logit_difference']:.3g} > simplify.tolerance {tolerance:g}) on {check['samples']} "
            f"{where}; the summary is written, please report this model")


def log_summary(log, summary: dict) -> None:
    s = summary
    log.info("simplify: parameters %d -> %d (bias maps %d values), MACs %d -> %d, in %.2f s",
             s["parameters_before"], s["parameters_after"], s["bias_map_values"], s["macs_before"], s["macs_after"],
             s["seconds"])
    for row in s["layers"]:
        log.info("simplify: %-24s %s in %d -> %d, out %d -> %d%s", row["layer"], row["type"], row["in_before"],
                 row["in_after"], row["out_before"], row["out_after"],
                 f", bias map {'x'.join(map(str, row['bias_map']))}" if row["bias_map"] else "")
    for kept in s.get("constant_channels_kept") or []:
        log.info("simplify: %s keeps %d constant channel(s) of %s (%d parameters) instead of a %d-value bias map: %s",
                 kept["layer"], kept["constant_channels_kept"], kept["from"], kept["parameters_kept"],
                 kept["bias_map_values_avoided"], kept["reason"])
    if s.get("inplace_rewritten"):
        log.info("simplify: in-place operators rewritten out of place: %s", ", ".join(s["inplace_rewritten"]))
    v = s.get("validation")
    if v:
        log.info("simplify: max |logit difference| %.3g (relative %.3g), argmax agreement %.4f on %d samples "
                 "(measured)", v["max_abs_logit_difference"], v["relative_logit_difference"], v["argmax_agreement"],
                 v["samples"])


def run(ctx: StageContext) -> dict:
    # Imported here: a cached re-run reads the Stage record only and must not pay for torch.
    from potatura.data import load_dataset
    from potatura.models import load_model_file, save_model_file
    from potatura.simplify.pipeline import simplify
    from potatura.simplify.report import compare_logits

    cfg = ctx.config
    model, payload = load_model_file(ctx.input("train", "model"))
    data = load_dataset(cfg.data, cfg.seed)
    limit = cfg.simplify.validation_samples
    x_val = data.x_val[:limit] if limit else data.x_val
    y_val = data.y_val[:limit] if limit else data.y_val
    with ctx.progress.task("simplify", total=2) as update:
        result = simplify(model, x_val[:1], allow_bias_maps=cfg.simplify.bias_maps == "allow")
        update(advance=1, description="simplify: comparing logits")
        check = compare_logits(model, result.model, x_val, labels=y_val)
        update(advance=1)
    check["measured"] = f"measured on {check['samples']} validation samples of {data.name}"
    summary = {"model": (payload.get("spec") or {}).get("name"), "dataset": data.name, **result.summary,
               "validation": check}
    write_json(ctx.path("summary.json"), summary)
    log_summary(ctx.log, summary)
    check_agreement(result, check, cfg.simplify.tolerance, "validation samples")
    spec = payload.get("spec") or {}
    extra = {"simplified": True, "source_spec": spec, "input_shape": list(data.input_shape),
             "num_classes": data.num_classes,
             "bias_map_layers": [b["layer"] for b in result.summary["bias_map_layers"]]}
    save_model_file(ctx.path("model.pt"), result.model, extra=extra)
    return {"model": ctx.path("model.pt"), "summary": ctx.path("summary.json")}


def headline(stage_dir) -> str | None:
    """One line for the end-of-run report, from summary.json."""
    from potatura.artifacts import read_json

    path = stage_dir / "summary.json"
    if not path.is_file():
        return None
    s = read_json(path)
    v = s["validation"]
    maps = f"; per-position bias maps in {len(s['bias_map_layers'])} layers" if s["bias_map_layers"] else ""
    return (f"parameters {s['parameters_before']:,} -> {s['parameters_after']:,}, MACs {s['macs_before']:,} -> "
            f"{s['macs_after']:,}; max |logit difference| {v['max_abs_logit_difference']:.2g}, argmax agreement "
            f"{v['argmax_agreement']:.4f} (measured){maps}")

STAGE = Stage(
    name="simplify",
    run=run,
    config_sections=("data", "model", "train", "simplify"),
    needs=("train",),
    description="fold BN, fold the constants of pruned neurons into their consumers and remove them",
    headline=headline,
    inputs=(Input("train", "model"),),
    outputs=(Output("model", formats.MODEL, "model.pt"), Output("summary", formats.JSON, "summary.json")),
)

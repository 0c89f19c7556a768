"""The whole quant step on one float model: Brevitas model, PTQ, QAT, QONNX, integer reference.

quantize() writes, under out_dir:

    model.qonnx.onnx   the cleaned QONNX model (NCHW, batch 1, as exported)
    quant.json         per-tensor quantization parameters, per-layer summary, hardware readiness
    golden.npz         x (validation inputs, float32 NCHW), y (QONNX reference outputs), labels
    brevitas.pt        the Brevitas model (float model + quant section + state_dict; see
                       load_brevitas_model: Brevitas quantizers are classes made at run time and
                       cannot be pickled, so the module is rebuilt, not unpickled)
    summary.json       accuracies and the QONNX-vs-Brevitas check
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from potatura.artifacts import atomic_path, load_payload, save_torch, write_json
from potatura.errors import DataError
from potatura.progress import Progress
from potatura.quant.calibrate import calibrate_activations, correct_biases, fine_tune, weight_masks
from potatura.quant.config import QuantConfig
from potatura.quant.convert import BrevitasConversion, to_brevitas
from potatura.quant.export import (accumulator_bits, export_qonnx_file, fixed_point_type, is_power_of_two,
                                   quant_parameters, weight_layer_biases)
from potatura.quant.hardware import hardware_problems
from potatura.quant.reference import ReferenceCheck, compare, execute_qonnx, run_torch
from potatura.train.loop import evaluate

BREVITAS_FORMAT = "potatura-brevitas/2"  # /1 held a pickled module: refused when read
QUANT_FORMAT = "potatura-quant/1"
FILES = {"qonnx": "model.qonnx.onnx", "quant_json": "quant.json", "golden": "golden.npz",
         "brevitas_model": "brevitas.pt", "summary": "summary.json"}


@dataclass
class QuantOutcome:
    model: nn.Module  # the Brevitas model, eval mode
    conversion: BrevitasConversion
    check: ReferenceCheck
    summary: dict
    quant_info: dict
    paths: dict[str, Path] = field(default_factory=dict)


# -- Brevitas model files ------------------------------------------------------------------------


def save_brevitas_model(path: Path, float_model: nn.Module, model: nn.Module, cfg: QuantConfig,
                        input_shape: tuple[int, ...]) -> Path:
    from potatura.module_codec import encode_module

    # The float model as a graph description (plain data, no pickled module: read with weights_only=True).
    payload = {"format": BREVITAS_FORMAT, "float_model": encode_module(float_model),
               "quant_config": cfg.model_dump(mode="json"), "input_shape": list(input_shape),
               "state_dict": model.state_dict()}
    return save_torch(path, payload)


def load_brevitas_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a Brevitas model written by quantize(); return (model in eval mode, payload)."""
    from brevitas.graph.calibrate import load_quant_model_mode

    from potatura.module_codec import decode_module

    payload = load_payload(path, BREVITAS_FORMAT, "Brevitas model file")
    float_model = decode_module(payload["float_model"], str(path))
    model = to_brevitas(float_model, QuantConfig.model_validate(payload["quant_config"])).model
    state = payload["state_dict"]
    modules = dict(model.named_modules())
    for key, value in state.items():  # bias correction may have given a bias-free layer a bias
        owner, _, leaf = key.rpartition(".")
        if leaf == "bias" and key not in model.state_dict() and owner in modules:
            modules[owner].register_parameter("bias", nn.Parameter(value.clone()))
    with load_quant_model_mode(model):
        model.load_state_dict(state)
    model.eval()
    return model, payload


# -- description of the quantized layers ---------------------------------------------------------


def _qt_summary(qt: Any) -> dict:
    scale = qt.scale.detach().double().numpy()
    bits = int(round(float(qt.bit_width)))
    signed = bool(qt.signed)
    return {"scale": float(scale.ravel()[0]) if scale.size == 1 else scale.ravel().tolist(), "bit_width": bits,
            "signed": signed, "power_of_two": is_power_of_two(scale), "fixed_point": fixed_point_type(scale, bits, signed)}


def _accumulator_bound(module: nn.Module, quant_input: Any, output: Any) -> dict:
    """The tightest signed accumulator for this layer's actual integer weights and bias: per output
    channel, max |acc| <= sum |w_int| * max |x_int| + |b_int| (x_int the input's integer range)."""
    in_bits = int(round(float(quant_input.bit_width)))
    max_x = 2 ** (in_bits - 1) if bool(quant_input.signed) else 2 ** in_bits - 1
    w_int = module.quant_weight().int().double()
    per_channel = w_int.abs().reshape(w_int.shape[0], -1).sum(1) * max_x
    scale = output.scale.detach().double().reshape(-1)
    if module.bias is not None:
        b_int = torch.round(module.bias.detach().double() / scale)
        per_channel = per_channel + b_int.abs()
    max_abs = float(per_channel.max())
    bits = accumulator_bits(max_abs)
    scale_np = scale.numpy()
    return {"max_abs_int": max_abs, "bit_width": bits, "scale": float(scale_np[0]) if scale_np.size == 1 else scale_np.tolist(),
            "fixed_point": fixed_point_type(scale_np, bits, True)}


@torch.no_grad()
def describe_layers(conversion: BrevitasConversion, sample: torch.Tensor) -> list[dict]:
    """Per layer of the Brevitas model: weights (bits, scale, non-zeros) and its output tensor
    (scale, bit width: for a conv/linear the accumulator bound Brevitas derives), from one forward
    pass on `sample`."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    model = conversion.model
    modules = dict(model.named_modules())
    seen: dict[str, dict] = {}
    accumulators: dict[str, dict] = {}
    hooks, restore = [], []

    def hook(name):
        def fn(module, inputs, output):
            if hasattr(output, "scale") and name not in seen:
                seen[name] = _qt_summary(output)
                if isinstance(module, QuantWeightBiasInputOutputLayer) and hasattr(inputs[0], "scale"):
                    accumulators[name] = _accumulator_bound(module, inputs[0], output)
        return fn

    for info in conversion.layers:
        module = modules[info.name]
        if getattr(module, "return_quant_tensor", True) is False:
            restore.append(module)
            module.return_quant_tensor = True
        hooks.append(module.register_forward_hook(hook(info.name)))
    try:
        model.eval()
        model(sample[:1])
    finally:
        for h in hooks:
            h.remove()
        for module in restore:
            module.return_quant_tensor = False
    out = []
    for info in conversion.layers:
        module = modules[info.name]
        entry: dict[str, Any] = {"name": info.name, "kind": info.kind, "source": info.source}
        if isinstance(module, QuantWeightBiasInputOutputLayer):
            qw = module.quant_weight()
            w = _qt_summary(qw)
            w["nonzero"] = int((qw.int() != 0).sum())
            w["total"] = int(qw.value.numel())
            entry["weight"] = w
            entry["bias"] = ("none" if module.bias is None else
                             f"int{info.bias_bits}" if info.bias_bits is not None else "float")
        if info.name in seen:
            entry["output"] = seen[info.name]
        if info.name in accumulators:
            entry["accumulator"] = accumulators[info.name]
        out.append(entry)
    return out


# -- the whole step ------------------------------------------------------------------------------


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Optional[float]:
    return evaluate(model, x, y)["accuracy"] if len(y) else None


def quantize(float_model: nn.Module, data, cfg: QuantConfig, out_dir: Path, *, seed: int = 0, train_cfg=None,
             log: Optional[logging.Logger] = None, progress: Optional[Progress] = None,
             reference_model: Optional[nn.Module] = None, masks_model: Optional[nn.Module] = None) -> QuantOutcome:
    """Quantize `float_model` (eval mode; plain layers, or BatchNorm right after a conv) on the
    dataset splits `data` and write the artifacts listed in the module docstring to `out_dir`.

    reference_model: the unsimplified float model, reported beside the input model's accuracy.
    Pruned weights (zeros of the input model) stay zero through QAT.
    """
    log = log or logging.getLogger("potatura.quant")
    progress = progress or Progress(enabled=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in FILES.items()}
    float_model.eval()
    input_shape = tuple(data.x_train.shape[1:])
    try:
        with torch.no_grad():
            logits = float_model(data.x_train[:1])
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"the model does not accept the dataset's inputs of shape {list(input_shape)} "
                        f"({data.name}): {str(exc).splitlines()[0]}") from None
    if logits.ndim != 2 or logits.shape[1] < data.num_classes:
        raise DataError(f"the model gives outputs of shape {list(logits.shape[1:])} but {data.name} has "
                        f"{data.num_classes} classes")

    conversion = to_brevitas(float_model, cfg)
    model = conversion.model
    masks = weight_masks(model)

    rng = np.random.default_rng(seed)
    n_cal = min(cfg.calibration_samples, len(data.x_train))
    x_cal = data.x_train[np.sort(rng.permutation(len(data.x_train))[:n_cal])]
    with progress.task("quant: calibrate", total=n_cal) as bar:
        calibrate_activations(model, x_cal, cfg.calibration_batch_size, on_batch=lambda k: bar(advance=k))
    if cfg.bias_correction:
        correct_biases(model, x_cal, cfg.calibration_batch_size)
    accuracy = {"test": {}, "val": {}}
    for split, x, y in (("test", data.x_test, data.y_test), ("val", data.x_val, data.y_val)):
        if reference_model is not None:
            accuracy[split]["float"] = _accuracy(reference_model.eval(), x, y)
        accuracy[split]["input"] = _accuracy(float_model, x, y)
        accuracy[split]["ptq"] = _accuracy(model, x, y)
    log.info("quant: PTQ (%d calibration samples%s): test accuracy %.4f (input model %.4f)", n_cal,
             ", bias correction" if cfg.bias_correction else "", accuracy["test"]["ptq"] or 0, accuracy["test"]["input"] or 0)

    qat_history: list[dict] = []
    if cfg.qat_epochs > 0:
        with progress.task("quant: QAT", total=cfg.qat_epochs) as bar:
            result = fine_tune(model, data, train_cfg, cfg.qat_epochs, cfg.qat_lr, cfg.qat_batch_size, seed=seed,
                               masks=masks, checkpoint_dir=None, log=log,
                               on_epoch=lambda m: bar(completed=m["epoch"]))
        qat_history = result.history
        for split, x, y in (("test", data.x_test, data.y_test), ("val", data.x_val, data.y_val)):
            accuracy[split]["qat"] = _accuracy(model, x, y)
        log.info("quant: QAT %d epochs: test accuracy %.4f", cfg.qat_epochs, accuracy["test"]["qat"] or 0)
    for split in accuracy:
        accuracy[split]["quantized"] = accuracy[split]["qat" if cfg.qat_epochs > 0 else "ptq"]
    pruned_kept_zero = all(bool(torch.all(p[~masks[n]] == 0)) for n, p in model.named_parameters() if n in masks)

    export_qonnx_file(model, input_shape, paths["qonnx"])
    n_check = len(data.x_val) if cfg.check_samples is None else min(cfg.check_samples, len(data.x_val))
    x_check = data.x_val[:n_check].numpy().astype(np.float32)
    with progress.task("quant: QONNX reference", total=n_check) as bar:
        y_ref = execute_qonnx(paths["qonnx"], x_check, cfg.reference_batch_size, on_batch=lambda k: bar(advance=k))
    y_brevitas = run_torch(model, x_check)
    check = compare(y_ref, y_brevitas)
    log.info("quant: QONNX reference vs Brevitas on %d validation samples: %d exact, max |diff| %.3g",
             check.samples, check.exact_matches, check.max_abs_difference)

    tensors = quant_parameters(paths["qonnx"])
    biases = weight_layer_biases(paths["qonnx"])
    from qonnx.core.modelwrapper import ModelWrapper

    graph = ModelWrapper(str(paths["qonnx"]))
    ops = [n.op_type for n in graph.graph.node]
    problems = hardware_problems(tensors, biases, ops, check.as_dict())
    layers = describe_layers(conversion, data.x_val[:1] if len(data.x_val) else x_cal[:1])
    in_name, out_name = graph.graph.input[0].name, graph.graph.output[0].name
    output_layer = next((entry for entry in reversed(layers) if "output" in entry), None)
    quant_info = {
        "format": QUANT_FORMAT,
        "qonnx": FILES["qonnx"],
        "layout": "NCHW",
        "input": {"name": in_name, "shape": list(graph.get_tensor_shape(in_name)),
                  "quantized_by": next((k for k, t in tensors.items() if t["input"] == in_name), None),
                  "normalization": {"mean": getattr(data, "mean", 0.0), "std": getattr(data, "std", 1.0)}},
        "output": {"name": out_name, "shape": list(graph.get_tensor_shape(out_name)),
                   "layer": output_layer["name"] if output_layer else None,
                   **({k: output_layer["output"][k] for k in ("scale", "bit_width", "signed", "fixed_point")}
                      if output_layer else {}),
                   "accumulator": output_layer.get("accumulator") if output_layer else None},
        "hardware_ready": not problems,
        "hardware_problems": problems,
        "config": cfg.model_dump(mode="json"),
        "tensors": tensors,
        "biases": biases,
        "layers": layers,
        "folded_batchnorms": conversion.folded_batchnorms,
        "reference_check": check.as_dict(),
        "measured": "reference_check measured: QONNX executed by qonnx.core.onnx_exec vs the Brevitas model",
    }
    write_json(paths["quant_json"], quant_info)
    with atomic_path(paths["golden"]) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=x_check, y=y_ref.astype(np.float32), labels=data.y_val[:n_check].numpy().astype(np.int64))
    save_brevitas_model(paths["brevitas_model"], float_model, model, cfg, input_shape)

    n_weights = sum(e["weight"]["total"] for e in layers if "weight" in e)
    n_nonzero = sum(e["weight"]["nonzero"] for e in layers if "weight" in e)
    weight_bits = sum(e["weight"]["nonzero"] * e["weight"]["bit_width"] for e in layers if "weight" in e)
    summary = {
        "accuracy": accuracy,
        "reference_check": check.as_dict(),
        "hardware_ready": not problems,
        "hardware_problems": problems,
        "calibration_samples": n_cal,
        "bias_correction": cfg.bias_correction,
        "qat_epochs": cfg.qat_epochs,
        "qat_history": qat_history,
        "pruned_weights_kept_zero": pruned_kept_zero,
        "weights": {"total": n_weights, "nonzero": n_nonzero,
                    "nonzero_bytes_at_bit_width": weight_bits / 8, "float32_bytes": 4 * n_weights},
        "measured": "accuracies measured on the test and validation splits; reference_check measured on "
                    "validation samples; byte counts computed from the weight tensors (no index overhead)",
    }
    write_json(paths["summary"], summary)
    return QuantOutcome(model, conversion, check, summary, quant_info, paths)

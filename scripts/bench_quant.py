#!/usr/bin/env python
"""Benchmark of the quant stage on LeNet-5: accuracy through the flow, QONNX exactness, NNC bytes.

For each dataset (Fashion-MNIST, scikit-learn digits): train a dense LeNet-5, prune it from
those weights with SeReNe (structured) and with LOBSTER (unstructured), simplify, then quantize
(8-bit PTQ, 8-bit QAT, 4-bit QAT; power-of-two scales, integer biases) and execute every QONNX
file with qonnx's executor against Brevitas on all validation samples. With the nnc extra
installed (.venv-nnc, see potatura/quant/nnc.py) each pruned model is also coded with NNCodec at
its defaults, before and after simplify.

Every accuracy is measured on the dataset's full test split; every time is wall-clock on this
machine (noisy when other jobs share the CPU). The peers are the float model (accuracy deltas in
points) and the float32 size (NNC bytes as a ratio).

    .venv/bin/python scripts/bench_quant.py --quick           # ~10 minutes on 2 cores
    .venv/bin/python scripts/bench_quant.py                   # longer training, closer to the papers
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from potatura.config import DataConfig  # noqa: E402
from potatura.data import load_dataset  # noqa: E402
from potatura.models import build_model  # noqa: E402
from potatura.quant import QuantConfig, quantize  # noqa: E402
from potatura.train.config import TrainConfig  # noqa: E402
from potatura.train.loop import TrainLoop, count_parameters, evaluate, seed_everything  # noqa: E402

log = logging.getLogger("bench_quant")

SETTINGS = {
    # dataset: (limit_train, dense epochs, pruning epochs, QAT epochs, pruning methods) per mode.
    # Quick mode prunes Fashion-MNIST with SeReNe only (the structured, hardware path); the
    # structured-vs-unstructured NNC comparison then comes from digits.
    "quick": {"fashion-mnist": (10000, 3, 5, 1, ("serene",)), "digits": (None, 20, 12, 2, ("serene", "lobster"))},
    "full": {"fashion-mnist": (None, 15, 20, 3, ("serene", "lobster")),
             "digits": (None, 30, 30, 4, ("serene", "lobster"))},
}


def _training_view(data, test_samples: int):
    """The splits with a smaller test set for the per-epoch evaluation the loop does (final
    accuracies always use the whole test split)."""
    view = copy.copy(data)
    view.x_test, view.y_test = data.x_test[:test_samples], data.y_test[:test_samples]
    return view


def train_dense(data, epochs: int, seed: int) -> torch.nn.Module:
    seed_everything(seed)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    cfg = TrainConfig(method="none", preset="off", epochs=epochs, lr=0.02, batch_size=128, lr_schedule="cosine")
    TrainLoop(model, _training_view(data, 2000), cfg, seed=seed).run()
    return model.eval()


def prune(dense: torch.nn.Module, data, method: str, epochs: int, seed: int, lmbda: float) -> torch.nn.Module:
    """SeReNe or LOBSTER from the dense weights, with the train package's pruning schedule."""
    from potatura.train.methods import build_pruning

    seed_everything(seed)
    model = copy.deepcopy(dense).train()
    cfg = TrainConfig(method=method, preset="off", epochs=epochs, lr=0.01, batch_size=128, lmbda=lmbda, pwe=1,
                      twt=0.05, finetune_epochs=1, lr_schedule="constant")
    setup = build_pruning(cfg, model, data.input_shape, log=log)
    TrainLoop(model, _training_view(data, 2000), cfg, seed=seed, hooks=setup.hooks, log=log).run()
    return model.eval()


def quant_row(model, data, cfg: QuantConfig, out_dir: Path, seed: int) -> dict:
    t0 = time.perf_counter()
    outcome = quantize(model, data, cfg, out_dir, seed=seed, train_cfg=TrainConfig(preset="off", batch_size=128))
    summary = outcome.summary
    return {"accuracy": summary["accuracy"]["test"]["quantized"], "exact": summary["reference_check"]["exact_matches"],
            "samples": summary["reference_check"]["samples"], "max_diff": summary["reference_check"]["max_abs_difference"],
            "hardware_ready": summary["hardware_ready"], "seconds": time.perf_counter() - t0,
            "weight_bytes": summary["weights"]["nonzero_bytes_at_bit_width"]}


def nnc_row(model, data, work: Path) -> dict | None:
    from potatura.quant import nnc

    if not nnc.available():
        return None
    return nnc.compress(model, data, work)


def bench_dataset(name: str, mode: str, out: Path, seed: int, lmbda: dict, methods: list[str]) -> dict:
    from potatura.simplify import simplify

    limit, dense_epochs, prune_epochs, qat_epochs, mode_methods = SETTINGS[mode][name]
    methods = [m for m in methods if m in mode_methods]
    data = load_dataset(DataConfig(dataset=name, limit_train=limit), seed)
    log.info("%s: %d/%d/%d train/val/test samples", name, len(data.y_train), len(data.y_val), len(data.y_test))
    t0 = time.perf_counter()
    dense = train_dense(data, dense_epochs, seed)
    result = {"dataset": name, "train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test),
              "dense_accuracy": evaluate(dense, data.x_test, data.y_test)["accuracy"],
              "dense_parameters": count_parameters(dense), "dense_seconds": time.perf_counter() - t0, "methods": {}}
    for method in methods:
        t0 = time.perf_counter()
        pruned = prune(dense, data, method, prune_epochs, seed, lmbda[method])
        row = {"prune_seconds": time.perf_counter() - t0,
               "pruned_accuracy": evaluate(pruned, data.x_test, data.y_test)["accuracy"],
               "nonzero_parameters": count_parameters(pruned, nonzero=True)}
        simplified = simplify(pruned, data.x_val[:1]).model.eval()
        row["simplified_accuracy"] = evaluate(simplified, data.x_test, data.y_test)["accuracy"]
        row["simplified_parameters"] = count_parameters(simplified)
        for label, cfg in (("ptq8", QuantConfig()),
                           ("qat8", QuantConfig(qat_epochs=qat_epochs)),
                           ("qat4", QuantConfig(weight_bits=4, act_bits=4, qat_epochs=qat_epochs))):
            row[label] = quant_row(simplified, data, cfg, out / name / method / label, seed)
            log.info("%s %s %s: %.4f, %d/%d exact", name, method, label, row[label]["accuracy"], row[label]["exact"],
                     row[label]["samples"])
        row["nnc_pruned"] = nnc_row(pruned, data, out / name / method / "nnc-pruned")
        row["nnc_simplified"] = nnc_row(simplified, data, out / name / method / "nnc-simplified")
        result["methods"][method] = row
    return result


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _delta(x: float, ref: float) -> str:
    return f"{100 * (x - ref):+.2f}"


def markdown(results: list[dict], mode: str) -> str:
    lines = [f"### bench_quant ({mode} mode): LeNet-5, test accuracy % (measured, full test split)", "",
             "| dataset | pruning | dense | pruned | nonzero params | simplified (params) | PTQ 8-bit | QAT 8-bit | "
             "QAT 4-bit | QONNX == Brevitas (exact / val samples) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for method, m in r["methods"].items():
            exact = ", ".join(f"{m[k]['exact']}/{m[k]['samples']}" for k in ("ptq8", "qat8", "qat4"))
            lines.append(
                f"| {r['dataset']} | {method} | {_pct(r['dense_accuracy'])} | {_pct(m['pruned_accuracy'])} | "
                f"{m['nonzero_parameters']}/{r['dense_parameters']} ({100 * m['nonzero_parameters'] / r['dense_parameters']:.1f}%) | "
                f"{_pct(m['simplified_accuracy'])} ({m['simplified_parameters']}) | "
                f"{_pct(m['ptq8']['accuracy'])} ({_delta(m['ptq8']['accuracy'], m['simplified_accuracy'])}) | "
                f"{_pct(m['qat8']['accuracy'])} ({_delta(m['qat8']['accuracy'], m['simplified_accuracy'])}) | "
                f"{_pct(m['qat4']['accuracy'])} ({_delta(m['qat4']['accuracy'], m['simplified_accuracy'])}) | {exact} |")
    lines += ["", "Deltas in parentheses: points vs the simplified float model (the quantizer's input). "
              "QONNX executed by qonnx.core.onnx_exec, compared with Brevitas on every validation sample."]
    nnc_rows = [(r, method, m) for r in results for method, m in r["methods"].items() if m.get("nnc_pruned")]
    if nnc_rows:
        lines += ["", "### NNC (NNCodec defaults, DeepCABAC): bitstream bytes (measured)", "",
                  "| dataset | pruning | float32 bytes (pruned) | NNC bytes pruned | ratio | decoded acc. | "
                  "float32 bytes (simplified) | NNC bytes simplified | ratio | decoded acc. |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r, method, m in nnc_rows:
            a, b = m["nnc_pruned"], m["nnc_simplified"]
            lines.append(f"| {r['dataset']} | {method} | {a['float32_bytes']} | {a['bitstream_bytes']} | "
                         f"{a['bitstream_bytes'] / a['float32_bytes']:.4f} | {_pct(a['decoded_accuracy'])} | "
                         f"{b['float32_bytes']} | {b['bitstream_bytes']} | {b['bitstream_bytes'] / b['float32_bytes']:.4f} | "
                         f"{_pct(b['decoded_accuracy'])} |")
    else:
        lines += ["", "NNC: not measured (the nnc extra is not installed; see potatura/quant/nnc.py)."]
    secs = [f"{r['dataset']}: dense {r['dense_seconds']:.0f} s, " + ", ".join(
        f"{meth} prune {m['prune_seconds']:.0f} s / PTQ8 {m['ptq8']['seconds']:.1f} s / QAT8 {m['qat8']['seconds']:.0f} s"
        for meth, m in r["methods"].items()) for r in results]
    lines += ["", "Wall times (measured, shared CPU): " + "; ".join(secs)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short training (~10 minutes on 2 cores)")
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "digits"], choices=["fashion-mnist", "digits"])
    parser.add_argument("--methods", nargs="+", default=["serene", "lobster"], choices=["serene", "lobster"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_quant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--serene-lambda", type=float, default=5e-3)
    parser.add_argument("--lobster-lambda", type=float, default=5e-3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("potatura.quant").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    lmbda = {"serene": args.serene_lambda, "lobster": args.lobster_lambda}
    results = [bench_dataset(d, mode, args.out, args.seed, lmbda, args.methods) for d in args.datasets]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results, mode)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Benchmark: hls4ml accelerators of dense vs pruned+simplified LeNet-5 (8-bit) on pynq-z2 and zcu104.

The HLSinf-style engine rows (hlsinf_rows, --no-hlsinf to skip) run the same recipe on LeNet-5 with
3x3 kernels (the engine's only window) and on ResNet-8 and VGG-small (--hlsinf-models; 32x32: the
images padded by 2 background pixels; --keep-pct percent of every layer's neurons kept, default 50):
simulated cycles, I_ITER*O_ITER and DDR bytes, estimated resources, csim exact count, dense/pruned ratios.

One run, on this machine:
1. LeNet-5 (20, 50 channels, 500 hidden) trained briefly on Fashion-MNIST 28x28 (Debian's
   dataset-fashion-mnist files), the "dense" model;
2. the "pruned" model: potatura's one-shot structured magnitude pruning (keep the largest-L1
   neurons: --keep, default conv1 6, conv2 12, fc1 64; the classifier is never pruned), then
   potatura.simplify removes the dead neurons, then a short fine-tune (not SeReNe: a stand-in with
   the same structure of result, trained in seconds);
3. both quantized by potatura.quant (8-bit weights and activations, power-of-two scales, int32
   biases), golden outputs from the QONNX reference;
4. per model and board: the fitter's choice (estimated DSP/BRAM18/LUT, estimated cycles), the
   hls4ml project, the C simulation (g++) on the golden samples vs the QONNX reference (exact-match
   rate: simulated), and the seconds to generate (convert + write) and to compile (measured).

Multipliers "at RF 1" use hls4ml's multiplier_limit: ceil(n_in*n_out/RF), zero weights not removed,
the same reuse factor for both models, so the ratio is what structured removal buys in every strategy.

Threads: torch.set_num_threads(2) for training; the C simulations and the simulator are single-threaded.

Run:   .venv/bin/python scripts/bench_hwgen.py               (about 5-15 minutes on 2 shared cores)
       .venv/bin/python scripts/bench_hwgen.py --quick       (fewer training samples and csim samples)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import tempfile
import time
from pathlib import Path

import torch

from potatura.boards.catalog import get_board
from potatura.config import DataConfig
from potatura.data import load_dataset
from potatura.errors import PotaturaError
from potatura.hwgen.hls4ml.fitter import FitError
from potatura.hwgen.hls4ml.lowering import hls_name, read_network
from potatura.hwgen.hls4ml.project import generate_project
from potatura.hwgen.stage import load_golden, qonnx_reference
from potatura.models import build_model
from potatura.quant.config import QuantConfig
from potatura.quant.pipeline import quantize
from potatura.simplify import simplify
from potatura.train.magnitude import keep_counts, prune_lowest_l1_
from potatura.train.masks import head_name


def train(model: torch.nn.Module, data, epochs: int, lr: float, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data.x_train))
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.eval()(x).argmax(1) == y).float().mean())


def multipliers_at_rf(net, rf: int) -> int:
    """hls4ml multiplier_limit summed over layers at one reuse factor (Resource formula: zeros kept)."""
    return sum(math.ceil(layer.n_weights / rf) for layer in net.compute_layers)


# The HLSinf-style rows' networks: build options (3x3 kernels: the engine's only window), learning rate,
# training epochs (None: --epochs, as the hls4ml rows; the BN networks need a few more) and the zero padding
# around the 28x28 images (ResNet-8 at 32x32: its global average is over 8x8 = 64 pixels, a power of two, the
# only averages exact in fixed point; 28x28 would average 49).
HLSINF_MODELS = {
    "lenet5": ({"kernel_size": 3}, 0.02, None, 0),
    "resnet8": ({}, 0.05, 5, 2),
    "vgg-small": ({}, 0.02, 5, 2),
}


def padded(data, pad: int):
    """The dataset with `pad` background pixels (raw 0, normalized) around every image."""
    if not pad:
        return data
    fill = -data.mean / data.std
    grow = lambda x: torch.nn.functional.pad(x, (pad,) * 4, value=fill)  # noqa: E731
    return dataclasses.replace(data, x_train=grow(data.x_train), x_val=grow(data.x_val), x_test=grow(data.x_test))


@torch.no_grad()
def zero_pruned_batchnorm_(model: torch.nn.Module, kept: dict[str, list[int]]) -> None:
    """A pruned conv's BatchNorm channel too (gamma and beta to zero): the neuron is filter + BN channel.

    Without it the removed channel still emits BN's shift, a constant that zero padding turns into a
    per-position bias map (which quant refuses). The BN of a conv is the next module registered after
    it in every zoo model (conv1/bn1, conv2/bn2, shortcut.0/shortcut.1, features.i/features.i+1).
    """
    mods = list(model.named_modules())
    for i, (name, module) in enumerate(mods[:-1]):
        bn = mods[i + 1][1]
        if name in kept and isinstance(module, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
            drop = torch.ones(bn.num_features, dtype=torch.bool)
            drop[kept[name]] = False
            bn.weight[drop] = 0.0
            bn.bias[drop] = 0.0


def pruned_counts(model: torch.nn.Module, model_name: str, args) -> dict[str, int]:
    """Neurons kept per layer: --keep for LeNet-5, else --keep-pct percent of every prunable layer."""
    if model_name == "lenet5":
        return dict(zip(("conv1", "conv2", "fc1"), (int(v) for v in args.keep.split(","))))
    return keep_counts(model, head_name(model), keep_pct=args.keep_pct)


def hlsinf_rows(base_data, args, out_root: Path) -> list[str]:
    """The HLSinf-style engine on dense vs pruned+simplified networks (--hlsinf-models), 8-bit.

    Per network, the same recipe as the hls4ml rows (train, keep the largest-L1 neurons, simplify,
    fine-tune, quantize); per board the engine the fitter chooses (estimated resources), the C simulation
    of the engine vs QONNX (simulated), and the simulator's cycles and DDR bytes per sample (simulated).
    """
    from potatura.hwgen.hlsinf.project import generate_project as generate_hlsinf
    from potatura.hwgen.reader import read_qonnx
    from potatura.sim.api import load_project

    boards = args.boards.split(",")
    qcfg = QuantConfig(calibration_samples=512, check_samples=args.samples)
    rows, notes = {}, []
    for model_name in args.hlsinf_models.split(","):
        options, lr, epochs, pad = HLSINF_MODELS[model_name]
        epochs = args.hlsinf_epochs or epochs or args.epochs
        data = padded(base_data, pad)
        shape = tuple(data.x_train.shape[1:])
        t0 = time.perf_counter()
        torch.manual_seed(0)
        dense = train(build_model(model_name, shape, data.num_classes, **options), data, epochs, lr=lr)
        pruned = build_model(model_name, shape, data.num_classes, **options)
        pruned.load_state_dict(dense.state_dict())
        counts = pruned_counts(pruned, model_name, args)
        zero_pruned_batchnorm_(pruned, prune_lowest_l1_(pruned, counts))
        simplified = train(simplify(pruned.eval(), data.x_train[:1]).model, data, 1, lr=0.01, seed=1)
        notes.append(f"{model_name}: kept neurons {counts}; training + pruning + simplify "
                     f"{time.perf_counter() - t0:.0f} s (measured)")
        for name, model in (("dense", dense), ("pruned+simplified", simplified)):
            where_q = out_root / "hlsinf" / model_name / name
            q = quantize(model, data, qcfg, where_q / "quant", seed=0)
            graph = read_qonnx(q.paths["qonnx"]).graph
            x, _ = load_golden(q.paths["golden"])
            reference = qonnx_reference(q.paths["qonnx"], x)
            for board_name in boards:
                where = where_q / board_name
                res = generate_hlsinf(graph, get_board(board_name), where, x=x, reference=reference)
                report = load_project(where).cycles()
                e, t = res.fit.engine, res.fit.totals
                rows[(model_name, name, board_name)] = dict(size=f"{shape[1]}x{shape[2]}",
                    weights=sum(p.numel() for p in model.parameters() if p.dim() > 1),
                    acc=q.summary["accuracy"]["test"]["quantized"],
                    engine=f"{e.cpi}x{e.cpo}", iters=res.fit.plan.iterations(), calls=len(res.fit.plan.calls),
                    cycles=report.latency_cycles, ddr=report.dma["ddr_bytes_per_sample"]["total"], dsp=t["dsp"],
                    bram=t["bram18"], lut=t["lut"], fits=res.fit.fits, exact=res.csim.exact_matches,
                    samples=res.csim.samples, us=report.seconds(report.latency_cycles) * 1e6)
    acc_label = "test acc 8-bit (quick)" if args.quick else "test acc 8-bit"
    lines = ["\n## HLSinf-style engine: dense vs pruned+simplified, 8-bit, Fashion-MNIST\n",
             f"| network | input | model | board | weights | {acc_label} | engine CPIxCPO | calls | I_ITER*O_ITER | "
             "cycles | us | DDR bytes | DSP | BRAM18 | LUT | fits | csim exact |",
             "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for (model_name, name, board_name), r in rows.items():
        lines.append(f"| {model_name} | {r['size']} | {name} | {board_name} | {r['weights']:,} | {r['acc']:.4f} | "
                     f"{r['engine']} | {r['calls']} | {r['iters']:,} | {r['cycles']:,} | {r['us']:.1f} | "
                     f"{r['ddr']:,} | {r['dsp']:,} | {r['bram']:,} | {r['lut']:,} | {'yes' if r['fits'] else 'no'} | "
                     f"{r['exact']}/{r['samples']} |")
    lines.append("")
    for model_name in args.hlsinf_models.split(","):
        for board_name in boards:
            a = rows.get((model_name, "dense", board_name))
            b = rows.get((model_name, "pruned+simplified", board_name))
            if a and b:
                lines.append(f"{model_name} on {board_name}: dense/pruned ratios (this run): cycles "
                             f"{a['cycles'] / b['cycles']:.2f}x, channel-group iterations "
                             f"{a['iters'] / b['iters']:.2f}x, DDR bytes {a['ddr'] / b['ddr']:.2f}x, weights "
                             f"{a['weights'] / b['weights']:.2f}x")
    lines += [""] + notes
    lines.append("\nLeNet-5 with 3x3 kernels (the engine's only window) at 28x28, pruned to --keep; ResNet-8 and "
                 "VGG-small at 32x32 (the 28x28 images with 2 background pixels around: ResNet-8's global average "
                 "pooling must be over a power of two, 8x8), pruned to --keep-pct percent of every layer but the "
                 "classifier (a conv's BN channel goes with its filter; a residual channel is removed only where "
                 "dead in every branch). Dense models trained --epochs (LeNet-5) or 5 epochs (--hlsinf-epochs "
                 "overrides), the pruned model fine-tuned 1 epoch at lr 0.01. Cycles and DDR bytes: simulated "
                 "(potatura.sim HLSinf model: engine schedule per call, DDR at the catalog bandwidth); "
                 "DSP/BRAM18/LUT: estimated (no synthesis ran); csim: simulated (the engine's C++ with g++ vs QONNX "
                 "execution); accuracies: measured. The engine is the same for both models on a board (the fitter "
                 "sizes it from the board), so the ratio is what pruning removes from the schedule (same CPI x CPO).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 training samples, 100 csim samples")
    parser.add_argument("--train-samples", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=300, help="golden samples run through each csim")
    parser.add_argument("--keep", default="6,12,64", help="neurons kept in conv1,conv2,fc1 by the pruned model")
    parser.add_argument("--boards", default="pynq-z2,zcu104")
    parser.add_argument("--out", type=Path, default=None, help="keep the projects here (default: a temp folder)")
    parser.add_argument("--no-hlsinf", action="store_true", help="skip the HLSinf-style engine rows")
    parser.add_argument("--hlsinf-models", default=",".join(HLSINF_MODELS),
                        help=f"networks of the HLSinf-style rows (of {', '.join(HLSINF_MODELS)})")
    parser.add_argument("--keep-pct", type=float, default=50.0,
                        help="percent of neurons kept in every prunable layer of ResNet-8 and VGG-small")
    parser.add_argument("--hlsinf-epochs", type=int, default=None,
                        help="training epochs of every HLSinf-style row's dense model (default: --epochs for "
                        "LeNet-5, 5 for ResNet-8 and VGG-small)")
    args = parser.parse_args()
    if args.quick:
        args.train_samples, args.samples = 2000, 100
    unknown = set(args.hlsinf_models.split(",")) - set(HLSINF_MODELS)
    if unknown:
        parser.error(f"--hlsinf-models: unknown {sorted(unknown)}; accepted: {', '.join(HLSINF_MODELS)}")
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.WARNING)

    data = load_dataset(DataConfig(dataset="fashion-mnist", limit_train=args.train_samples), seed=0)
    shape = tuple(data.x_train.shape[1:])
    t0 = time.perf_counter()
    torch.manual_seed(0)
    dense = train(build_model("lenet5", shape, data.num_classes), data, args.epochs, lr=0.02)
    k1, k2, h = (int(v) for v in args.keep.split(","))
    pruned = build_model("lenet5", shape, data.num_classes)
    pruned.load_state_dict(dense.state_dict())
    prune_lowest_l1_(pruned, {"conv1": k1, "conv2": k2, "fc1": h})
    simplified = simplify(pruned.eval(), data.x_train[:1]).model
    simplified = train(simplified, data, 1, lr=0.01, seed=1)
    train_seconds = time.perf_counter() - t0

    out_root = args.out or Path(tempfile.mkdtemp(prefix="bench_hwgen_"))
    qcfg = QuantConfig(calibration_samples=512, check_samples=args.samples)
    models = {}
    for name, model in (("dense", dense), ("pruned+simplified", simplified)):
        q = quantize(model, data, qcfg, out_root / name / "quant", seed=0)
        net = read_network(q.paths["qonnx"])
        x, _ = load_golden(q.paths["golden"])
        models[name] = dict(net=net, qonnx=q.paths["qonnx"], x=x, reference=qonnx_reference(q.paths["qonnx"], x),
                            float_acc=accuracy(model, data.x_test, data.y_test),
                            quant_acc=q.summary["accuracy"]["test"]["quantized"])

    rows = []
    for name, m in models.items():
        for board_name in args.boards.split(","):
            board = get_board(board_name)
            where = out_root / name / "hwgen" / board.name
            try:
                res = generate_project(m["net"], board, where, x_nchw=m["x"], reference=m["reference"])
            except FitError as exc:
                rows.append(dict(model=name, board=board.name, error=str(exc).splitlines()[0]))
                continue
            except PotaturaError as exc:
                rows.append(dict(model=name, board=board.name, error=f"{type(exc).__name__}: {exc}"))
                continue
            t = res.fit.totals
            rows.append(dict(model=name, board=board.name, rf=res.fit.reuse_factors(),
                             strategies={hls_name(f.layer): f.estimate.strategy for f in res.fit.layers
                                         if f.layer.has_weights},
                             mult=t["multipliers"], dsp=t["dsp"], bram=t["bram18"], lut=t["lut"], ff=t["ff"],
                             interval=res.fit.interval_cycles, latency=res.fit.latency_cycles,
                             exact=res.csim.exact_matches, samples=res.csim.samples,
                             maxdiff=res.csim.max_abs_difference,
                             gen=res.seconds.get("convert_write", 0.0), compile=res.seconds.get("compile", 0.0)))

    d, p = models["dense"]["net"], models["pruned+simplified"]["net"]
    print("# hwgen benchmark: dense vs pruned+simplified LeNet-5, 8-bit, Fashion-MNIST 28x28\n")
    print(f"training + pruning + simplify: {train_seconds:.0f} s (measured); projects in {out_root}\n")
    print("| model | weights | test acc float | test acc 8-bit | multipliers at RF 1 | at RF 4 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in models.items():
        net = m["net"]
        print(f"| {name} | {sum(layer.n_weights for layer in net.compute_layers):,} | {m['float_acc']:.4f} | "
              f"{m['quant_acc']:.4f} | {multipliers_at_rf(net, 1):,} | {multipliers_at_rf(net, 4):,} |")
    print(f"| dense / pruned | {sum(x.n_weights for x in d.compute_layers) / sum(x.n_weights for x in p.compute_layers):.1f}x"
          f" | | | {multipliers_at_rf(d, 1) / multipliers_at_rf(p, 1):.1f}x | "
          f"{multipliers_at_rf(d, 4) / multipliers_at_rf(p, 4):.1f}x |\n")
    print("| model | board | fits | multipliers | DSP | BRAM18 | LUT | FF | interval (cycles) | latency (cycles) | "
          "csim exact | max abs diff | generate s | compile s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['board']} | no | | | | | | | | | | | | ")
            continue
        print(f"| {r['model']} | {r['board']} | yes | {r['mult']:,} | {r['dsp']:,} | {r['bram']:,} | {r['lut']:,} | "
              f"{r['ff']:,} | {r['interval']:,} | {r['latency']:,} | {r['exact']}/{r['samples']} "
              f"({100 * r['exact'] / r['samples']:.0f}%) | {r['maxdiff']:g} | {r['gen']:.1f} | {r['compile']:.1f} |")
    by = {(r["model"], r["board"]): r for r in rows if "error" not in r}
    for board_name in args.boards.split(","):
        a, b = by.get(("dense", board_name)), by.get(("pruned+simplified", board_name))
        if a and b:
            print(f"\n{board_name}: pruned/dense ratios: LUT {b['lut'] / max(a['lut'], 1):.2f}, BRAM18 "
                  f"{b['bram'] / max(a['bram'], 1):.2f}, interval {b['interval'] / max(a['interval'], 1):.3f}, "
                  f"compile time {b['compile'] / max(a['compile'], 1e-9):.2f}")
    for r in rows:
        if "error" in r:
            print(f"\n{r['model']} on {r['board']}: {r['error']}")
        else:
            print(f"\n{r['model']} on {r['board']}: RF {r['rf']}, strategies {r['strategies']}")
    print("\nDSP/BRAM18/LUT/FF and multipliers: potatura's estimates (no synthesis ran); cycles: simulated "
          "(potatura.sim, the fitter's timing model); csim: simulated "
          "(hls4ml C simulation vs QONNX execution); seconds and accuracies: measured.")
    if not args.no_hlsinf:
        print("\n".join(hlsinf_rows(data, args, out_root)))


if __name__ == "__main__":
    main()

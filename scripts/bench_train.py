#!/usr/bin/env python
"""Benchmark of the pruning methods on LeNet-5: dense SGD, SeReNe (bounded, full), LOBSTER, and
one-shot structured magnitude pruning (the lowest-L1 neurons removed down to the per-layer neuron
counts SeReNe bounded reached, then fine-tuned for as many epochs as SeReNe ran).

Prints one markdown table per dataset: test error (measured on the whole test split), remaining
parameters %, remaining neurons per layer (conv1/conv2/fc1; the head's 10 outputs are never
pruned), and seconds per training epoch relative to plain SGD, measured in a separate timing
pass that alternates the methods on the same batches (the long runs' own epoch times are shown
too, but they include CPU contention and, for the schedule, the threshold searches).

    .venv/bin/python scripts/bench_train.py --quick      # digits + a Fashion-MNIST subset, ~10 min on 2 cores
    .venv/bin/python scripts/bench_train.py              # full mode: see FULL_MODE_NOTE below
    .venv/bin/python scripts/bench_train.py --datasets digits --jobs 2 --out bench-out/train
    .venv/bin/python scripts/bench_train.py --only-extras --datasets digits   # NEq and shrink rows only

NEq and shrink-during-training rows (--extras, default on; --only-extras skips the method table):
each group trains its runs side by side in one process, epoch by epoch in rotating order, so that
"s/epoch" of a run and of the same run without NEq (or without shrinking) are measured under the
same machine load; torch threads = --timing-threads.

Hyperparameters are the built-in presets (potatura/train/presets.py) unless the mode overrides
them (quick mode: fewer epochs on Fashion-MNIST, said in the table's title).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL_MODE_NOTE = ("Full mode trains on all 54,000 Fashion-MNIST training images with the presets (dense 30 epochs, "
                  "pruning rows 60). Measured on 2 shared CPU cores, 1 thread per run, two runs at a time: about 17 s "
                  "per epoch per SeReNe bounded run, 17-22 minutes for a 60-epoch pruning row (the preset's "
                  "shrink_every makes later epochs faster), 11 minutes for the dense row; SeReNe full costs about "
                  "7x an SGD epoch on CPU. `--rows` trains a subset (dense is always one). On one H200 GPU an earlier "
                  "version took 5.1 s per epoch per run with 7 runs sharing the GPU.")

ROWS = ("dense", "serene-bounded", "serene-paper", "serene-full", "lobster", "magnitude-oneshot")
ROW_TITLES = {
    "dense": "dense baseline (plain SGD)",
    "serene-bounded": "SeReNe bounded (the preset)",
    "serene-paper": "SeReNe bounded, the paper's form (parameter thresholds, relu(1 - S), every step)",
    "serene-full": "SeReNe full",
    "lobster": "LOBSTER",
    "magnitude-oneshot": "one-shot L1 structured + fine-tune",
}


def mode_settings(dataset: str, quick: bool) -> dict:
    """Data options and per-row TrainConfig overrides for a dataset in a mode."""
    if dataset == "digits":
        # Digits is small: quick and full mode are the same (the presets).
        return {"data": {"dataset": "digits"}, "rows": {}, "note": "all 1,797 digits: 1,294 train / 144 val / 359 test"}
    if quick:
        epochs, limit = 24, 5000
        # pwe 1: the few epochs of a quick run leave no room to wait for longer plateaus
        pruning = {"epochs": epochs, "finetune_epochs": 4, "pwe": 1, "lmbda": 5e-3}
        return {
            "data": {"dataset": dataset, "limit_train": limit},
            "rows": {"dense": {"epochs": epochs}, "serene-bounded": pruning, "serene-paper": pruning, "serene-full": pruning,
                     "lobster": pruning},
            "note": f"QUICK: {limit:,} of the 60,000 training images ({int(limit * 0.9):,} train / {int(limit * 0.1):,} "
                    f"val), {epochs} epochs per method, lambda 5e-3, pwe 1; test on all 10,000 test images",
        }
    return {"data": {"dataset": dataset}, "rows": {}, "note": "all 60,000 training images (54,000 train / 6,000 val), "
            "test on all 10,000 test images"}


def row_config(row: str, dataset: str, overrides: dict):
    from potatura.train.config import TrainConfig
    from potatura.train.presets import resolve_train_config

    method = {"dense": "none", "serene-bounded": "serene", "serene-paper": "serene", "serene-full": "serene",
              "lobster": "lobster", "magnitude-oneshot": "magnitude-oneshot"}[row]
    fields = {"method": method}
    if row == "serene-full":
        fields["sensitivity"] = "full"
    if row == "serene-paper":
        # The paper's SeReNe whatever the preset says (potatura/train/presets.py may choose variants).
        fields.update({"threshold": "parameters", "sensitivity_norm": "none", "sensitivity_every": 1})
    fields.update(overrides)
    cfg = TrainConfig(**fields)
    resolved, _ = resolve_train_config(cfg, "lenet5", dataset)
    # Pin the fine-tuning length the run will use, so that the config travels as plain values.
    return resolved.model_copy(update={"finetune_epochs": resolved.effective_finetune_epochs()})


def _load_data(data_opts: dict, device: str):
    # A plain namespace with DataConfig's defaults instead of potatura.config.DataConfig: the flow
    # schema imports every stage's package, and this script needs only data, models and train.
    from types import SimpleNamespace

    from potatura.data import load_dataset

    opts = {"dataset": "digits", "data_dir": None, "path": None, "val_fraction": 0.1, "test_fraction": 0.2,
            "normalize": True, "limit_train": None, **data_opts}
    data = load_dataset(SimpleNamespace(**opts), seed=0)
    if device != "cpu":
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            setattr(data, name, getattr(data, name).to(device))
    return data


def run_row(job: dict) -> dict:
    """Train one row in its own process; returns its numbers."""
    import torch

    torch.set_num_threads(job["threads"])
    from potatura.models import build_model
    from potatura.train.config import TrainConfig
    from potatura.train.loop import TrainLoop, evaluate, seed_everything
    from potatura.train.methods import build_pruning
    from potatura.train.stats import neurons_per_layer, sparsity_report

    data = _load_data(job["data"], job["device"])
    seed_everything(0)
    model = build_model("lenet5", data.input_shape, data.num_classes).to(job["device"])
    cfg = TrainConfig.model_validate(job["config"])
    if job["row"] == "magnitude-oneshot":
        state = torch.load(job["start_from"], map_location=job["device"], weights_only=True)
        model.load_state_dict(state)
    setup = build_pruning(cfg, model, data.input_shape)
    t0 = time.perf_counter()
    progress = Path(job["progress"]) if job.get("progress") else None

    def on_epoch(metrics: dict) -> None:
        # Partial results survive a run that is stopped at a deadline.
        if progress is not None:
            report = sparsity_report(model, data.input_shape, head=setup.head)
            progress.write_text(json.dumps({
                "row": job["row"], "dataset": job["dataset"], "epoch": metrics["epoch"],
                "seconds": time.perf_counter() - t0, "neurons": neurons_per_layer(report),
                "network": report["network"], "config": cfg.model_dump(mode="json"),
                "history": [{k: v for k, v in h.items() if isinstance(v, (int, float, str))}
                            for h in loop.history]}, default=str))

    loop = TrainLoop(model, data, cfg, seed=0, hooks=setup.hooks, evaluate_test=bool(job.get("evaluate_test")),
                     on_epoch=on_epoch)
    result = loop.run()
    wall = time.perf_counter() - t0
    test = evaluate(model, data.x_test, data.y_test)
    report = sparsity_report(model, data.input_shape, head=setup.head)
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{job['dataset']}-{job['row']}.pt"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)
    history = [{k: v for k, v in h.items() if isinstance(v, (int, float, str))} for h in result.history]
    return {
        "dataset": job["dataset"], "row": job["row"], "config": cfg.model_dump(mode="json"),
        "test_error_pct": 100.0 * (1.0 - test["accuracy"]), "test_loss": test["loss"],
        "parameters_pct": report["network"]["parameters_remaining_pct"],
        "neurons_pct": report["network"]["neurons_remaining_pct"],
        "neurons": neurons_per_layer(report), "macs_pct": report["network"]["macs_remaining_pct"],
        "epochs": result.epochs_run, "wall_seconds": wall,
        "train_seconds_per_epoch": statistics.mean(h["train_seconds"] for h in result.history) if result.history else 0.0,
        "rounds": len(setup.schedule.rounds) if setup.schedule else 0,
        "pruning_ended": setup.schedule.stop_reason if setup.schedule else None,
        "weights": str(weights), "history": history,
    }


def timing_pass(dataset: str, data_opts: dict, device: str, threads: int, batches: int, rounds: int,
                counts: Optional[dict], rows: tuple = ROWS) -> dict:
    """Seconds per training epoch of each method, from `batches` minibatches timed `rounds` times,
    the methods alternating so that CPU contention hits them alike. Minimum over rounds."""
    import torch

    torch.set_num_threads(threads)
    from potatura.models import build_model
    from potatura.train.loop import TrainLoop, seed_everything
    from potatura.train.methods import build_pruning

    data = _load_data(data_opts, device)
    per_epoch_batches = None
    methods = {}
    for row in rows:
        extra = {"keep_neurons": counts} if row == "magnitude-oneshot" else {}
        cfg = row_config(row, dataset, extra)
        per_epoch_batches = -(-len(data.y_train) // cfg.batch_size)
        n = min(len(data.y_train), batches * cfg.batch_size)
        subset = replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
        seed_everything(0)
        model = build_model("lenet5", data.input_shape, data.num_classes).to(device)
        setup = build_pruning(cfg, model, data.input_shape)
        loop = TrainLoop(model, subset, cfg, seed=0, hooks=setup.hooks)
        for h in loop.hooks:
            h.on_run_start(loop)
            h.on_train_start(loop)
        methods[row] = (loop, n // cfg.batch_size or 1)
    times = {row: [] for row in rows}
    order = list(methods)
    for r in range(rounds + 1):  # round 0 warms up
        order = order[1:] + order[:1]  # rotate: no method is always first after another
        for row in order:
            loop, nb = methods[row]
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loop.train_epoch(r)
            if device != "cpu":
                torch.cuda.synchronize()
            if r > 0:
                times[row].append((time.perf_counter() - t0) / nb)
    # The minimum over rounds: the run least disturbed by other processes on the machine.
    per_batch = {row: min(v) for row, v in times.items()}
    return {row: {"seconds_per_batch": s, "seconds_per_epoch": s * per_epoch_batches,
                  "ratio_to_sgd": s / per_batch["dense"]} for row, s in per_batch.items()}


def layer_counts(neurons: dict) -> str:
    return "/".join(str(v[0]) for k, v in neurons.items() if k != "fc2")


def table(dataset: str, note: str, results: dict, timing: dict, device: str) -> str:
    dense_err = results["dense"]["test_error_pct"]
    lines = [f"### LeNet-5 on {dataset} ({note}; device {device})", "",
             "| method | test error % | Δ error vs dense | params remaining % | neurons conv1/conv2/fc1 | "
             "neurons remaining % | epochs | threshold rounds | s/epoch (timing pass) | × plain SGD | "
             "s/epoch (in run) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    dense_neurons = layer_counts({k: [v[1], v[1]] for k, v in results["dense"]["neurons"].items()})
    for row in (r for r in ROWS if r in results):
        r = results[row]
        t = timing.get(row, {})
        lines.append(
            f"| {ROW_TITLES[row]} | {r['test_error_pct']:.2f} | {r['test_error_pct'] - dense_err:+.2f} | "
            f"{r['parameters_pct']:.2f} | {layer_counts(r['neurons'])} (of {dense_neurons}) | {r['neurons_pct']:.1f} | "
            f"{r['epochs']} | {r['rounds']} | {t.get('seconds_per_epoch', float('nan')):.2f} | "
            f"{t.get('ratio_to_sgd', float('nan')):.2f} | {r['train_seconds_per_epoch']:.2f} |")
    lines.append("")
    lines.append("Test error measured on the whole test split at the end of training; parameters and neurons "
                 "counted from the weights; s/epoch measured (timing pass: fastest of alternating rounds on the "
                 "same batches; in run: mean train time per epoch of the long run, CPU contention included).")
    return "\n".join(lines)


# name -> (method row, TrainConfig overrides); each group is trained side by side.
NEQ_GROUP = {
    "dense": ("dense", {}),
    "dense + NEq (paper velocity)": ("dense", {"neq": {"timing_batches": 0}}),
    "dense + NEq (code velocity)": ("dense", {"neq": {"velocity": "code", "timing_batches": 0}}),
    "dense + random freezing (NEq's fraction)": ("dense", {"neq": {"baseline": "random", "timing_batches": 0}}),
    "SeReNe bounded": ("serene-bounded", {"shrink_every": 0}),
    "SeReNe bounded + NEq": ("serene-bounded", {"shrink_every": 0, "neq": {"timing_batches": 0}}),
}
SHRINK_GROUP = {
    "one-shot L1 25% neurons, masked": ("magnitude-oneshot", {"target_neurons_pct": 25.0, "oneshot_epoch": 1}),
    "one-shot L1 25% neurons, shrink every epoch": ("magnitude-oneshot", {"target_neurons_pct": 25.0,
                                                                          "oneshot_epoch": 1, "shrink_every": 1}),
    "SeReNe bounded, masked": ("serene-bounded", {"shrink_every": 0}),
    "SeReNe bounded, shrink every 5 epochs": ("serene-bounded", {"shrink_every": 5}),
}


def side_by_side(dataset: str, data_opts: dict, device: str, threads: int, group: dict, overrides: dict) -> dict:
    """Train every run of `group` in this process, one epoch of each in turn (rotating order), and
    return per run: test error, s/epoch (training only, and whole epoch with the hooks), NEq and
    shrink figures, parameters and neurons left."""
    import torch

    torch.set_num_threads(threads)
    from potatura.models import build_model
    from potatura.train.loop import TrainLoop, evaluate, seed_everything
    from potatura.train.methods import build_pruning
    from potatura.train.stats import neurons_per_layer, sparsity_report

    data = _load_data(data_opts, device)
    runs = {}
    for name, (row, extra) in group.items():
        cfg = row_config(row, dataset, {**overrides.get(row, {}), **extra})
        seed_everything(0)
        model = build_model("lenet5", data.input_shape, data.num_classes).to(device)
        setup = build_pruning(cfg, model, data.input_shape, seed=0)
        loop = TrainLoop(model, data, cfg, seed=0, hooks=setup.hooks, evaluate_test=False)
        for h in loop.hooks:
            h.on_run_start(loop)
            h.on_train_start(loop)
        runs[name] = (loop, setup, cfg)
    order = list(runs)
    for epoch in range(1, max(cfg.epochs for _, _, cfg in runs.values()) + 1):
        order = order[1:] + order[:1]
        for name in order:
            loop, _, cfg = runs[name]
            if not loop.stop and loop.epoch < cfg.epochs:
                loop._run_epochs(epoch, None)
    out = {}
    for name, (loop, setup, cfg) in runs.items():
        for h in loop.hooks:
            h.on_run_end(loop)
        test = evaluate(loop.model, data.x_test, data.y_test)
        report = sparsity_report(loop.model, data.input_shape, head=setup.head)
        hist = loop.history
        out[name] = {
            "test_error_pct": 100.0 * (1.0 - test["accuracy"]), "epochs": len(hist),
            "train_seconds_per_epoch": statistics.mean(h["train_seconds"] for h in hist),
            "epoch_seconds": statistics.mean(h["epoch_seconds"] for h in hist),
            "neq_frozen_pct": statistics.mean(h.get("neq_frozen_pct", 0.0) for h in hist),
            "neq_flops_saved_pct": statistics.mean(h.get("neq_weight_grad_flops_saved_pct", 0.0) for h in hist),
            "shrink_parameters_last": next((h["shrink_parameters"] for h in reversed(hist) if "shrink_parameters" in h),
                                           None),
            "train_seconds_last5": statistics.mean(h["train_seconds"] for h in hist[-5:]),
            "parameters_pct": report["network"]["parameters_remaining_pct"],
            "neurons": neurons_per_layer(report),
        }
    return out


def neq_layer_timing(threads: int, rounds: int = 7) -> str:
    """Forward + backward of one LeNet-5 layer (Fashion-MNIST sizes, batch 100) with the plain backward
    and with NEq's weight-gradient skipping at 0/50/90% frozen outputs: where skipping pays."""
    import torch
    from torch import nn

    from potatura.train.neq import active_rows_forward

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def mean_ms(f, n=10):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n * 1e3

    lines = [f"### NEq weight-gradient skipping per layer (LeNet-5 layers at Fashion-MNIST sizes, batch 100, random "
             f"data, {threads} torch thread(s); ms per forward+backward, fastest of {rounds} interleaved rounds)", "",
             "| layer | plain | skipping, 0% frozen | 50% frozen | 90% frozen | × plain at 50% | × plain at 90% |",
             "|---|---|---|---|---|---|---|"]
    for name, layer, shape in (("conv1 1→20 5x5, 28x28 input (no input gradient)", nn.Conv2d(1, 20, 5), (100, 1, 28, 28)),
                               ("conv2 20→50 5x5, 12x12 input", nn.Conv2d(20, 50, 5), (100, 20, 12, 12)),
                               ("fc1 800→500", nn.Linear(800, 500), (100, 800))):
        x = torch.randn(*shape, requires_grad=not name.startswith("conv1"))
        upstream = torch.randn_like(layer(x))
        out = layer.weight.shape[0]

        def plain():
            layer.zero_grad()
            x.grad = None
            layer(x).backward(upstream)

        def skipping(frac):
            active = torch.arange(int(round(out * (1 - frac))))

            def run():
                layer.zero_grad()
                x.grad = None
                active_rows_forward(layer, x, active).backward(upstream)
            return run

        fns = {"plain": plain, 0: skipping(0.0), 50: skipping(0.5), 90: skipping(0.9)}
        for f in fns.values():
            mean_ms(f, 3)
        best = {k: min(mean_ms(f) for _ in range(1)) for k, f in fns.items()}
        for _ in range(rounds - 1):
            for k, f in fns.items():
                best[k] = min(best[k], mean_ms(f))
        lines.append(f"| {name} | {best['plain']:.2f} | {best[0]:.2f} | {best[50]:.2f} | {best[90]:.2f} | "
                     f"{best[50] / best['plain']:.2f} | {best[90] / best['plain']:.2f} |")
    lines += ["", "Measured wall time on this machine's CPU; the skipping path computes the input gradient with every "
              "filter and the weight/bias gradients of the active ones (train.neq.skip_min_frozen decides from which "
              "frozen fraction a layer uses it)."]
    return "\n".join(lines)


def extras_table(dataset: str, note: str, neq: dict, shrink: dict, threads: int) -> str:
    lines = [f"### NEq on LeNet-5, {dataset} ({note}; side by side in one process, {threads} torch thread(s))", "",
             "| run | test error % | mean frozen % | weight-grad FLOPs saved % (counted) | train s/epoch | "
             "× same run without NEq | s/epoch incl. NEq probe | epochs |", "|---|---|---|---|---|---|---|---|"]
    for name, r in neq.items():
        base = neq["SeReNe bounded" if name.startswith("SeReNe") else "dense"]
        lines.append(f"| {name} | {r['test_error_pct']:.2f} | {r['neq_frozen_pct']:.1f} | {r['neq_flops_saved_pct']:.1f} | "
                     f"{r['train_seconds_per_epoch']:.3f} | {r['train_seconds_per_epoch'] / base['train_seconds_per_epoch']:.2f} | "
                     f"{r['epoch_seconds']:.3f} | {r['epochs']} |")
    lines += ["", f"### Shrinking during training on LeNet-5, {dataset} ({note}; side by side, {threads} torch thread(s))", "",
              "| run | test error % | params remaining % | neurons conv1/conv2/fc1 | trained parameters at the end | "
              "train s/epoch (mean) | train s/epoch (last 5) | × masked (last 5) | epochs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in shrink.items():
        base = shrink[name.split(",")[0] + ", masked"]
        lines.append(f"| {name} | {r['test_error_pct']:.2f} | {r['parameters_pct']:.2f} | {layer_counts(r['neurons'])} | "
                     f"{r['shrink_parameters_last'] or '-'} | {r['train_seconds_per_epoch']:.3f} | "
                     f"{r['train_seconds_last5']:.3f} | {r['train_seconds_last5'] / base['train_seconds_last5']:.2f} | "
                     f"{r['epochs']} |")
    lines += ["", "Test error measured on the whole test split; frozen % and FLOPs counted; seconds measured (train "
              "s/epoch: the training pass only; NEq's per-epoch probe pass is in the next column). A shrunk run is "
              "expanded back to the architecture's shapes at the end, so its test error is that of its final model; "
              "its params remaining % is lower than the masked run's because the expanded model has the consumer "
              "columns of removed neurons at zero, which the masked model keeps non-zero (they multiply a zero "
              "output: same function)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits + a Fashion-MNIST subset, ~10 minutes on 2 cores")
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--jobs", type=int, default=1, help="rows trained in parallel processes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / jobs)")
    parser.add_argument("--timing-batches", type=int, default=20)
    parser.add_argument("--timing-rounds", type=int, default=5)
    parser.add_argument("--timing-threads", type=int, default=1,
                        help="torch threads of the timing pass (1: least sensitive to other processes)")
    parser.add_argument("--max-epochs", type=int, default=0, help="cap every row's epochs (a smoke run)")
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "train"))
    parser.add_argument("--no-extras", action="store_true", help="skip the NEq and shrink rows")
    parser.add_argument("--only-extras", action="store_true", help="only the NEq and shrink rows")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"method rows to train, comma-separated (dense is always one): {', '.join(ROWS)}")
    args = parser.parse_args(argv)
    rows = tuple(r for r in ROWS if r in {x.strip() for x in args.rows.split(",")} | {"dense"})
    unknown = {x.strip() for x in args.rows.split(",") if x.strip()} - set(ROWS)
    if unknown:
        parser.error(f"--rows: unknown row(s) {', '.join(sorted(unknown))}; known: {', '.join(ROWS)}")
    if "magnitude-oneshot" in rows and "serene-bounded" not in rows:
        parser.error("--rows: magnitude-oneshot prunes to serene-bounded's neuron counts: list serene-bounded too")
    if args.only_extras:
        return extras_main(args)
    threads = args.threads or max(1, (os.cpu_count() or 2) // max(1, args.jobs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tables = []
    all_results = {}
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    settings = {d: mode_settings(d, args.quick) for d in datasets}

    def job(dataset, row, extra=None, **kw):
        overrides = {**settings[dataset]["rows"].get(row, {}), **(extra or {})}
        cfg = row_config(row, dataset, overrides)
        if args.max_epochs and cfg.epochs > args.max_epochs:
            capped = {"epochs": args.max_epochs, "finetune_epochs": min(cfg.finetune_epochs, args.max_epochs // 4)}
            cfg = row_config(row, dataset, {**overrides, **capped})
        return {"dataset": dataset, "row": row, "data": settings[dataset]["data"], "config": cfg.model_dump(mode="json"),
                "device": args.device, "threads": threads, "out_dir": str(out), **kw}

    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        trained = [r for r in rows if r != "magnitude-oneshot"]
        first = {(d, row): pool.submit(run_row, job(d, row)) for d in datasets for row in trained}
        results = {d: {} for d in datasets}
        second = {}
        for d in datasets:
            for row in trained:
                results[d][row] = first[(d, row)].result()
                r = results[d][row]
                print(f"[{time.perf_counter() - started:6.0f} s] {d} {row}: error {r['test_error_pct']:.2f}% "
                      f"params {r['parameters_pct']:.2f}% neurons {layer_counts(r['neurons'])}", flush=True)
            if "magnitude-oneshot" not in rows:
                continue
            serene = results[d]["serene-bounded"]
            counts = {k: max(1, v[0]) for k, v in serene["neurons"].items() if k != "fc2"}
            dense_lr = results[d]["dense"]["config"]
            extra = {"keep_neurons": counts, "epochs": serene["epochs"], "oneshot_epoch": 0,
                     "lr": dense_lr["lr"], "lr_schedule": dense_lr["lr_schedule"], "momentum": dense_lr["momentum"]}
            second[d] = pool.submit(run_row, job(d, "magnitude-oneshot", extra, start_from=results[d]["dense"]["weights"]))
        for d in second:
            results[d]["magnitude-oneshot"] = second[d].result()
            r = results[d]["magnitude-oneshot"]
            print(f"[{time.perf_counter() - started:6.0f} s] {d} magnitude-oneshot: error {r['test_error_pct']:.2f}% "
                  f"params {r['parameters_pct']:.2f}% neurons {layer_counts(r['neurons'])}", flush=True)
    for d in datasets:
        # keep_neurons of the magnitude-oneshot row (which needs serene-bounded); unused without it
        counts = ({k: max(1, v[0]) for k, v in results[d]["serene-bounded"]["neurons"].items() if k != "fc2"}
                  if "magnitude-oneshot" in rows else None)
        timing = timing_pass(d, settings[d]["data"], args.device, args.timing_threads, args.timing_batches,
                             args.timing_rounds, counts, rows)
        all_results[d] = {"rows": results[d], "timing": timing, "note": settings[d]["note"]}
        tables.append(table(d, settings[d]["note"], results[d], timing, args.device))
    if not args.no_extras:
        for d in datasets:
            tables.append(_extras(d, settings[d], args))
    total = time.perf_counter() - started
    text = "\n\n".join(tables) + f"\n\nTotal wall time {total:.0f} s ({'quick' if args.quick else 'full'} mode, " \
           f"{args.jobs} job(s), {threads} thread(s) each, timing pass {args.timing_threads} thread(s), " \
           f"device {args.device}).\n"
    if not args.quick:
        text += FULL_MODE_NOTE + "\n"
    print()
    print(text)
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(all_results, indent=1, default=str))
    return 0


def _extras(dataset: str, setting: dict, args) -> str:
    neq = side_by_side(dataset, setting["data"], args.device, args.timing_threads, NEQ_GROUP, setting["rows"])
    shrink = side_by_side(dataset, setting["data"], args.device, args.timing_threads, SHRINK_GROUP, setting["rows"])
    return extras_table(dataset, setting["note"], neq, shrink, args.timing_threads) + "\n\n" + \
        neq_layer_timing(args.timing_threads)


def extras_main(args) -> int:
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    tables = [_extras(d, mode_settings(d, args.quick), args) for d in datasets]
    text = "\n\n".join(tables) + f"\n\nTotal wall time {time.perf_counter() - started:.0f} s " \
        f"({'quick' if args.quick else 'full'} mode, device {args.device}).\n"
    print(text)
    (out / "extras.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

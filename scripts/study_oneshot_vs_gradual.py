#!/usr/bin/env python
"""One-shot magnitude pruning vs gradual pruning (SeReNe, LOBSTER) at increasing sparsity on LeNet-5.

The PSP-entropy paper (Tartaglione et al., ICANN 2020) claims that gradual, regularize-and-threshold
pruning reaches higher sparsity than one-shot magnitude pruning, which fails at high compression,
and that gradual minima are sharp but generalize with high-entropy features. This script measures it:

    dense        plain SGD (the starting point of one-shot and the reference error)
    one-shot     global unstructured magnitude pruning of the dense model to the target % of
                 non-zero parameters, then fine-tuning with the mask (same epochs for every target)
    SeReNe       train.method serene with target_parameters_pct = the target (pruning stops there)
    LOBSTER      train.method lobster with the same target

For every (method, target): test error, the % of parameters actually left, mean PSP-entropy per
layer (potatura.train.psp; alive units only) and sharpness (mean loss rise under relative weight
noise alpha 0.05, 5 draws, on up to 2,000 training samples). One plot: test error, mean entropy
and sharpness against the remaining parameters % (log scale).

    .venv/bin/python scripts/study_oneshot_vs_gradual.py --quick   # digits, 3 targets, ~3 min, 1 thread
    .venv/bin/python scripts/study_oneshot_vs_gradual.py           # Fashion-MNIST when installed, else digits

Thread setting: torch 1 thread (OMP_NUM_THREADS=1) unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_data(dataset: str, limit_train):
    from potatura.data import load_dataset

    opts = {"dataset": dataset, "data_dir": None, "path": None, "val_fraction": 0.1, "test_fraction": 0.2,
            "normalize": True, "limit_train": limit_train}
    return load_dataset(SimpleNamespace(**opts), seed=0)


def fashion_available() -> bool:
    try:
        load_data("fashion-mnist", 100)
        return True
    except Exception:  # missing files: any of the data errors
        return False


def measure(model, data, head_excluded=True) -> dict:
    from potatura.train.loop import evaluate
    from potatura.train.psp import entropy_report, sharpness
    from potatura.train.stats import sparsity_report

    test = evaluate(model, data.x_test, data.y_test)
    ent = entropy_report(model, data.x_test, data.y_test, data.num_classes)
    n = min(2000, len(data.y_train))
    sharp = sharpness(model, data.x_train[:n], data.y_train[:n], alpha=0.05, trials=5, seed=0)
    net = sparsity_report(model, data.input_shape)["network"]
    return {"test_error_pct": 100 * (1 - test["accuracy"]), "parameters_pct": net["parameters_remaining_pct"],
            "neurons_pct": net["neurons_remaining_pct"],
            "entropy_bits": {k: v["mean_bits"] for k, v in ent["layers"].items()},
            "mean_entropy_bits": _mean([v["mean_bits"] for v in ent["layers"].values() if v["mean_bits"] is not None]),
            "sharpness": sharp["mean_increase"], "train_loss": sharp["loss"]}


def _mean(values):
    return sum(values) / len(values) if values else float("nan")


def train(data, cfg, model=None, hooks_extra=()):
    from potatura.models import build_model
    from potatura.train.loop import TrainLoop, seed_everything
    from potatura.train.methods import build_pruning

    if model is None:
        seed_everything(0)
        model = build_model("lenet5", data.input_shape, data.num_classes)
    setup = build_pruning(cfg, model, data.input_shape)
    result = TrainLoop(model, data, cfg, seed=0, hooks=[*setup.hooks, *hooks_extra], evaluate_test=False).run()
    return model, result, setup


def oneshot_unstructured(dense_state, data, target_pct: float, cfg):
    """Zero the smallest-|w| values of every Linear/Conv2d/BatchNorm parameter (one global threshold) so
    that target_pct % of the model's parameters stay non-zero, then fine-tune with the zeros masked."""
    import torch

    from potatura.models import build_model
    from potatura.train.loop import TrainHook
    from potatura.train.masks import ZeroMask, layer_parameters

    model = build_model("lenet5", data.input_shape, data.num_classes)
    model.load_state_dict(dense_state)
    params = layer_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    mags = torch.cat([p.detach().abs().flatten() for p in params.values()])
    other = total - mags.numel()  # parameters outside those layers (none in LeNet-5) stay
    drop = max(0, mags.numel() - max(0, int(round(total * target_pct / 100.0)) - other))
    threshold = float(mags.kthvalue(drop).values) if drop > 0 else 0.0
    if drop > 0:
        with torch.no_grad():  # <= : the kthvalue itself goes too
            for p in params.values():
                p.masked_fill_(p.abs() <= threshold, 0.0)
    mask = ZeroMask(params)
    mask.refresh()

    class KeepMask(TrainHook):
        def after_step(self, loop):
            mask.apply(loop.optimizer)

    model, _, _ = train(data, cfg, model=model, hooks_extra=[KeepMask()])
    return model


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for method, marker in (("one-shot", "o"), ("SeReNe", "s"), ("LOBSTER", "^")):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["parameters_pct"])
        if not pts:
            continue
        xs = [r["parameters_pct"] for r in pts]
        for ax, key in zip(axes, ("test_error_pct", "mean_entropy_bits", "sharpness")):
            ax.plot(xs, [r[key] for r in pts], marker=marker, label=method)
    dense = next(r for r in rows if r["method"] == "dense")
    for ax, key, label in zip(axes, ("test_error_pct", "mean_entropy_bits", "sharpness"),
                              ("test error %", "mean PSP entropy (bits, alive units)", "sharpness (loss rise)")):
        ax.axhline(dense[key], color="gray", linestyle="--", linewidth=1, label="dense")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.invert_xaxis()
        ax.set_xlabel("parameters remaining % (log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(rows, out, dataset, args, dense_cfg, finetune_epochs, gradual_over, data, started, final):
    """study.md, study.json (and the plot when final): written after every row, so that a long run
    can be watched and a stopped one keeps what it measured."""
    wall = time.perf_counter() - started
    mode = "QUICK" if args.quick else "full"
    title = f"LeNet-5 on {dataset}: one-shot magnitude vs gradual pruning ({mode})"
    if final:
        plot(rows, out / "oneshot_vs_gradual.png", title)
    lines = [f"### {title}" + ("" if final else " (PARTIAL: the run is still going or was stopped)"), "",
             "| method | target params % | params remaining % | neurons remaining % | test error % | "
             "mean PSP entropy (bits) conv1 / conv2 / fc1 | sharpness (loss rise, alpha 0.05) | pruning ended |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ent = " / ".join(f"{v:.2f}" if v is not None else "-" for v in r["entropy_bits"].values())
        lines.append(f"| {r['method']} | {r['target_pct']:g} | {r['parameters_pct']:.2f} | {r['neurons_pct']:.1f} | "
                     f"{r['test_error_pct']:.2f} | {ent} | {r['sharpness']:.4f} | {r.get('pruning_ended') or '-'} |")
    lines += ["", f"Measured (test split for error and entropy, {min(2000, len(data.y_train))} training samples for "
              f"sharpness); {mode} mode: dense {dense_cfg.epochs} epochs, one-shot fine-tunes {finetune_epochs} epochs, "
              f"gradual runs stop at the target or the budget ({gradual_over.get('epochs', 'the preset')} epochs; a "
              f"run that ended on its budget is reused for the lower targets). PSP entropy: at most 10 bits "
              f"(10 classes), alive units only. "
              f"Wall time {wall:.0f} s, torch {args.threads} thread(s), CPU.",
              f"Plot: {out / 'oneshot_vs_gradual.png'}" if final else "Plot: drawn when the run ends."]
    text = "\n".join(lines)
    if final:
        print()
        print(text)
    (out / "study.md").write_text(text + "\n")
    (out / "study.json").write_text(json.dumps({"title": title, "rows": rows, "final": final}, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits, targets 10/3/1.5%%, short dense and one-shot budgets (~3 min)")
    parser.add_argument("--dataset", default="auto", help="auto (Fashion-MNIST when installed, else digits) | digits | "
                        "fashion-mnist")
    parser.add_argument("--targets", default="", help="remaining parameters %% targets, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "study"))
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from OUT/study.json")
    args = parser.parse_args(argv)
    if args.replot:
        meta = json.loads((Path(args.out) / "study.json").read_text())
        plot(meta["rows"], Path(args.out) / "oneshot_vs_gradual.png", meta["title"])
        return 0

    import torch

    torch.set_num_threads(args.threads)
    from potatura.train.config import TrainConfig
    from potatura.train.presets import resolve_train_config

    dataset = args.dataset
    if dataset == "auto":
        dataset = "digits" if args.quick or not fashion_available() else "fashion-mnist"
    data = load_data(dataset, None)
    targets = [float(t) for t in args.targets.split(",") if t] or ([10.0, 3.0, 1.5] if args.quick
                                                                   else [20.0, 10.0, 5.0, 2.0, 1.0])
    if args.quick:
        dense_over = {"epochs": 15}
        gradual_over = {}  # the digits preset: 120 epochs, 10 of them fine-tuning
        finetune_epochs = 6
    else:
        dense_over, gradual_over, finetune_epochs = {}, {}, 10
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def cfg_for(method, **over):
        cfg = TrainConfig(method=method, **over)
        resolved, _ = resolve_train_config(cfg, "lenet5", dataset)
        return resolved.model_copy(update={"finetune_epochs": resolved.effective_finetune_epochs()})

    rows = []
    dense_cfg = cfg_for("none", **dense_over)
    dense, _, _ = train(data, dense_cfg)
    rows.append({"method": "dense", "target_pct": 100.0, **measure(dense, data)})
    print(f"[{time.perf_counter() - started:5.0f} s] dense: error {rows[-1]['test_error_pct']:.2f}%", flush=True)

    def partial():
        write_results(rows, out, dataset, args, dense_cfg, finetune_epochs, gradual_over, data, started, final=False)

    partial()
    dense_state = {k: v.clone() for k, v in dense.state_dict().items()}
    # Fine-tuning after the one-shot cut: the dense run's LR, constant, annealed by the cosine schedule.
    ft_cfg = dense_cfg.model_copy(update={"epochs": finetune_epochs, "lr_schedule": "cosine"})
    budget_ended: dict[str, dict] = {}
    for target in sorted(targets, reverse=True):
        model = oneshot_unstructured(dense_state, data, target, ft_cfg)
        rows.append({"method": "one-shot", "target_pct": target, **measure(model, data)})
        print(f"[{time.perf_counter() - started:5.0f} s] one-shot {target}%: error {rows[-1]['test_error_pct']:.2f}% "
              f"params {rows[-1]['parameters_pct']:.2f}%", flush=True)
        partial()
        for method, name in (("serene", "SeReNe"), ("lobster", "LOBSTER")):
            if name in budget_ended:
                # A run that ended on its epoch budget short of a higher target is the same run for a
                # lower one (same seed, the target never reached): not trained again.
                row = {**budget_ended[name], "target_pct": target}
            else:
                cfg = cfg_for(method, target_parameters_pct=target, **gradual_over)
                model, result, setup = train(data, cfg)
                row = {"method": name, "target_pct": target, "epochs": result.epochs_run,
                       "pruning_ended": setup.schedule.stop_reason, **measure(model, data)}
                if setup.schedule.stop_reason == "epoch budget":
                    budget_ended[name] = row
            rows.append(row)
            print(f"[{time.perf_counter() - started:5.0f} s] {name} {target}%: error {row['test_error_pct']:.2f}% "
                  f"params {row['parameters_pct']:.2f}% ({row['pruning_ended']})", flush=True)
            partial()
    write_results(rows, out, dataset, args, dense_cfg, finetune_epochs, gradual_over, data, started, final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

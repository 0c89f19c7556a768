"""The `train` stage: data -> zoo model -> trained (and, with a pruning method, pruned) model.

Outputs (under <run>/train/):
    model.pt         the zoo architecture with pruned weights at exactly zero (save_model_file + spec)
    metrics.json     one record per epoch: losses, accuracies, LR, remaining parameters/neurons/MACs %
    summary.json     final test accuracy, sparsity per layer and network, pruning rounds, timings
    sparsity.json    per-layer neurons, parameters and MACs (total and remaining)
    data_stats.json  normalization and shapes for later stages
    curves.png       the curves of metrics.json
    last.pt          the resume checkpoint (model, optimizer, LR scheduler, masks, plateau state)
"""

from __future__ import annotations

from potatura.artifacts import write_json
from potatura.data import load_dataset
from potatura.flow import Stage, StageContext
from potatura.models import build_model, load_model_file, save_model_file
from potatura.train.loop import TrainLoop, count_parameters, evaluate, seed_everything
from potatura.train.methods import build_pruning
from potatura.train.plots import plot_history
from potatura.train.presets import resolve_train_config
from potatura.train.stats import neurons_per_layer, sparsity_report

CURVE_KEYS = ("remaining_parameters_pct", "remaining_neurons_pct", "lr")


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    data = load_dataset(cfg.data, cfg.seed)
    write_json(ctx.path("data_stats.json"), data.stats())
    train_cfg, preset = resolve_train_config(cfg.train, cfg.model.name, cfg.data.dataset)
    seed_everything(cfg.seed)
    spec = {"name": cfg.model.name, "options": cfg.model.options,
            "input_shape": list(data.input_shape), "num_classes": data.num_classes}
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, **cfg.model.options)
    if train_cfg.checkpoint:
        start, _ = load_model_file(train_cfg.checkpoint)
        model.load_state_dict(start.state_dict())
    ctx.log.info("train: %s on %s (%s), %d parameters, %d/%d/%d train/val/test samples",
                 cfg.model.name, data.name, "x".join(map(str, data.input_shape)), count_parameters(model),
                 len(data.y_train), len(data.y_val), len(data.y_test))
    method = train_cfg.method + (f" ({train_cfg.sensitivity} sensitivity)" if train_cfg.method == "serene" else "")
    ctx.log.info("train: method %s, lambda %g, lr %g, %d epochs, batch %d, pwe %d, twt %g%s", method,
                 train_cfg.lmbda, train_cfg.lr, train_cfg.epochs, train_cfg.batch_size, train_cfg.pwe, train_cfg.twt,
                 f", preset {preset}" if preset else "")
    pruning = build_pruning(train_cfg, model, data.input_shape, log=ctx.log)
    epochs = train_cfg.epochs
    with ctx.progress.task("train", total=epochs) as bar:
        def on_epoch(m: dict) -> None:
            extra = ""
            if "remaining_neurons_pct" in m:
                extra = f" params {m['remaining_parameters_pct']:.1f}% neurons {m['remaining_neurons_pct']:.1f}%"
            bar(completed=m["epoch"], description=f"train epoch {m['epoch']}/{epochs} val acc {m['val_accuracy']:.3f}{extra}")

        loop = TrainLoop(model, data, train_cfg, seed=cfg.seed, checkpoint_dir=ctx.out_dir, log=ctx.log,
                         on_epoch=on_epoch, hooks=pruning.hooks)
        result = loop.run()
    test = evaluate(model, data.x_test, data.y_test)
    save_model_file(ctx.path("model.pt"), model, spec=spec,
                    extra={"method": train_cfg.method, "test_accuracy": test["accuracy"]})
    write_json(ctx.path("metrics.json"), result.history)
    sparsity = sparsity_report(model, data.input_shape, head=pruning.head)
    write_json(ctx.path("sparsity.json"), sparsity)
    net = sparsity["network"]
    train_seconds = [h["train_seconds"] for h in result.history]
    summary = {
        "model": cfg.model.name,
        "dataset": data.name,
        "method": train_cfg.method,
        "sensitivity": train_cfg.sensitivity if train_cfg.method == "serene" else None,
        "preset": preset,
        "hyperparameters": train_cfg.model_dump(mode="json"),
        "epochs": result.epochs_run,
        "resumed_from_epoch": result.resumed_from,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "parameters": net["parameters"],
        "nonzero_parameters": net["parameters_remaining"],
        "remaining_parameters_pct": net["parameters_remaining_pct"],
        "neurons": net["neurons"],
        "remaining_neurons": net["neurons_remaining"],
        "remaining_neurons_pct": net["neurons_remaining_pct"],
        "neurons_per_layer": neurons_per_layer(sparsity),
        "macs": net["macs"],
        "macs_remaining": net["macs_remaining"],
        "layers": sparsity["layers"],
        "seconds_per_epoch": (sum(h["epoch_seconds"] for h in result.history) / len(result.history)) if result.history else None,
        "train_seconds_per_epoch": (sum(train_seconds) / len(train_seconds)) if train_seconds else None,
        "measured": "test accuracy measured on the held-out test split; neurons, parameters and MACs counted "
                    "from the weights (MACs per input sample); seconds measured wall time",
    }
    if pruning.schedule is not None:
        summary["pruning_rounds"] = pruning.schedule.rounds
        summary["pruning_ended"] = pruning.schedule.stop_reason
    if pruning.oneshot is not None:
        summary["kept_neurons"] = pruning.oneshot.kept
    write_json(ctx.path("summary.json"), summary)
    outputs = {"model": ctx.path("model.pt"), "metrics": ctx.path("metrics.json"),
               "summary": ctx.path("summary.json"), "data_stats": ctx.path("data_stats.json"),
               "sparsity": ctx.path("sparsity.json")}
    if result.history:
        outputs["curves"] = plot_history(result.history, ctx.path("curves.png"), extra_keys=CURVE_KEYS)
    ctx.log.info("train: test accuracy %.2f%% (measured); %.2f%% parameters, %d/%d neurons (%.1f%%) remain",
                 100 * test["accuracy"], net["parameters_remaining_pct"], net["neurons_remaining"], net["neurons"],
                 net["neurons_remaining_pct"])
    return outputs


def headline(stage_dir) -> str | None:
    """One line for the end-of-run report, from summary.json."""
    from potatura.artifacts import read_json

    path = stage_dir / "summary.json"
    if not path.is_file():
        return None
    s = read_json(path)
    line = f"{s['model']} on {s['dataset']}: test accuracy {100 * s['test_accuracy']:.2f}% (measured)"
    if "remaining_neurons" in s:
        line += (f"; {s['method']}: {s['remaining_parameters_pct']:.1f}% of parameters and "
                 f"{s['remaining_neurons']}/{s['neurons']} neurons remain (counted)")
    return line


STAGE = Stage(
    name="train",
    run=run,
    config_sections=("data", "model", "train"),
    description="train a zoo model on the dataset (with pruning when train.method says so)",
    headline=headline,
)

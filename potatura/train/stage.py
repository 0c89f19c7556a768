"""The `train` stage: data -> zoo model -> trained (and, with a pruning method, pruned) model.

Outputs (under <run>/train/):
    model.pt         the zoo architecture with pruned weights at exactly zero (save_model_file + spec)
    metrics.json     one record per epoch: losses, accuracies, LR, remaining parameters/neurons/MACs %
                     (rewritten after every epoch, curves.png every 30 s, so a long run can be watched)
    summary.json     final test accuracy, sparsity per layer and network, pruning rounds, timings
    sparsity.json    per-layer neurons, parameters and MACs (total and remaining)
    data_stats.json  normalization and shapes for later stages
    curves.png       the curves of metrics.json
    last.pt          the resume checkpoint (model, optimizer, LR scheduler, masks, plateau state)
"""

from __future__ import annotations

import time

from potatura import formats
from potatura.artifacts import write_json
from potatura.flow import Output, Stage, StageContext

CURVE_KEYS = ("remaining_parameters_pct", "remaining_neurons_pct", "lr")
CURVES_EVERY_SECONDS = 30.0


def run(ctx: StageContext) -> dict:
    # Imported here: a cached re-run reads the Stage record only and must not pay for torch.
    from potatura.data import load_dataset
    from potatura.models import build_model, load_model_file, save_model_file
    from potatura.train.loop import TrainLoop, count_parameters, evaluate, seed_everything
    from potatura.train.methods import build_pruning
    from potatura.train.plots import plot_history
    from potatura.train.presets import resolve_train_config
    from potatura.train.stats import neurons_per_layer, sparsity_report

    cfg = ctx.config
    data = load_dataset(cfg.data, cfg.seed)
    for note in data.notes:
        ctx.log.warning("data: %s", note)
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
    ctx.log.info("train: %s, lr %g, %d epochs, batch %d%s", method_description(train_cfg), train_cfg.lr,
                 train_cfg.epochs, train_cfg.batch_size, f", preset {preset}" if preset else "")
    pruning = build_pruning(train_cfg, model, data.input_shape, log=ctx.log, seed=cfg.seed)
    epochs = train_cfg.epochs
    last_plot = [time.monotonic()]
    with ctx.progress.task("train", total=epochs) as bar:
        def on_epoch(m: dict) -> None:
            extra = ""
            if "remaining_neurons_pct" in m:
                extra = f" params {m['remaining_parameters_pct']:.1f}% neurons {m['remaining_neurons_pct']:.1f}%"
            bar(completed=m["epoch"], description=f"train epoch {m['epoch']}/{epochs} val acc {m['val_accuracy']:.3f}{extra}")
            # Written during the run, so that a long run can be watched: metrics.json every epoch, the
            # plot (about 0.5 s to draw) at most every CURVES_EVERY_SECONDS; both again at the end.
            write_json(ctx.path("metrics.json"), loop.history)
            if time.monotonic() - last_plot[0] >= CURVES_EVERY_SECONDS:
                plot_history(loop.history, ctx.path("curves.png"), extra_keys=CURVE_KEYS)
                last_plot[0] = time.monotonic()

        loop = TrainLoop(model, data, train_cfg, seed=cfg.seed, checkpoint_dir=ctx.out_dir, log=ctx.log,
                         on_epoch=on_epoch, hooks=[*pruning.hooks, _ResumeProgress(bar, epochs)])
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
        # finetune_epochs as it ran: a preset's value is capped at a quarter of a shorter budget.
        "hyperparameters": {**train_cfg.model_dump(mode="json"),
                            "finetune_epochs": train_cfg.effective_finetune_epochs()},
        "finetune_epochs_run": sum(1 for h in result.history if h.get("phase") == "finetune"),
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
    if pruning.neq is not None:
        summary["neq"] = neq_summary(result.history)
    if pruning.shrink is not None:
        summary["shrink"] = {"every_epochs": train_cfg.shrink_every, "events": pruning.shrink.events,
                             "note": "dead neurons physically removed during training; model.pt is expanded "
                                     "back to the architecture's shapes (removed neurons at zero)"}
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


def method_description(cfg) -> str:
    """The method and only the hyperparameters that apply to it (a dense run has no lambda/pwe/twt)."""
    if cfg.method == "none":
        text = "method none (plain SGD)"
    elif cfg.method == "magnitude-oneshot":
        keep = cfg.keep_neurons or f"{cfg.target_neurons_pct:g}% of each layer"
        text = f"method magnitude-oneshot (keep {keep}, at epoch {cfg.oneshot_epoch})"
    else:
        sens = f" ({cfg.sensitivity} sensitivity)" if cfg.method == "serene" else ""
        text = f"method {cfg.method}{sens}, lambda {cfg.lmbda:g}, pwe {cfg.pwe}, twt {cfg.twt:g}"
        if cfg.threshold != "parameters":
            text += f", threshold {cfg.threshold} (neuron share {cfg.neuron_share:g})"
        if cfg.method == "serene" and cfg.sensitivity_norm != "none":
            text += f", sensitivity normalized {cfg.sensitivity_norm}"
        if cfg.method == "serene" and cfg.sensitivity_every > 1:
            text += f", sensitivity every {cfg.sensitivity_every} steps"
    if cfg.neq is not None:
        text += f", NEq eps {cfg.neq.eps:g} mu {cfg.neq.mu:g} ({cfg.neq.velocity} velocity, {cfg.neq.baseline})"
    if cfg.shrink_every:
        text += f", shrink every {cfg.shrink_every} epochs"
    return text


def neq_summary(history: list[dict]) -> dict:
    """Mean frozen %, weight-gradient FLOPs saved (counted) and seconds saved (measured) over the run."""
    rows = [h for h in history if "neq_frozen_pct" in h]
    n = max(1, len(rows))
    return {
        "mean_frozen_pct": sum(h["neq_frozen_pct"] for h in rows) / n,
        "weight_grad_flops_saved": sum(h["neq_weight_grad_flops_saved"] for h in rows),
        "mean_weight_grad_flops_saved_pct": sum(h["neq_weight_grad_flops_saved_pct"] for h in rows) / n,
        "seconds_saved": sum(h["neq_seconds_saved"] for h in rows),
        "measured": "frozen % and FLOPs counted; seconds saved measured on neq.timing_batches batches per epoch "
                    "(forward+backward with and without the gradient skipping), scaled to the epoch",
    }


def _ResumeProgress(bar, epochs: int):  # noqa: N802 (made like a class; TrainHook is imported only when training)
    """A hook that moves the progress bar to the resumed epoch (a resumed run otherwise shows 0/N
    until an epoch ends)."""
    from potatura.train.loop import TrainHook

    class ResumeProgress(TrainHook):
        def on_run_start(self, loop) -> None:
            if loop.epoch:
                bar(completed=loop.epoch, description=f"train resumed after epoch {loop.epoch}/{epochs}")

    return ResumeProgress()


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
    outputs=(Output("model", formats.MODEL, "model.pt"), Output("metrics", formats.JSON, "metrics.json"),
             Output("summary", formats.JSON, "summary.json"), Output("data_stats", formats.JSON, "data_stats.json"),
             Output("sparsity", formats.JSON, "sparsity.json"), Output("curves", formats.PNG, "curves.png", optional=True)),
)

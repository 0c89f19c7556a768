"""The `train` stage: data -> zoo model -> trained (and, with a pruning method, pruned) model."""

from __future__ import annotations

from potatura.artifacts import write_json
from potatura.data import load_dataset
from potatura.flow import Stage, StageContext
from potatura.models import build_model, load_model_file, save_model_file
from potatura.train.loop import TrainLoop, count_parameters, evaluate, seed_everything
from potatura.train.plots import plot_history


def run(ctx: StageContext) -> dict:
    cfg = ctx.config
    data = load_dataset(cfg.data, cfg.seed)
    write_json(ctx.path("data_stats.json"), data.stats())
    seed_everything(cfg.seed)
    spec = {"name": cfg.model.name, "options": cfg.model.options,
            "input_shape": list(data.input_shape), "num_classes": data.num_classes}
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, **cfg.model.options)
    if cfg.train.checkpoint:
        start, _ = load_model_file(cfg.train.checkpoint)
        model.load_state_dict(start.state_dict())
    ctx.log.info("train: %s on %s (%s), %d parameters, %d/%d/%d train/val/test samples",
                 cfg.model.name, data.name, "x".join(map(str, data.input_shape)), count_parameters(model),
                 len(data.y_train), len(data.y_val), len(data.y_test))
    epochs = cfg.train.epochs
    with ctx.progress.task("train", total=epochs) as bar:
        def on_epoch(m: dict) -> None:
            bar(completed=m["epoch"], description=f"train epoch {m['epoch']}/{epochs} val acc {m['val_accuracy']:.3f}")

        loop = TrainLoop(model, data, cfg.train, seed=cfg.seed, checkpoint_dir=ctx.out_dir, log=ctx.log,
                         on_epoch=on_epoch)
        result = loop.run()
    test = evaluate(model, data.x_test, data.y_test)
    save_model_file(ctx.path("model.pt"), model, spec=spec)
    write_json(ctx.path("metrics.json"), result.history)
    summary = {
        "model": cfg.model.name,
        "dataset": data.name,
        "epochs": result.epochs_run,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "parameters": count_parameters(model),
        "nonzero_parameters": count_parameters(model, nonzero=True),
        "seconds_per_epoch": (sum(h["epoch_seconds"] for h in result.history) / len(result.history)) if result.history else None,
        "measured": "test accuracy measured on the held-out test split",
    }
    write_json(ctx.path("summary.json"), summary)
    outputs = {"model": ctx.path("model.pt"), "metrics": ctx.path("metrics.json"),
               "summary": ctx.path("summary.json"), "data_stats": ctx.path("data_stats.json")}
    if result.history:
        outputs["curves"] = plot_history(result.history, ctx.path("curves.png"))
    return outputs


STAGE = Stage(
    name="train",
    run=run,
    config_sections=("data", "model", "train"),
    description="train a zoo model on the dataset (with pruning when train.method says so)",
)

"""Training curves as PNG (matplotlib, Agg backend: no display needed).

Remaining parameters % is drawn on a log scale (the interesting part is 10% -> 1%); a dashed
vertical line marks the epoch where pruning ended (the last epoch of phase "prune" before
fine-tuning, or a one-shot pruning epoch).
"""

from __future__ import annotations

from pathlib import Path

from potatura.artifacts import atomic_path


LOG_SCALE_KEYS = ("remaining_parameters_pct",)


def pruning_end_epoch(history: list[dict]) -> int | None:
    """The epoch where pruning ended: the last "prune" epoch followed by fine-tuning, or the epoch a
    one-shot pruning happened (metrics key "pruned"); None when neither is in the history."""
    for before, after in zip(history, history[1:]):
        if before.get("phase") == "prune" and after.get("phase") in ("finetune", "done"):
            return int(before["epoch"])
    for h in history:
        if "pruned" in h:
            return int(h["epoch"])
    return None


def plot_history(history: list[dict], path: Path, extra_keys: tuple[str, ...] = ()) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    panels = [("loss", ("train_loss", "val_loss", "test_loss")), ("accuracy", ("train_accuracy", "val_accuracy", "test_accuracy"))]
    panels += [(k, (k,)) for k in extra_keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    end = pruning_end_epoch(history)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            ys = [h.get(k) for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, marker=".", label=k)
        if title in LOG_SCALE_KEYS and any((h.get(title) or 0) > 0 for h in history):
            ax.set_yscale("log")
        if end is not None:
            ax.axvline(end, color="gray", linestyle="--", linewidth=1, label=f"pruning ends (epoch {end})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path

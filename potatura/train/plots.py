"""Training curves as PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from potatura.artifacts import atomic_path


def plot_history(history: list[dict], path: Path, extra_keys: tuple[str, ...] = ()) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    panels = [("loss", ("train_loss", "val_loss", "test_loss")), ("accuracy", ("train_accuracy", "val_accuracy", "test_accuracy"))]
    panels += [(k, (k,)) for k in extra_keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            ys = [h.get(k) for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, marker=".", label=k)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path

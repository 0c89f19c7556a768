"""PSP-entropy and sharpness: analysis of trained or pruned models (Tartaglione, Bragagnolo, Grangetto,
ICANN 2020; arXiv 2004.14765; docs/algorithms.md section 5).

The post-synaptic potential (PSP) of a unit is the output of its Conv2d/Linear before BatchNorm and
activation; a unit is one output of a Linear, one (channel, position) of a Conv2d. Over a dataset,
for every unit i and class c:

    p_ic = fraction of the class-c samples with PSP_i > 0, clamped to [1e-4, 0.9999]
    H_i  = sum_c [ -p_ic log2 p_ic - (1 - p_ic) log2 (1 - p_ic) ]        bits, in [0, C]

A unit whose PSP sign never depends on the class has H ~ 0 (always on or always off); one on for
half of every class has H = C. Units of pruned neurons (all-zero weights: a constant PSP) are left
out of the histograms and counted separately. The classifier head is not analysed.

Sharpness: the mean increase of the loss when every parameter is multiplied by (1 + alpha * n),
n ~ N(0, 1) per value (a relative perturbation: pruned zeros stay zero, so a pruned model is
perturbed within its own structure), over `trials` draws, on the given samples.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from potatura.train.masks import alive_neurons, head_name, neuron_layers

P_MIN, P_MAX = 1e-4, 0.9999


def binary_entropy_bits(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(P_MIN, P_MAX).double()
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


@torch.no_grad()
def psp_positive_fractions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                           layers: Optional[list[tuple[str, nn.Module]]] = None,
                           batch_size: int = 512) -> dict[str, torch.Tensor]:
    """name -> [num_classes, units]: fraction of each class's samples with PSP > 0, per unit
    (units = out_features of a Linear, out_channels * H * W of a Conv2d, channel-major)."""
    if layers is None:
        head = head_name(model)
        layers = [(n, m) for n, m in neuron_layers(model) if n != head]
    positives: dict[str, torch.Tensor] = {}
    current: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: current.__setitem__(n, o)) for n, m in layers]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(y), batch_size):
            current.clear()
            model(x[start:start + batch_size])
            onehot = nn.functional.one_hot(y[start:start + batch_size], num_classes).double()  # [B, C]
            for name, _ in layers:
                on = current[name].flatten(1).gt(0).double()  # [B, units]
                counts = onehot.t() @ on
                positives[name] = counts if name not in positives else positives[name] + counts
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    per_class = torch.bincount(y, minlength=num_classes).double().clamp_min(1).unsqueeze(1)
    return {name: counts / per_class for name, counts in positives.items()}


def psp_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                batch_size: int = 512) -> dict[str, dict]:
    """name -> {"entropy": [units] bits, "alive": bool [units]} for every Conv2d/Linear but the head."""
    head = head_name(model)
    layers = [(n, m) for n, m in neuron_layers(model) if n != head]
    fractions = psp_positive_fractions(model, x, y, num_classes, layers, batch_size)
    out = {}
    for name, module in layers:
        entropy = binary_entropy_bits(fractions[name]).sum(0)
        units = entropy.numel()
        alive = alive_neurons(module)
        per_unit = alive.repeat_interleave(units // alive.numel())
        out[name] = {"entropy": entropy, "alive": per_unit}
    return out


@torch.no_grad()
def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float = 0.05, trials: int = 10,
              seed: int = 0, batch_size: int = 1024) -> dict:
    """Loss increase under relative random weight perturbations (see the module docstring)."""
    def loss_of(m: nn.Module) -> float:
        total = 0.0
        for i in range(0, len(y), batch_size):
            total += nn.functional.cross_entropy(m(x[i:i + batch_size]), y[i:i + batch_size], reduction="sum").item()
        return total / max(1, len(y))

    work = copy.deepcopy(model).eval()
    base = loss_of(work)
    original = [p.detach().clone() for p in work.parameters()]
    gen = torch.Generator().manual_seed(seed)
    rises = []
    for _ in range(trials):
        for p, w in zip(work.parameters(), original):
            noise = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            p.copy_(w * (1 + alpha * noise))
        rises.append(loss_of(work) - base)
    return {"loss": base, "alpha": alpha, "trials": trials, "mean_increase": sum(rises) / len(rises),
            "max_increase": max(rises), "increases": rises}


def entropy_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, bins: int = 20) -> dict:
    """Per layer: units analysed, pruned units left out, mean/median entropy, and a histogram over [0, C]."""
    layers = {}
    for name, r in psp_entropy(model, x, y, num_classes).items():
        h = r["entropy"][r["alive"]]
        hist = torch.histc(h.float(), bins=bins, min=0.0, max=float(num_classes)) if h.numel() else torch.zeros(bins)
        layers[name] = {
            "units": int(h.numel()),
            "pruned_units": int((~r["alive"]).sum()),
            "mean_bits": float(h.mean()) if h.numel() else None,
            "median_bits": float(h.median()) if h.numel() else None,
            "histogram": [int(v) for v in hist.tolist()],
            "histogram_range_bits": [0.0, float(num_classes)],
        }
    return {"layers": layers, "max_bits": num_classes,
            "note": "PSP-entropy per unit over the analysed split (measured); pruned units are not in the histograms"}


def plot_entropy(report: dict, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from potatura.artifacts import atomic_path

    layers = report["entropy"]["layers"]
    fig, axes = plt.subplots(1, max(1, len(layers)), figsize=(3.6 * max(1, len(layers)), 3.2), squeeze=False)
    for ax, (name, r) in zip(axes[0], layers.items()):
        lo, hi = r["histogram_range_bits"]
        width = (hi - lo) / len(r["histogram"])
        ax.bar([lo + (i + 0.5) * width for i in range(len(r["histogram"]))], r["histogram"], width=width)
        ax.set_title(f"{name} ({r['units']} units)", fontsize=9)
        ax.set_xlabel("PSP entropy (bits)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def analyze_run(run_dir: Path, split: str = "test", alpha: float = 0.05, trials: int = 10,
                max_samples: Optional[int] = None) -> dict:
    """PSP-entropy and sharpness of RUN_DIR/train/model.pt on the run's own data; writes
    RUN_DIR/analyze/{analysis.json, entropy.png}. Returns the report."""
    from potatura.artifacts import write_json
    from potatura.config import load_config
    from potatura.data import load_dataset
    from potatura.errors import ConfigError
    from potatura.models import load_model_file

    run_dir = Path(run_dir)
    config_path, model_path = run_dir / "config.yaml", run_dir / "train" / "model.pt"
    for path in (config_path, model_path):
        if not path.is_file():
            raise ConfigError(f"analyze: {path} not found (RUN_DIR must be a run directory whose train stage ran)")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"analyze: split must be train, val or test, got {split!r}")
    cfg = load_config(config_path)
    data = load_dataset(cfg.data, cfg.seed)
    model, _ = load_model_file(model_path)
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    report = {"model": str(model_path), "split": split, "samples": int(len(y)),
              "entropy": entropy_report(model, x, y, data.num_classes),
              "sharpness": sharpness(model, x, y, alpha=alpha, trials=trials, seed=cfg.seed),
              "measured": "entropies and loss increases measured on the split named"}
    out = run_dir / "analyze"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "analysis.json", report)
    plot_entropy(report, out / "entropy.png", title=f"{run_dir.name}: PSP entropy ({split})")
    return report

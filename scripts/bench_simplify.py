#!/usr/bin/env python
"""Benchmark: potatura simplify vs torch-simplify 1.1.4 vs Torch-Pruning 1.6.1, side by side.

Every method gets an identical masked model: 50% of the output neurons of each Conv2d and hidden
Linear zeroed at random (whole rows/filters), BatchNorm kept with random statistics, biases
non-zero. Measured in one run, on this machine's CPU, batch 1:

- latency median and p90 (ms) at 1 and 2 torch threads, the methods interleaved run by run so
  that load from other processes hits them alike;
- parameters (bias maps included: both potatura's BiasMap and torch-simplify's `bf` are
  parameters) and the bias-map values among them;
- max |difference| of logits against the masked model on 64 standard-normal inputs, and argmax
  agreement;
- seconds to simplify (torch-simplify: simplify(); Torch-Pruning: DependencyGraph + pruning);
- residual-stream width after simplification (ResNet-20: channels at the end of each stage).

Torch-Pruning is given the same channel indices. "TP per-layer" prunes each layer's own dead
indices through its DependencyGraph (what a user who prunes layer by layer gets: the residual
group takes every member's indices); "TP group-dead" prunes only indices dead in every
producer of a group (ResNet only: on the other models it is the same as per-layer).

Run:   .venv/bin/python scripts/bench_simplify.py            (all four models, ~5-10 min)
       .venv/bin/python scripts/bench_simplify.py --quick    (fewer repetitions, no 224x224 net)
       .venv/bin/python scripts/bench_simplify.py --simplify-time --previous e4eb4fe
              (only: seconds to simplify a 138M-parameter VGG-16, this tree vs a git revision, 1 thread)
Peers (benchmark only, not potatura dependencies):
       .venv/bin/pip install --no-deps torch-simplify==1.1.4 torch-pruning==1.6.1
torch-simplify imports torchvision only for three isinstance checks; torchvision does not import
here, so this script installs a stub module in sys.modules with those three names.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import types
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from potatura.models import build_model
from potatura.simplify import BiasMap, simplify

INSTALL_HINT = ".venv/bin/pip install --no-deps torch-simplify==1.1.4 torch-pruning==1.6.1"

MODELS = {
    "LeNet-5 1x28x28": ("lenet5", (1, 28, 28), {}, 10),
    "VGG-16-BN 3x32x32": ("vgg16", (3, 32, 32), {}, 10),
    "ResNet-20 3x32x32": ("resnet20", (3, 32, 32), {}, 10),
    "VGG-11-BN w0.5 3x224x224": ("vgg11", (3, 224, 224), {"width": 0.5, "hidden": 256}, 1000),
}


def stub_torchvision() -> None:
    """torch-simplify's utils.py imports MobileNetV3, ShuffleNetV2 and _DenseLayer for isinstance only."""
    if "torchvision" in sys.modules:
        return
    tv, models, densenet = (types.ModuleType(n) for n in ("torchvision", "torchvision.models",
                                                          "torchvision.models.densenet"))
    models.MobileNetV3 = type("MobileNetV3", (), {})
    models.ShuffleNetV2 = type("ShuffleNetV2", (), {})
    densenet._DenseLayer = type("_DenseLayer", (), {})
    tv.models, models.densenet = models, densenet
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.densenet": densenet})


def import_peers() -> tuple[Optional[object], Optional[object]]:
    stub_torchvision()
    missing = []
    try:
        import simplify as torch_simplify
    except ImportError:
        torch_simplify = None
        missing.append("torch-simplify==1.1.4")
    try:
        import torch_pruning
    except ImportError:
        torch_pruning = None
        missing.append("torch-pruning==1.6.1")
    if missing:
        print(f"peers missing: {', '.join(missing)}; install them with:\n    {INSTALL_HINT}\n", file=sys.stderr)
    return torch_simplify, torch_pruning


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[:-1] if isinstance(layers[-1][1], nn.Linear) else layers


@torch.no_grad()
def masked_model(name: str, shape, options: dict, classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(name, shape, classes, **options)
    for _, layer in prunable(model):
        n = layer.weight.shape[0]
        layer.weight[torch.from_numpy(rng.permutation(n)[: n // 2])] = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.rand(c, generator=gen) - 0.5)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
    return model.eval()


def dead_rows(layer: nn.Module) -> list[int]:
    return torch.nonzero(layer.weight.detach().flatten(1).abs().amax(1) == 0).flatten().tolist()


# -- the methods ---------------------------------------------------------------------------------


def run_potatura(model: nn.Module, x1: torch.Tensor) -> nn.Module:
    return simplify(model, x1).model


def run_torch_simplify(ts, model: nn.Module, x1: torch.Tensor) -> nn.Module:
    m = copy.deepcopy(model)
    ts.simplify(m, torch.zeros_like(x1))
    return m.eval()


def _tp_out_fn(tp, layer: nn.Module):
    return tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels


def run_tp_per_layer(tp, model: nn.Module, x1: torch.Tensor) -> nn.Module:
    m = copy.deepcopy(model)
    names = [n for n, _ in prunable(m)]
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(m, example_inputs=x1, verbose=False)
    for name in names:
        layer = m.get_submodule(name)
        idxs = dead_rows(layer)  # recomputed: earlier groups may have removed rows of this layer
        if not idxs or len(idxs) >= layer.weight.shape[0]:
            continue
        group = graph.get_pruning_group(layer, _tp_out_fn(tp, layer), idxs=idxs)
        if graph.check_pruning_group(group):
            group.prune()
    return m.eval()


def run_tp_group_dead(tp, model: nn.Module, x1: torch.Tensor) -> nn.Module:
    m = copy.deepcopy(model)
    classifier = [l for _, l in m.named_modules() if isinstance(l, nn.Linear)][-1:]
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(m, example_inputs=x1, verbose=False)
    plans = []
    for group in graph.get_all_groups(ignored_layers=classifier, root_module_types=(nn.Conv2d, nn.Linear)):
        root = group[0].dep.target.module
        dead_everywhere: Optional[set] = None
        for dep, idxs in group:
            target = dep.target.module
            if isinstance(target, (nn.Conv2d, nn.Linear)) and graph.is_out_channel_pruning_fn(dep.handler):
                dead = set(dead_rows(target))
                # Without concatenations a member's index is the root's (plain ints here).
                here = {getattr(i, "root_idx", i) for i in idxs if getattr(i, "idx", i) in dead}
                dead_everywhere = here if dead_everywhere is None else dead_everywhere & here
        if dead_everywhere:
            plans.append((root, sorted(dead_everywhere)))
    for root, idxs in plans:
        group = graph.get_pruning_group(root, _tp_out_fn(tp, root), idxs=idxs)
        if graph.check_pruning_group(group):
            group.prune()
    return m.eval()


# -- measurements --------------------------------------------------------------------------------


@torch.no_grad()
def logit_agreement(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    a, b = reference(x), candidate(x)
    return float((a - b).abs().max()), float((a.argmax(1) == b.argmax(1)).float().mean())


def stream_widths(model: nn.Module, x1: torch.Tensor) -> str:
    """Channels at the end of each ResNet stage (the output of the last block's relu2)."""
    names = sorted({n for n, _ in model.named_modules() if n.endswith("relu2")},
                   key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    if not names:
        return "-"
    blocks = [model.get_submodule(n.rsplit(".", 1)[0]) for n in names]
    ends = []
    for i, n in enumerate(names):
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        # A stage ends where the next block has a projection shortcut (or at the last block).
        if nxt is None or any(isinstance(m, nn.Conv2d) for m in getattr(nxt, "shortcut", nn.Sequential()).modules()):
            ends.append(n)
    widths: dict[str, int] = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda _m, _i, out, n=n: widths.__setitem__(n, out.shape[1])) for n in ends]
    with torch.no_grad():
        model(x1)
    for h in hooks:
        h.remove()
    return "/".join(str(widths[n]) for n in ends)


def runs_at_other_size(model: nn.Module, shape) -> str:
    c, h, w = shape
    try:
        with torch.no_grad():
            model(torch.randn(1, c, h + h // 4, w + w // 4))
        return "yes"
    except Exception:
        return "no"


def bias_map_values(model: nn.Module) -> int:
    ours = sum(m.bias.numel() for m in model.modules() if isinstance(m, BiasMap))
    theirs = sum(m.bf.numel() for m in model.modules() if isinstance(getattr(m, "bf", None), torch.Tensor)
                 and type(m).__name__ in ("ConvB", "ConvExpand", "LinearExpand") and m.bf.dim() == 3)
    return ours + theirs


@torch.no_grad()
def latency(models: dict[str, nn.Module], x1: torch.Tensor, threads: int, reps: int, warmup: int) -> dict:
    """Median and p90 of single-inference wall time (ms).

    The methods are interleaved, in a fresh random order each repetition, so that neither load
    from other processes nor cache state left by the previous model favours one of them.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    order = np.random.default_rng(threads)
    names = list(models)
    try:
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(warmup):
            for m in models.values():
                m(x1)
        for _ in range(reps):
            for i in order.permutation(len(names)):
                k, m = names[i], models[names[i]]
                t0 = time.perf_counter()
                m(x1)
                times[k].append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return {k: (statistics.median(v), float(np.percentile(v, 90))) for k, v in times.items()}


def bench_model(title: str, spec, ts, tp, reps: int, warmup: int) -> list[dict]:
    name, shape, options, classes = spec
    masked = masked_model(name, shape, options, classes)
    x1 = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    x = torch.randn(64 if shape[-1] < 100 else 16, *shape, generator=torch.Generator().manual_seed(2))
    methods: dict[str, Callable[[], nn.Module]] = {"potatura": lambda: run_potatura(masked, x1)}
    if ts is not None:
        methods["torch-simplify 1.1.4"] = lambda: run_torch_simplify(ts, masked, x1)
    if tp is not None:
        methods["TP 1.6.1 per-layer"] = lambda: run_tp_per_layer(tp, masked, x1)
        if name.startswith("resnet"):
            methods["TP 1.6.1 group-dead"] = lambda: run_tp_group_dead(tp, masked, x1)
    rows = [{"method": "masked (input)", "model": masked, "seconds": None}]
    torch.set_num_threads(1)
    for method, make in methods.items():
        t0 = time.perf_counter()
        try:
            result = make()
            rows.append({"method": method, "model": result, "seconds": time.perf_counter() - t0})
        except Exception as exc:  # a peer failing is a result to report
            rows.append({"method": method, "model": None, "error": f"{type(exc).__name__}: {str(exc)[:80]}"})
    live = {r["method"]: r["model"] for r in rows if r["model"] is not None}
    for r in rows:
        if r["model"] is None:
            continue
        r["params"] = sum(p.numel() for p in r["model"].parameters())
        r["bias_map"] = bias_map_values(r["model"])
        r["diff"], r["agree"] = logit_agreement(masked, r["model"], x)
        r["streams"] = stream_widths(r["model"], x1)
        r["other_size"] = runs_at_other_size(r["model"], shape) if name.startswith("resnet") else "-"
    for threads in (1, 2):
        lat = latency(live, x1, threads, reps, warmup)
        for r in rows:
            if r["model"] is not None:
                r[f"lat{threads}"] = lat[r["method"]]
    for r in rows:
        r["title"] = title
    return rows


def print_table(rows: list[dict]) -> None:
    print("| model | method | params (bias-map values) | max abs logit diff vs masked | argmax agree | "
          "simplify s | residual streams | other input size | 1T median / p90 ms | 2T median / p90 ms | "
          "1T median vs potatura |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ours = {r["title"]: r for r in rows if r["method"] == "potatura" and r.get("model") is not None}
    for r in rows:
        if r.get("model") is None:
            print(f"| {r['title']} | {r['method']} | failed: {r['error']} | | | | | | | | |")
            continue
        base = ours.get(r["title"])
        ratio = f"{r['lat1'][0] / base['lat1'][0]:.2f}x" if base else "-"
        secs = f"{r['seconds']:.2f}" if r["seconds"] is not None else "-"
        print(f"| {r['title']} | {r['method']} | {r['params']:,} ({r['bias_map']:,}) | {r['diff']:.2e} | "
              f"{r['agree']:.3f} | {secs} | {r['streams']} | {r['other_size']} | "
              f"{r['lat1'][0]:.3f} / {r['lat1'][1]:.3f} | {r['lat2'][0]:.3f} / {r['lat2'][1]:.3f} | {ratio} |")


@torch.no_grad()
def signed_sum_check(ts) -> None:
    """A live LeNet-5 filter whose weights sum to exactly 0: the reference's signed-sum zero test."""
    model = masked_model("lenet5", (1, 28, 28), {}, 10)
    w = torch.randint(-4, 5, model.conv2.weight.shape[1:], generator=torch.Generator().manual_seed(3)).float() / 8
    w.view(-1)[-1] = 0
    w.view(-1)[-1] = -w.sum()
    model.conv2.weight[0] = w  # live (non-zero) weights, signed sum exactly 0
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    print("\nLive filter whose weights sum to exactly 0 (LeNet-5 conv2 filter 0, half the others dead):\n")
    print("| method | conv2 filters kept | max abs logit diff vs masked | argmax agree |")
    print("|---|---|---|---|")
    ours = simplify(model, x[:1]).model
    print(f"| potatura | {ours.get_submodule('conv2').out_channels} | {logit_agreement(model, ours, x)[0]:.2e} | "
          f"{logit_agreement(model, ours, x)[1]:.3f} |")
    if ts is not None:
        theirs = run_torch_simplify(ts, model, x[:1])
        d, a = logit_agreement(model, theirs, x)
        print(f"| torch-simplify 1.1.4 | {theirs.conv2.out_channels} | {d:.2e} | {a:.3f} |")
    print(f"| (alive in the mask) | {model.conv2.out_channels - len(dead_rows(model.conv2))} | | |")


# -- simplify time on a large model: this implementation vs an earlier revision, in one run -------


def vgg16_torchvision_layout() -> nn.Module:
    """VGG-16 as torchvision lays it out (138,357,544 parameters; inplace ReLUs, dropout, 7x7
    adaptive pooling, 25088 -> 4096 -> 4096 -> 1000 classifier), built here without torchvision."""
    layers: list[nn.Module] = []
    channels = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width

    class VGG16(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG16()


def load_previous_simplify(revision: str):
    """potatura.simplify as of `revision` (git show), imported as a separate package."""
    import importlib
    import subprocess
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    names = subprocess.run(["git", "-C", str(root), "ls-tree", "--name-only", revision, "potatura/simplify/"],
                           check=True, capture_output=True, text=True).stdout.split()
    package = Path(tempfile.mkdtemp(prefix="simplify_previous_")) / "potatura_simplify_previous"
    package.mkdir()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "-C", str(root), "show", f"{revision}:{name}"], check=True,
                                  capture_output=True, text=True).stdout
            (package / Path(name).name).write_text(text.replace("potatura.simplify", "potatura_simplify_previous"))
    sys.path.insert(0, str(package.parent))
    return importlib.import_module("potatura_simplify_previous.pipeline").simplify


def simplify_time(previous: Optional[str]) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = vgg16_torchvision_layout().eval()
    with torch.no_grad():
        for _, layer in prunable(model):
            n = layer.weight.shape[0]
            layer.weight[torch.from_numpy(rng.permutation(n)[: n // 2])] = 0
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    methods = {"potatura (this tree)": simplify}
    if previous:
        methods[f"potatura at {previous}"] = load_previous_simplify(previous)
    print("\nSimplify time, VGG-16 torchvision layout (138,357,544 parameters, 50% of the neurons of every "
          "Conv2d and hidden Linear zeroed), input 1x3x224x224, 1 torch thread (torch.set_num_threads(1)), "
          "CPU shared with other jobs, one run each in this process:\n")
    print("| implementation | simplify s | ratio | parameters after | max abs logit diff vs masked |")
    print("|---|---|---|---|---|")
    first = None
    for name, run in methods.items():
        t0 = time.perf_counter()
        small = run(model, x[:1]).model
        seconds = time.perf_counter() - t0
        first = first or seconds
        diff, _ = logit_agreement(model, small, x)
        print(f"| {name} | {seconds:.1f} | {seconds / first:.2f}x | {sum(p.numel() for p in small.parameters()):,} | "
              f"{diff:.2e} |", flush=True)
        del small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, skip the 224x224 net")
    parser.add_argument("--reps", type=int, default=None, help="timed runs per method and thread count")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of: {', '.join(MODELS)}")
    parser.add_argument("--simplify-time", action="store_true",
                        help="only the simplify-time table on VGG-16 (torchvision layout, 224x224), ~1 min per row")
    parser.add_argument("--previous", default=None, help="with --simplify-time: also time potatura.simplify as of "
                        "this git revision, in the same run")
    args = parser.parse_args()
    if args.simplify_time:
        simplify_time(args.previous)
        return
    ts, tp = import_peers()
    chosen = args.models or [m for m in MODELS if not (args.quick and "224" in m)]
    rows: list[dict] = []
    for title in chosen:
        big = "224" in title
        reps = args.reps or (10 if args.quick else (30 if big else 100))
        print(f"measuring {title} ({reps} runs per method and thread count)...", file=sys.stderr, flush=True)
        rows += bench_model(title, MODELS[title], ts, tp, reps=reps, warmup=3 if big else 10)
    import os

    print(f"\nCPU batch-1 latency, measured in one run on {os.cpu_count()} CPU cores shared with other jobs "
          f"(torch {torch.__version__}); parameters counted by model.parameters(); logit differences measured "
          f"on standard-normal inputs.\n")
    print_table(rows)
    signed_sum_check(ts)


if __name__ == "__main__":
    main()

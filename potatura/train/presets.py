"""Built-in hyperparameter presets per (model, dataset), applied with `train.preset: auto`.

A preset fills only the fields the flow file leaves unset (pydantic's model_fields_set), so
anything a user writes wins. TrainConfig's own defaults are the preset of the embedded demo
(LeNet-5 on digits). The values below were tuned with scripts/bench_train.py; the notes say
what each gave when it was tuned (measured on CPU, seed 0).

Why not the reference defaults (lr 0.1, no momentum, lambda 1e-4, a plateau LR schedule)? They
need hundreds of epochs. The sensitivities of LeNet-sized models are far below 1, so
relu(1 - S) ~ 1 and the shrink acts as a neuron-wise weight decay of strength lambda / lr; these
presets keep that ratio and the LR constant (a decaying LR with a fixed lambda starves the
gradient and collapses the network) and use momentum to converge in tens of epochs.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import ValidationError

from potatura.errors import ConfigError
from potatura.train.config import TrainConfig

# (model, dataset) -> {"common": fields for every method, method name: fields for that method}
PRESETS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    # The TrainConfig defaults. SeReNe bounded, measured on 2 CPU cores (seeds 0-3): 97-98% test
    # accuracy with 5-10% of the parameters and 17-43% of the neurons left, about 10 s.
    ("lenet5", "digits"): {
        "common": {"epochs": 120, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "lr_schedule": "constant",
                   "pwe": 2, "twt": 0.3, "finetune_epochs": 10},
        "serene": {"lmbda": 1e-2},
        "lobster": {"lmbda": 5e-3},
        "none": {"epochs": 20, "lr_schedule": "cosine"},
        "magnitude-oneshot": {"epochs": 20, "lr_schedule": "cosine"},
    },
    # SeReNe bounded with potatura's two variants for the neuron target (docs/algorithms.md section 3):
    # neuron thresholds before parameter thresholds, and the sensitivity normalized by its layer's
    # maximum; the sensitivity every 2nd step (<= 1.3x plain SGD per epoch) and dead neurons removed
    # every 5 epochs (faster later epochs, same model as masking). Measured on CPU, 1 thread, seed 0,
    # all 54,000 training images (scripts/bench_train.py run_row): 9.22% test error vs 8.52% dense,
    # 2.13% of the parameters and 145/570 neurons (25.4%) left after 60 epochs. The paper's form
    # (parameter thresholds only, relu(1 - S)) keeps about half of the neurons: README, "Train".
    ("lenet5", "fashion-mnist"): {
        "common": {"epochs": 60, "batch_size": 100, "lr": 0.05, "momentum": 0.9, "lr_schedule": "constant",
                   "pwe": 3, "twt": 0.1, "finetune_epochs": 10},
        "serene": {"lmbda": 1e-3, "threshold": "neurons+parameters", "neuron_share": 0.5,
                   "sensitivity_norm": "layer-max", "sensitivity_every": 2, "shrink_every": 5},
        "lobster": {"lmbda": 1e-3},
        "none": {"epochs": 30, "lr_schedule": "cosine"},
        "magnitude-oneshot": {"epochs": 30, "lr_schedule": "cosine"},
    },
}
# A (model, dataset) pair without an entry uses TrainConfig's defaults.


def preset_for(model: str, dataset: str) -> Optional[dict]:
    return PRESETS.get((model, dataset))


def resolve_train_config(cfg: TrainConfig, model: str, dataset: str) -> tuple[TrainConfig, Optional[str]]:
    """Apply the preset of (model, dataset) to the fields `cfg` leaves unset; returns (config, preset name)."""
    if cfg.preset == "off":
        return cfg, None
    preset = preset_for(model, dataset)
    if preset is None:
        return cfg, None
    values = {**preset.get("common", {}), **preset.get(cfg.method, {})}
    update = {k: v for k, v in values.items() if k not in cfg.model_fields_set}
    if not update:
        return cfg, f"{model}/{dataset} (every field set by the flow file)"
    # finetune_epochs from a preset stays "unset", so that it shrinks with a user's shorter budget
    # (TrainConfig.effective_finetune_epochs) instead of clashing with it.
    soft = {k: update.pop(k) for k in ("finetune_epochs",) if k in update}
    data = {**cfg.model_dump(exclude_unset=True), **update}
    try:
        resolved = TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(('train',) + tuple(map(str, e['loc'])))}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigError(f"{problems} (with the {model}/{dataset} preset filling {', '.join(sorted(update))}; "
                          f"set those fields or train.preset: off)") from None
    for key, value in soft.items():
        object.__setattr__(resolved, key, value)
    # Keep "set by the user" meaning only what the user set.
    object.__setattr__(resolved, "__pydantic_fields_set__", set(cfg.model_fields_set))
    return resolved, f"{model}/{dataset}"

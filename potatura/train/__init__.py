"""Training with pruning: the base loop and the regularizers that plug into it.

    loop.py       TrainLoop (SGD, LR schedules, per-epoch checkpoints, bit-exact resume), TrainHook
    serene.py     SeReNe neuron sensitivities (bounded, full, local, NeuronLOBSTER) and shrink
    lobster.py    LOBSTER parameter sensitivity and shrink
    schedule.py   plateau detector + global magnitude threshold bisection + targets + fine-tuning
    magnitude.py  one-shot structured L1 pruning (the baseline)
    masks.py      neuron layers, the classifier head, masks that keep pruned values at zero
    stats.py      neurons, parameters and MACs per layer and network
    methods.py    train section -> hooks;  presets.py  hyperparameters per (model, dataset)
"""

# Lazy (PEP 562): the flow-file schema imports potatura.train.config, which must not pay for torch.
_EXPORTS = {
    "TrainHook": "potatura.train.loop", "TrainLoop": "potatura.train.loop", "TrainResult": "potatura.train.loop",
    "evaluate": "potatura.train.loop", "seed_everything": "potatura.train.loop",
    "PruningSetup": "potatura.train.methods", "build_pruning": "potatura.train.methods",
    "sparsity_report": "potatura.train.stats",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'potatura.train' has no attribute {name!r}")

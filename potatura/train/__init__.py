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

from potatura.train.loop import TrainHook, TrainLoop, TrainResult, evaluate, seed_everything
from potatura.train.methods import PruningSetup, build_pruning
from potatura.train.stats import sparsity_report

__all__ = ["TrainHook", "TrainLoop", "TrainResult", "evaluate", "seed_everything", "PruningSetup", "build_pruning",
           "sparsity_report"]

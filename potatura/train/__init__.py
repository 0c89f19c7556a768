"""Training: the base loop (loop.py) and, as they land, the pruning regularizers."""

from potatura.train.loop import TrainHook, TrainLoop, TrainResult, evaluate, seed_everything

__all__ = ["TrainHook", "TrainLoop", "TrainResult", "evaluate", "seed_everything"]

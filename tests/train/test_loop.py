"""The base training loop: learns, checkpoints each epoch, resumes bit-exactly."""

import pytest
import torch

from potatura.config import TrainConfig
from potatura.models import build_model
from potatura.train.loop import CHECKPOINT, TrainLoop, evaluate, seed_everything


def _model(seed=0):
    seed_everything(seed)
    return build_model("lenet300", (1, 8, 8), 10, hidden=(32, 16))


def _cfg(**kw):
    base = dict(method="none", epochs=4, batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4, lr_schedule="cosine")
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_digits(digits_splits):
    model = _model()
    before = evaluate(model, digits_splits.x_test, digits_splits.y_test)["accuracy"]
    result = TrainLoop(model, digits_splits, _cfg(epochs=5), seed=0).run()
    after = evaluate(model, digits_splits.x_test, digits_splits.y_test)["accuracy"]
    assert before < 0.3 and after > 0.9, (before, after)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    # cosine schedule: the LR of the last epoch is below the first
    assert result.history[-1]["lr"] < result.history[0]["lr"] == pytest.approx(0.05)


def test_resume_equals_uninterrupted(tmp_path, digits_splits):
    full = _model()
    TrainLoop(full, digits_splits, _cfg(), seed=3, checkpoint_dir=tmp_path / "a").run()

    interrupted = _model()
    first = TrainLoop(interrupted, digits_splits, _cfg(), seed=3, checkpoint_dir=tmp_path / "b").run(stop_after=2)
    assert first.epochs_run == 2 and (tmp_path / "b" / CHECKPOINT).is_file()

    fresh = _model(seed=99)  # different initial weights: the checkpoint must replace them
    resumed = TrainLoop(fresh, digits_splits, _cfg(), seed=3, checkpoint_dir=tmp_path / "b").run()
    assert resumed.resumed_from == 2 and resumed.epochs_run == 4
    for (name, a), (_, b) in zip(full.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    uninterrupted_history = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)["history"]
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in uninterrupted_history]


def test_different_seed_gives_different_batches(digits_splits):
    a, b = _model(), _model()
    TrainLoop(a, digits_splits, _cfg(epochs=1), seed=1).run()
    TrainLoop(b, digits_splits, _cfg(epochs=1), seed=2).run()
    assert not torch.equal(a.fc1.weight, b.fc1.weight)

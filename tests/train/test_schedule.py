"""Plateau detector and global magnitude threshold bisection."""

import math

import pytest
import torch
from torch import nn

from potatura.models import build_model
from potatura.train.config import TrainConfig
from potatura.train.loop import TrainLoop, evaluate, seed_everything
from potatura.train.masks import weight_parameters
from potatura.train.schedule import PlateauDetector, bisect_threshold, magnitude_statistics, zero_below_


def _tiny():
    torch.manual_seed(0)
    return nn.Linear(2, 2)


def _set(model, value):
    with torch.no_grad():
        model.weight.fill_(value)


def test_plateau_detector_counts_within_one_percent_and_rolls_back():
    model = _tiny()
    det = PlateauDetector(patience=2)
    _set(model, 1.0)
    assert det.step(1.0, model) == "ok"           # best 1.0, weights 1.0
    _set(model, 2.0)
    assert det.step(1.005, model) == "ok"         # within 1%: good, counter reset, best unchanged
    assert det.best_loss == 1.0 and det.counter == 0
    _set(model, 3.0)
    assert det.step(1.02, model) == "ok" and det.counter == 1
    _set(model, 4.0)
    assert det.step(0.995, model) == "ok"         # strict improvement: new best
    assert det.best_loss == 0.995 and det.counter == 0
    _set(model, 5.0)
    assert det.step(1.1, model) == "ok" and det.counter == 1
    assert det.step(1.1, model) == "plateau"      # PWE epochs without a good one
    assert det.counter == 0 and torch.all(model.weight == 4.0)  # rolled back to the best weights


def test_plateau_detector_rolls_back_on_nan():
    model = _tiny()
    det = PlateauDetector(patience=5)
    _set(model, 1.0)
    det.step(0.5, model)
    _set(model, float("nan"))
    assert det.step(float("nan"), model) == "nan"
    assert torch.all(model.weight == 1.0)


def test_plateau_detector_state_round_trip():
    model = _tiny()
    det = PlateauDetector(patience=3)
    det.step(0.7, model)
    det.step(0.9, model)
    other = PlateauDetector(patience=3)
    other.load_state_dict(det.state_dict())
    assert (other.best_loss, other.counter) == (0.7, 1)


def test_magnitude_statistics_and_zero_below():
    a = torch.tensor([0.0, -0.1, 0.3])
    b = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    t_min, t_mean, t_max = magnitude_statistics([a, b])
    assert t_min == pytest.approx(0.1) and t_max == pytest.approx(2.0)
    assert t_mean == pytest.approx(((0.1 + 0.3) / 2 + (2.0 + 1.0) / 2) / 2)  # mean of per-layer means
    assert zero_below_([a, b], 1.5) == 3  # -0.1, 0.3, -1.0
    assert a.tolist() == [0.0, 0.0, 0.0] and b.tolist() == [[2.0, 0.0], [0.0, 0.0]]
    assert magnitude_statistics([torch.zeros(3)]) is None


@pytest.fixture(scope="module")
def trained(digits_splits_module):
    data = digits_splits_module
    seed_everything(0)
    model = build_model("lenet300", data.input_shape, data.num_classes, hidden=(48, 24))
    cfg = TrainConfig(method="none", epochs=4, lr=0.05, lr_schedule="cosine")
    TrainLoop(model, data, cfg, seed=0).run()
    return model, data


@pytest.mark.parametrize("twt", [0.0, 0.05, 0.5])
def test_bisection_threshold_respects_the_validation_bound(trained, twt):
    model, data = trained
    model = _copy(model)
    params = list(weight_parameters(model).values())
    before = [p.detach().clone() for p in params]
    val = lambda: evaluate(model, data.x_val, data.y_val)["loss"]
    base = val()
    bound = base * (1 + twt)
    search = bisect_threshold(params, params, val, bound)
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, params))  # trials restore the weights
    assert search.t_min <= search.threshold <= search.t_max
    assert search.val_loss <= bound
    zeroed = zero_below_(params, search.threshold)
    after = val()
    assert after == pytest.approx(search.val_loss, rel=1e-6) and after <= bound * (1 + 1e-9)
    # every trial above the bound was at a larger threshold than the one applied
    assert all(t > search.threshold for t, loss in search.trials if loss > bound)
    if twt >= 0.05:
        assert zeroed > 0.2 * sum(p.numel() for p in params)  # a real amount of pruning, not a no-op
    else:
        assert zeroed >= 0


def test_bisection_treats_nan_as_over_the_bound(trained):
    model, data = trained
    model = _copy(model)
    params = list(weight_parameters(model).values())
    calls = []

    def val():
        # NaN whenever more than half of the weights are zero
        zeros = sum(int((p == 0).sum()) for p in params)
        calls.append(zeros)
        return math.nan if zeros > 0.5 * sum(p.numel() for p in params) else 1.0

    search = bisect_threshold(params, params, val, bound=1.0)
    assert search.val_loss == 1.0 and math.isfinite(search.threshold)
    assert sum(int((p.abs() < search.threshold).sum()) for p in params) <= 0.5 * sum(p.numel() for p in params)


def _copy(model):
    import copy
    return copy.deepcopy(model)

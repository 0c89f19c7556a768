"""potatura's variants of SeReNe for the neuron target: neuron thresholds, layer-max normalized
sensitivity, and the sensitivity computed every N steps."""

import pytest
import torch
from torch import nn

from potatura.models import build_model
from potatura.train.config import TrainConfig
from potatura.train.loop import TrainLoop, evaluate, seed_everything
from potatura.train.masks import alive_neurons, prunable_neuron_layers
from potatura.train.methods import build_pruning
from potatura.train.schedule import (bisect_neuron_threshold, neuron_norm_statistics, neuron_norms,
                                     zero_neurons_below_)
from potatura.train.serene import (SereneRegularizer, bounded_sensitivity, insensitivity,
                                   layer_max_normalized)


def test_neuron_norms_statistics_and_zeroing_by_hand():
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]])           # norms 5, 0 (dead), 0.5
    b = torch.tensor([[[[1.0, 0.0]]], [[[0.0, -2.0]]]])              # filters: norms 1, 2
    assert neuron_norms(a).tolist() == pytest.approx([5.0, 0.0, 0.5])
    t_min, t_mean, t_max = neuron_norm_statistics([a, b])
    assert (t_min, t_max) == (pytest.approx(0.5), pytest.approx(5.0))
    assert t_mean == pytest.approx(((5.0 + 0.5) / 2 + (1.0 + 2.0) / 2) / 2)  # dead neurons left out
    assert zero_neurons_below_([a, b], 1.5) == 2  # the 0.5 row and the norm-1 filter; the dead row is not counted
    assert a.tolist() == [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]
    assert b.flatten().tolist() == [0.0, 0.0, 0.0, -2.0]
    assert neuron_norm_statistics([torch.zeros(2, 3)]) is None


def test_neuron_bisection_removes_whole_neurons_within_the_bound():
    # The "validation loss" is the number of live neurons with a norm >= 1 that were zeroed, so the
    # largest threshold meeting bound 0.5 zeroes only the neurons below 1, and nothing else.
    w = nn.Parameter(torch.tensor([[0.1, 0.0], [0.0, 0.6], [2.0, 0.0], [0.0, 3.0], [0.0, 0.0]]))
    original = w.detach().clone()
    strong = neuron_norms(original) >= 1

    def loss():
        return float((neuron_norms(w).eq(0) & strong).sum())

    found = bisect_neuron_threshold([w], loss, bound=0.5)
    assert torch.equal(w.detach(), original)  # trials restore the weights
    assert 0.6 < found.threshold <= 2.0 + 1e-6 and found.val_loss == 0.0  # float32 norms: up to rounding
    assert zero_neurons_below_([w], found.threshold) == 2
    assert alive_neurons(nn.Linear(2, 5).requires_grad_(False)).all()
    assert neuron_norms(w).gt(0).tolist() == [False, False, True, True, False]


@pytest.fixture(scope="module")
def digits(digits_splits_module):
    return digits_splits_module


def _run(data, **fields):
    seed_everything(0)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    cfg = TrainConfig(method="serene", epochs=12, finetune_epochs=2, pwe=1, twt=0.2, lmbda=1e-2, **fields)
    setup = build_pruning(cfg, model, data.input_shape)
    loop = TrainLoop(model, data, cfg, seed=0, hooks=setup.hooks)
    result = loop.run()
    return model, setup, result


def test_neurons_plus_parameters_rounds_meet_the_bound_and_remove_neurons(digits):
    model, setup, result = _run(digits, threshold="neurons+parameters")
    rounds = setup.schedule.rounds
    assert rounds, "the run should contain threshold rounds"
    for r in rounds:
        # the neuron stage stays within its share of the tolerated rise, the round within the paper's bound
        assert r["neuron_bound"] == pytest.approx(r["val_loss_before"] * 1.1)
        assert r["val_loss_after_neurons"] <= r["neuron_bound"] * (1 + 1e-9)
        assert r["val_loss_after"] <= r["bound"] * (1 + 1e-9)
    assert sum(r["neurons_zeroed"] for r in rounds) > 0
    # neuron rounds zero whole neurons: the same run with parameter thresholds only keeps more of them
    _, plain_setup, _ = _run(digits)
    assert all("neurons_zeroed" not in r for r in plain_setup.schedule.rounds)
    alive = sum(int(alive_neurons(m).sum()) for _, m in prunable_neuron_layers(model))
    plain_alive = sum(int(alive_neurons(m).sum()) for _, m in prunable_neuron_layers(plain_setup.schedule.model))
    assert alive < plain_alive
    assert evaluate(model, digits.x_test, digits.y_test)["accuracy"] > 0.9


def test_layer_max_normalization_by_hand():
    s = torch.tensor([0.02, 0.05, 0.01, 0.0])
    ins = insensitivity(layer_max_normalized(s))
    assert ins.tolist() == pytest.approx([0.6, 0.0, 0.8, 1.0])  # the most sensitive neuron is not shrunk
    assert insensitivity(layer_max_normalized(torch.zeros(3))).tolist() == [1.0, 1.0, 1.0]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.ReLU(),
                         nn.Linear(6, 3)).double()


class _Loop:
    def __init__(self, model):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # only the regularizer moves weights


def _step(net, reg, loop, seed):
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = torch.tensor([0, 1, 2, 0, 1])
    logits = net(x)
    loss = nn.functional.cross_entropy(logits, y)
    expected = [insensitivity(layer_max_normalized(s)) for s in bounded_sensitivity(logits, reg.recorder.ordered())]
    reg.before_backward(loop, x, y, logits, loss)
    loss.backward()
    reg.after_backward(loop, x, y, logits, loss)
    used = [t.clone() for t in reg.neuron_insensitivity]
    loop.optimizer.step()
    before = [m.weight.detach().clone() for _, m in reg.layers]
    reg.after_step(loop)
    return expected, used, before


def test_layer_max_regularizer_shrinks_with_normalized_sensitivity():
    net = _net()
    loop = _Loop(net)
    reg = SereneRegularizer(net, lmbda=0.3, normalize="layer-max")
    reg.on_run_start(loop)
    expected, used, before = _step(net, reg, loop, 1)
    for (_, m), ins, w in zip(reg.layers, expected, before):
        assert float(ins.min()) == 0.0  # one neuron per layer is not shrunk
        factor = (1 - 0.3 * ins).view(-1, *([1] * (w.dim() - 1)))
        torch.testing.assert_close(m.weight.detach(), w * factor, atol=1e-12, rtol=0)


def test_sensitivity_every_two_steps_reuses_the_latest_one():
    net = _net()
    loop = _Loop(net)
    reg = SereneRegularizer(net, lmbda=0.3, normalize="layer-max", every=2)
    reg.on_run_start(loop)
    exp0, used0, _ = _step(net, reg, loop, 1)
    exp1, used1, _ = _step(net, reg, loop, 2)   # not computed: step 0's insensitivity again
    exp2, used2, _ = _step(net, reg, loop, 3)   # computed again
    for a, b in zip(used0, exp0):
        torch.testing.assert_close(a, b)
    for a, b, fresh in zip(used1, used0, exp1):
        assert torch.equal(a, b) and not torch.allclose(a, fresh)
    for a, b in zip(used2, exp2):
        torch.testing.assert_close(a, b)
    # the reuse survives a checkpoint: a regularizer restored after step 2 reuses step 2's values
    other = SereneRegularizer(net, lmbda=0.3, normalize="layer-max", every=2)
    other.load_state_dict(reg.state_dict())
    assert other._steps == 3 and all(torch.equal(a, b) for a, b in zip(other._latest, used2))


def test_sensitivity_every_n_runs_with_shrinking_during_training(digits):
    model, setup, result = _run(digits, sensitivity_every=3, shrink_every=2, threshold="neurons+parameters")
    assert setup.shrink is not None and result.epochs_run == 12
    assert evaluate(model, digits.x_test, digits.y_test)["accuracy"] > 0.9


@pytest.mark.parametrize("fields,message", [
    ({"method": "lobster", "sensitivity_norm": "layer-max"}, "sensitivity_norm applies to method serene only"),
    ({"method": "none", "sensitivity_every": 2}, "sensitivity_every applies to method serene only"),
    ({"method": "none", "threshold": "neurons+parameters"}, "applies to methods serene and lobster"),
])
def test_variant_fields_refused_where_they_do_nothing(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)

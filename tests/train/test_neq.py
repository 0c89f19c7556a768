"""NEq: velocity forms, the cosine similarity, frozen neurons in the optimizer, gradient skipping."""

import math

import pytest
import torch
from torch import nn

from potatura.config import TrainConfig
from potatura.models import build_model
from potatura.train.config import NEqConfig
from potatura.train.loop import TrainLoop, seed_everything
from potatura.train.methods import build_pruning
from potatura.train.neq import NEqFreezing, Velocity, active_rows_forward, neuron_similarity

PHIS = [0.5, 0.8, 0.9, 0.95, 0.95]


def test_velocity_paper_form_hand_computed():
    # dphi = -0.5, 0.3, 0.1, 0.05, 0 ; v_t = dphi_t - 0.5 v_{t-1}
    v = Velocity(mu=0.5, form="paper")
    got = [float(v.update(torch.tensor([p], dtype=torch.float64))) for p in PHIS]
    assert got == pytest.approx([-0.5, 0.55, -0.175, 0.1375, -0.06875])


def test_velocity_code_form_hand_computed():
    # r_t = dphi_t - 0.5 * sum_{k>=1} 0.5^(k-1) dphi_{t-k}, from t = 3:
    # r_3 = 0.1 - 0.5 (0.3 - 0.25) = 0.075
    # r_4 = 0.05 - 0.5 (0.1 + 0.15 - 0.125) = -0.0125
    # r_5 = 0 - 0.5 (0.05 + 0.05 + 0.075 - 0.0625) = -0.05625
    v = Velocity(mu=0.5, form="code")
    got = [v.update(torch.tensor([p], dtype=torch.float64)) for p in PHIS]
    assert got[0] is None and got[1] is None
    assert [float(g) for g in got[2:]] == pytest.approx([0.075, -0.0125, -0.05625])


def test_neuron_similarity_cases():
    prev = torch.zeros(2, 4, 3)
    cur = torch.zeros(2, 4, 3)
    prev[:, 0] = torch.tensor([1.0, 0.0, 0.0])
    cur[:, 0] = torch.tensor([2.0, 0.0, 0.0])  # same direction: 1
    prev[:, 1] = torch.tensor([1.0, 0.0, 0.0])
    cur[:, 1] = torch.tensor([0.0, 1.0, 0.0])  # orthogonal: 0
    # channel 2: both zero -> 1; channel 3: only one zero -> 0
    cur[:, 3] = 1.0
    cur[1, 1] = torch.tensor([1.0, 1.0, 0.0])  # sample 1 at 45 degrees: mean (0 + cos 45) / 2
    phi = neuron_similarity(cur, prev)
    assert phi.tolist() == pytest.approx([1.0, math.sqrt(0.5) / 2, 1.0, 0.0])


def _frozen_setup(frozen_rows):
    seed_everything(0)
    model = build_model("lenet300", (1, 8, 8), 10, hidden=(16, 12))
    cfg = TrainConfig(method="none", epochs=1, lr=0.1, momentum=0.9, weight_decay=1e-2, neq=NEqConfig())
    hook = NEqFreezing(model, cfg.neq, (1, 8, 8))
    frozen = torch.zeros(16, dtype=torch.bool)
    frozen[frozen_rows] = True
    hook.frozen = {"fc1": frozen}
    return model, cfg, hook, frozen


def test_frozen_neuron_weights_and_momentum_unchanged(digits_splits):
    model, cfg, hook, frozen = _frozen_setup([1, 5, 6])
    loop = TrainLoop(model, digits_splits, cfg, hooks=[hook])
    hook.on_run_start(loop)
    opt = loop.optimizer
    x, y = digits_splits.x_train[:32], digits_splits.y_train[:32]

    def step():
        opt.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        hook.after_backward(loop, x, y, logits, loss)
        opt.step()
        hook.after_step(loop)

    # First step with nothing frozen so that every row has momentum; then freeze.
    saved, hook.frozen = hook.frozen, {}
    hook._refresh_active()
    step()
    hook.frozen = saved
    hook._refresh_active()
    w0, b0 = model.fc1.weight.detach().clone(), model.fc1.bias.detach().clone()
    m0 = opt.state[model.fc1.weight]["momentum_buffer"].clone()
    assert m0[frozen].abs().sum() > 0
    step()
    w1, b1 = model.fc1.weight.detach(), model.fc1.bias.detach()
    m1 = opt.state[model.fc1.weight]["momentum_buffer"]
    assert torch.equal(w1[frozen], w0[frozen]) and torch.equal(b1[frozen], b0[frozen])
    assert torch.equal(m1[frozen], m0[frozen])
    assert (w1[~frozen] - w0[~frozen]).abs().min() > 0  # active rows moved
    hook.on_run_end(loop)
    assert "forward" not in vars(model.fc1)


def test_frozen_momentum_decay_option(digits_splits):
    model, cfg, hook, frozen = _frozen_setup([0, 2])
    hook.cfg = hook.cfg.model_copy(update={"frozen_momentum": "decay"})
    loop = TrainLoop(model, digits_splits, cfg, hooks=[hook])
    hook.on_run_start(loop)
    opt = loop.optimizer
    x, y = digits_splits.x_train[:32], digits_splits.y_train[:32]
    hook.frozen = {}
    hook._refresh_active()
    for freeze in (False, True):
        if freeze:
            hook.frozen = {"fc1": frozen}
            hook._refresh_active()
            w0 = model.fc1.weight.detach().clone()
            m0 = opt.state[model.fc1.weight]["momentum_buffer"].clone()
        opt.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        hook.after_backward(loop, x, y, logits, loss)
        opt.step()
        hook.after_step(loop)
    m1 = opt.state[model.fc1.weight]["momentum_buffer"]
    assert torch.equal(model.fc1.weight.detach()[frozen], w0[frozen])
    assert torch.allclose(m1[frozen], 0.9 * m0[frozen])
    hook.on_run_end(loop)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradient_skipping_equals_masking_for_active_rows(kind):
    torch.manual_seed(0)
    if kind == "linear":
        layer, x = nn.Linear(7, 6), torch.randn(5, 7)
    else:
        layer, x = nn.Conv2d(3, 6, 3, padding=1, stride=2), torch.randn(4, 3, 9, 9)
    active = torch.tensor([0, 2, 3, 5])
    x.requires_grad_(True)
    out = active_rows_forward(layer, x, active)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    gw, gb, gx = layer.weight.grad.clone(), layer.bias.grad.clone(), x.grad.clone()

    layer.zero_grad()
    x.grad = None
    ref = layer(x)
    assert torch.allclose(ref, out)
    (ref * upstream).sum().backward()
    assert torch.allclose(gx, x.grad, atol=1e-6)  # input gradient: every row contributes
    assert torch.allclose(gw[active], layer.weight.grad[active], atol=1e-6)
    assert torch.allclose(gb[active], layer.bias.grad[active], atol=1e-6)
    frozen = torch.tensor([1, 4])
    assert gw[frozen].abs().sum() == 0 and gb[frozen].abs().sum() == 0
    assert layer.weight.grad[frozen].abs().sum() > 0  # the skipped work was real

    # One SGD step: the skipping path's update equals the masked update on active rows.
    w = layer.weight.detach().clone()
    masked = layer.weight.grad.clone()
    masked[frozen] = 0
    assert torch.allclose(w - 0.1 * gw, w - 0.1 * masked, atol=1e-7)


def test_neq_in_training_freezes_reports_and_learns(digits_splits):
    seed_everything(0)
    model = build_model("lenet5", (1, 8, 8), 10, channels=(6, 12), hidden=32)
    cfg = TrainConfig(method="serene", epochs=6, lr=0.05, pwe=2, twt=0.1, finetune_epochs=1,
                      neq=NEqConfig(eps=0.02, timing_batches=1))
    setup = build_pruning(cfg, model, (1, 8, 8), seed=0)
    assert isinstance(setup.hooks[0], NEqFreezing)
    result = TrainLoop(model, digits_splits, cfg, hooks=setup.hooks).run()
    hist = result.history
    # phi needs two epochs and the paper velocity one phi: nothing is frozen in epochs 1-2.
    assert hist[0]["neq_frozen_pct"] == 0 and hist[1]["neq_frozen_pct"] == 0
    assert max(h["neq_frozen_pct"] for h in hist) > 0
    assert set(hist[-1]["neq_frozen_per_layer"]) == {"conv1", "conv2", "fc1"}
    frozen_epochs = [h for h in hist if h["neq_frozen_pct"] > 0]
    assert all(h["neq_weight_grad_flops_saved"] > 0 for h in frozen_epochs)
    assert hist[-1]["val_accuracy"] > hist[0]["val_accuracy"] + 0.3


def test_random_baseline_freezes_the_same_count():
    seed_everything(0)
    model = build_model("lenet300", (1, 8, 8), 10, hidden=(16, 12))
    hook = NEqFreezing(model, NEqConfig(baseline="random"), (1, 8, 8), seed=1)
    frozen = torch.tensor([True] * 5 + [False] * 11)
    picked = hook._random_like(frozen)
    assert int(picked.sum()) == 5 and not torch.equal(picked, frozen)


def test_neq_config_validation():
    with pytest.raises(ValueError):
        NEqConfig(mu=1.0)
    with pytest.raises(ValueError):
        NEqConfig(velocity="other")
    assert TrainConfig(neq={"eps": 0.01}).neq.eps == 0.01

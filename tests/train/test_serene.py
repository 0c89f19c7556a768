"""SeReNe sensitivities against a brute-force autograd computation, and the neuron shrink step."""

import pytest
import torch
from torch import nn

from potatura.train.masks import prunable_neuron_layers
from potatura.train.serene import (PSPRecorder, SereneRegularizer, bounded_sensitivity, full_sensitivity,
                                   insensitivity, local_insensitivity, shrink_neurons_)


def _net():
    """Conv (padded) -> pool -> conv -> flatten -> Linear -> Linear head, float64 for a 1e-6 comparison."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3), nn.Tanh(), nn.Flatten(),
        nn.Linear(5 * 2 * 2, 7), nn.ReLU(), nn.Linear(7, 3),
    ).double()


def _brute_force(logits, psps):
    """Per neuron: (bounded, full) from dy[s, k]/dz[s, n, pos], one autograd.grad call per (sample, class)."""
    batch, classes = logits.shape
    bounded, full = [], []
    for z in psps:
        jac = torch.zeros((batch, classes) + tuple(z.shape[1:]), dtype=z.dtype)
        for s in range(batch):
            for k in range(classes):
                jac[s, k] = torch.autograd.grad(logits[s, k], z, retain_graph=True)[0][s]
        b = torch.zeros(z.shape[1], dtype=z.dtype)
        f = torch.zeros(z.shape[1], dtype=z.dtype)
        for n in range(z.shape[1]):
            d = jac[:, :, n]  # [batch, classes, *positions] for neuron n
            b[n] = d.sum(dim=1).abs().mean() / classes
            f[n] = d.abs().sum(dim=1).mean() / classes
        bounded.append(b)
        full.append(f)
    return bounded, full


def _forward(net, batch=5):
    layers = prunable_neuron_layers(net)
    assert [type(m).__name__ for _, m in layers] == ["Conv2d", "Conv2d", "Linear"]  # the head is left out
    recorder = PSPRecorder(layers)
    recorder.attach()
    net.train()
    x = torch.randn(batch, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits = net(x)
    return logits, recorder.ordered()


def test_bounded_and_full_sensitivity_equal_brute_force():
    logits, psps = _forward(_net())
    expected_bounded, expected_full = _brute_force(logits, psps)
    got_bounded = bounded_sensitivity(logits, psps)
    got_full = full_sensitivity(logits, psps)
    got_full_loop = full_sensitivity(logits, psps, batched=False)
    for eb, ef, gb, gf, gl in zip(expected_bounded, expected_full, got_bounded, got_full, got_full_loop):
        assert gb.shape == eb.shape
        torch.testing.assert_close(gb, eb, atol=1e-6, rtol=0)
        torch.testing.assert_close(gf, ef, atol=1e-6, rtol=0)
        torch.testing.assert_close(gl, ef, atol=1e-6, rtol=0)
        # |sum| <= sum |.|, and the values are not trivially zero
        assert bool((gb <= gf + 1e-12).all()) and float(gf.max()) > 1e-3


def test_bounded_sensitivity_uses_every_conv_channel():
    # The reference code's bounded mode keeps channel 0 only; here every channel has its own value.
    logits, psps = _forward(_net())
    conv1 = bounded_sensitivity(logits, psps)[0]
    assert conv1.shape == (4,) and len(set(conv1.tolist())) == 4


def test_sensitivity_has_no_extra_batch_factor():
    # Duplicating the batch must not change a batch mean (the reference's full mode divides by B twice).
    net = _net()
    layers = prunable_neuron_layers(net)
    recorder = PSPRecorder(layers)
    recorder.attach()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    one = full_sensitivity(net(x), recorder.ordered())
    two = full_sensitivity(net(torch.cat([x, x])), recorder.ordered())
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_local_insensitivity_is_sign_of_mean_psp():
    z = torch.tensor([[[[1.0, -3.0]], [[0.5, 0.5]]], [[[1.0, 0.0]], [[-2.0, 0.0]]]])  # [2, 2, 1, 2]
    # neuron 0 mean = (1 - 3 + 1 + 0)/4 = -0.25 -> 1; neuron 1 mean = (0.5 + 0.5 - 2 + 0)/4 = -0.25 -> 1
    assert local_insensitivity([z])[0].tolist() == [1.0, 1.0]
    z[0, 1] = 5.0
    assert local_insensitivity([z])[0].tolist() == [1.0, 0.0]


def test_shrink_equals_formula():
    torch.manual_seed(3)
    w = torch.randn(4, 3, 2, 2)
    s = torch.tensor([0.0, 0.5, 1.0, 2.0])
    lmbda = 0.1
    expected = w.clone()
    for n in range(4):
        expected[n] = w[n] - lmbda * max(0.0, 1 - float(s[n])) * w[n]
    got = w.clone()
    shrink_neurons_(got, insensitivity(s), lmbda)
    torch.testing.assert_close(got, expected, atol=0, rtol=1e-6)
    assert torch.equal(got[2], w[2]) and torch.equal(got[3], w[3])  # S >= 1: untouched


class _OneStep:
    """The part of TrainLoop the regularizer sees."""

    def __init__(self, model, lr):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)


@pytest.mark.parametrize("sensitivity", ["bounded", "full", "local"])
def test_regularizer_step_shrinks_each_neuron_after_the_sgd_step(sensitivity):
    net = _net()
    loop = _OneStep(net, lr=0.1)
    reg = SereneRegularizer(net, lmbda=0.2, sensitivity=sensitivity)
    reg.on_run_start(loop)
    x = torch.randn(6, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = net(x)
    loss = nn.functional.cross_entropy(logits, y)
    psps = reg.recorder.ordered()
    if sensitivity == "bounded":
        ins = [insensitivity(s) for s in bounded_sensitivity(logits, psps)]
    elif sensitivity == "full":
        ins = [insensitivity(s) for s in full_sensitivity(logits, psps)]
    else:
        ins = local_insensitivity(psps)
    reg.before_backward(loop, x, y, logits, loss)
    loss.backward()
    reg.after_backward(loop, x, y, logits, loss)
    loop.optimizer.step()
    stepped = {n: m.weight.detach().clone() for n, m in reg.layers}
    biases = {n: m.bias.detach().clone() for n, m in reg.layers}
    head_before = net[8].weight.detach().clone()
    reg.after_step(loop)
    for (name, module), i in zip(reg.layers, ins):
        factor = (1 - 0.2 * i).view(-1, *([1] * (module.weight.dim() - 1)))
        torch.testing.assert_close(module.weight.detach(), stepped[name] * factor, atol=1e-12, rtol=0)
        assert torch.equal(module.bias.detach(), biases[name])  # biases are not regularized
    assert torch.equal(net[8].weight.detach(), head_before)  # the head is never shrunk
    reg.on_run_end(loop)
    assert not reg.recorder._handles


def test_neuron_lobster_uses_ema_of_loss_gradient_and_shrinks_bias():
    net = _net()
    loop = _OneStep(net, lr=0.0)  # lr 0: only the regularizer moves the weights
    reg = SereneRegularizer(net, lmbda=0.5, sensitivity="neuron-lobster")
    reg.on_run_start(loop)
    grads_seen = []
    for step in range(2):
        x = torch.randn(4, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + step))
        y = torch.tensor([0, 1, 2, 0])
        logits = net(x)
        psps = reg.recorder.ordered()
        loss = nn.functional.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, psps, retain_graph=True)
        grads_seen.append([4 * g.transpose(0, 1).reshape(g.shape[1], -1).mean(1) for g in grads])
        reg.before_backward(loop, x, y, logits, loss)
        loss.backward()
        reg.after_backward(loop, x, y, logits, loss)
        w_before = [m.weight.detach().clone() for _, m in reg.layers]
        b_before = [m.bias.detach().clone() for _, m in reg.layers]
        loop.optimizer.step()
        reg.after_step(loop)
    for i, (_, m) in enumerate(reg.layers):
        ema = 0.9 * grads_seen[0][i] + 0.1 * grads_seen[1][i]
        ins = (1 - ema.abs()).clamp(min=0)
        torch.testing.assert_close(m.bias.detach(), b_before[i] * (1 - 0.5 * ins), atol=1e-12, rtol=0)
        factor = (1 - 0.5 * ins).view(-1, *([1] * (m.weight.dim() - 1)))
        torch.testing.assert_close(m.weight.detach(), w_before[i] * factor, atol=1e-12, rtol=0)

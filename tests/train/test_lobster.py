"""LOBSTER: w <- w' - lambda * w' * relu(1 - |g|) after the optimizer step, on every layer parameter."""

import torch
from torch import nn

from potatura.train.lobster import LobsterRegularizer, parameter_insensitivity
from potatura.train.masks import layer_parameters


class _Loop:
    def __init__(self, model, lr):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


def test_parameter_insensitivity():
    g = torch.tensor([0.0, 0.25, -0.5, 1.0, -3.0])
    assert parameter_insensitivity(g).tolist() == [1.0, 0.75, 0.5, 0.0, 0.0]


def test_lobster_step_equals_formula_on_weights_biases_and_batchnorm():
    net = _net()
    params = layer_parameters(net)
    assert set(params) == {"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"}
    lr, lmbda = 0.5, 0.3
    loop = _Loop(net, lr)
    reg = LobsterRegularizer(net, lmbda)
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 4
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = 0.0  # a zero stays zero
    before = {n: p.detach().clone() for n, p in params.items()}
    logits = net(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    reg.after_backward(loop, x, y, logits, loss)
    loop.optimizer.step()
    reg.after_step(loop)
    for name, p in params.items():
        stepped = before[name] - lr * grads[name]
        expected = stepped - lmbda * stepped * torch.clamp(1 - grads[name].abs(), min=0)
        torch.testing.assert_close(p.detach(), expected, atol=1e-7, rtol=1e-6, msg=name)
    # the shrink really happened (lambda is not scaled by the learning rate)
    stepped = before["4.weight"] - lr * grads["4.weight"]
    assert float((stepped - params["4.weight"].detach()).abs().max()) > 0.01 * lmbda


def test_disabled_lobster_changes_nothing():
    net = _net()
    loop = _Loop(net, 0.0)
    reg = LobsterRegularizer(net, 0.3)
    reg.enabled = False
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(4, 1, 6, 6)
    logits = net(x)
    loss = nn.functional.cross_entropy(logits, torch.arange(4))
    loss.backward()
    reg.after_backward(loop, x, None, logits, loss)
    loop.optimizer.step()
    reg.after_step(loop)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))

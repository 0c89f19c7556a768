"""SeReNe on BatchNorm models: the per-sample sensitivity (batch statistics held fixed) is the paper's
dy_b/dz_b, checked against a sample-by-sample brute force; the batch mode differs."""

import copy

import pytest
import torch
from torch import nn

from potatura.train.serene import SereneRegularizer


class TinyBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(self.flatten(self.relu(self.bn(self.conv(x)))))


def _regularizer_sensitivity(model, x, mode):
    reg = SereneRegularizer(model, lmbda=0.5, sensitivity="bounded", head="fc", bn_sensitivity=mode)
    reg.recorder.attach()
    model.train()
    logits = model(x)
    loss = logits.sum()
    reg.before_backward(None, x, None, logits, loss)
    reg.recorder.detach()
    return 1.0 - reg.neuron_insensitivity[0]  # S < 1 here, so relu(1 - S) = 1 - S


def _brute_force_per_sample(model, x):
    """Each sample alone, BatchNorm normalizing with the whole batch's statistics (as constants)."""
    with torch.no_grad():
        z = model.conv(x)
        mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
    fixed = copy.deepcopy(model).eval()
    fixed.bn.running_mean.copy_(mean)
    fixed.bn.running_var.copy_(var)
    per_sample = []
    for b in range(len(x)):
        zb = fixed.conv(x[b:b + 1])
        zb.retain_grad()
        y = fixed.fc(fixed.flatten(fixed.relu(fixed.bn(zb))))
        y.sum().backward()
        per_sample.append(zb.grad.abs().mean((0, 2, 3)))
    return torch.stack(per_sample).mean(0) / 4  # alpha = 1 / classes


def test_per_sample_bn_sensitivity_matches_brute_force_and_batch_mode_differs():
    torch.manual_seed(0)
    state = TinyBN().state_dict()
    x = torch.randn(16, 1, 4, 4)

    def fresh():
        m = TinyBN()
        m.load_state_dict(state)
        return m

    model = fresh()
    per_sample = _regularizer_sensitivity(model, x, "per-sample")
    expected = _brute_force_per_sample(fresh(), x)
    assert torch.allclose(per_sample, expected, rtol=1e-4, atol=1e-7), (per_sample, expected)
    # The extra forward leaves the running statistics as one training forward moved them.
    once = fresh().train()
    once(x)
    assert torch.equal(model.bn.running_mean, once.bn.running_mean)
    assert torch.equal(model.bn.running_var, once.bn.running_var)
    batch = _regularizer_sensitivity(fresh(), x, "batch")
    assert not torch.allclose(batch, expected, rtol=1e-2)


def test_models_without_batchnorm_are_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(8, 5)
    a = SereneRegularizer(model, 0.5, head="2", bn_sensitivity="per-sample")
    b = SereneRegularizer(model, 0.5, head="2", bn_sensitivity="batch")
    outs = []
    for reg in (a, b):
        reg.recorder.attach()
        logits = model(x)
        reg.before_backward(None, x, None, logits, logits.sum())
        reg.recorder.detach()
        outs.append(reg.neuron_insensitivity[0])
    assert torch.equal(outs[0], outs[1])


def test_unknown_mode_refused():
    with pytest.raises(ValueError, match="per-sample"):
        SereneRegularizer(TinyBN(), 0.1, head="fc", bn_sensitivity="other")

"""Every zoo model, random neuron masks: the simplified model computes the masked model's logits.

Masks (hypothesis): per prunable layer none / a quarter / half / 90% / all but one neuron dead;
BN statistics and biases random and non-zero, so every dead neuron emits a constant.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from potatura.simplify import BiasMap, simplify
from potatura.simplify.pipeline import TrainModeWarning
from tests.simplify.masks import (DEAD_RATES, ZOO_CASES, conv_linear_parameters, mask_model, predicted_parameters,
                                  prunable_layers, zoo_model)

RELATIVE_TOLERANCE = 1e-5


def _assert_same_logits(reference, simplified, x):
    with torch.no_grad():
        a, b = reference(x), simplified(x)
    scale = float(a.abs().max())
    diff = float((a - b).abs().max())
    assert diff <= RELATIVE_TOLERANCE * scale, f"max |logit difference| {diff:.3g} vs logit scale {scale:.3g}"
    assert torch.equal(a.argmax(1), b.argmax(1))
    return diff, scale


def _masks(case):
    model, _ = zoo_model(case)
    n = len(prunable_layers(model))
    return st.tuples(st.lists(st.sampled_from(DEAD_RATES), min_size=n, max_size=n), st.integers(0, 2 ** 31 - 1))


@pytest.mark.parametrize("case", list(ZOO_CASES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_simplified_logits_equal_masked_logits(case, data):
    rates, seed = data.draw(_masks(case), label="rates, seed")
    torch.manual_seed(seed)
    model, shape = zoo_model(case)
    alive = mask_model(model, rates, seed)
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(seed))

    result = simplify(model, x[:1])
    simplified = result.model
    _assert_same_logits(model, simplified, x)

    # Exactly the predicted layers remain: nothing alive was cut, nothing dead was left behind
    # except the constant channels kept where a bias map would have cost more (listed, with their cost).
    kept_instead = sum(r["parameters_kept"] for r in result.summary["constant_channels_kept"])
    assert conv_linear_parameters(simplified) == predicted_parameters(case, model, alive) + kept_instead
    assert result.summary["parameters_after"] <= result.summary["parameters_before"]
    kinds = {type(m) for m in simplified.modules()}
    assert not kinds & {nn.BatchNorm1d, nn.BatchNorm2d}, "every BN of the zoo follows a conv and is folded"
    assert result.summary["parameters_after"] == sum(p.numel() for p in simplified.parameters())
    assert result.summary["bias_map_values"] == sum(m.bias.numel() for m in simplified.modules()
                                                    if isinstance(m, BiasMap))
    unpruned = predicted_parameters(case, model, {k: np.ones_like(v) for k, v in alive.items()})
    if predicted_parameters(case, model, alive) < unpruned:
        assert result.summary["macs_after"] < result.summary["macs_before"]
    else:  # e.g. dead channels of a residual stream that another branch keeps alive
        assert result.summary["macs_after"] == result.summary["macs_before"]


@pytest.mark.parametrize("case", ["lenet5", "vgg-small", "resnet8", "densenet-small"])
def test_simplifying_twice_is_a_no_op(case):
    model, shape = zoo_model(case)
    rates = [DEAD_RATES[i % len(DEAD_RATES)] for i in range(len(prunable_layers(model)))]
    mask_model(model, rates, seed=3)
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(3))
    once = simplify(model, x[:1])
    twice = simplify(once.model, x[:1])
    assert twice.summary["parameters_after"] == once.summary["parameters_after"]
    assert twice.summary["macs_after"] == once.summary["macs_after"]
    assert [(r["in_after"], r["out_after"]) for r in twice.summary["layers"]] == \
        [(r["in_before"], r["out_before"]) for r in twice.summary["layers"]]
    assert [m.bias.shape for m in twice.model.modules() if isinstance(m, BiasMap)] == \
        [m.bias.shape for m in once.model.modules() if isinstance(m, BiasMap)]
    with torch.no_grad():
        torch.testing.assert_close(twice.model(x), once.model(x), rtol=1e-6, atol=1e-6)


def test_unpruned_model_only_loses_its_batchnorms():
    model, shape = zoo_model("resnet8")
    mask_model(model, ["none"] * len(prunable_layers(model)), seed=1)
    x = torch.randn(4, *shape)
    result = simplify(model, x[:1])
    bn_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    conv_without_bias = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is None)
    assert result.summary["parameters_after"] == result.summary["parameters_before"] - bn_params + conv_without_bias
    assert result.summary["bias_map_layers"] == []
    assert all(a["channels_after"] == a["channels_before"] for a in result.summary["residual_adds"])
    _assert_same_logits(model, result.model, x)


def test_the_input_model_is_not_modified_and_eval_semantics_are_used():
    model, shape = zoo_model("vgg-small")
    mask_model(model, ["half"] * len(prunable_layers(model)), seed=2)
    model.train()  # BN in training mode would update its statistics if simplify ran it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, *shape)
    with pytest.warns(TrainModeWarning, match=r"model VGG is in train mode \(model.training=True"):
        result = simplify(model, x[:1])
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(m.training for m in model.modules())
    assert not result.model.training
    _assert_same_logits(model.eval(), result.model, x)


def test_a_model_in_eval_mode_gives_no_train_mode_warning():
    model, shape = zoo_model("lenet5")
    mask_model(model, ["half"] * len(prunable_layers(model)), seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainModeWarning)
        simplify(model.eval(), torch.randn(1, *shape))

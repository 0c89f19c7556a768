"""In-place operators: simplify rewrites them out of place exactly, or refuses naming the node.

Each model reads a tensor again after an in-place change of it (under its own name or another):
simplify's analysis must see the changed values. c1 has pruned channels with non-zero constants
(0.7 survives the ReLU), so reading a stale value would fold a wrong constant.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from potatura.errors import UnsupportedError
from potatura.simplify import simplify


class _Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def head(self, h):
        return self.fc(torch.flatten(self.c2(h), 1))


class ReluInplaceThenReadAgain(_Base):
    """a = c1(x); b = relu_inplace(a); c2(a + b): a is relu(a) by the time of the add."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.c1(x)
        b = self.relu(a)
        return self.head(a + b)


class IdentityBeforeInplaceRelu(_Base):
    def __init__(self):
        super().__init__()
        self.keep = nn.Identity()

    def forward(self, x):
        a = self.c1(x)
        b = F.relu(self.keep(a), inplace=True)  # nn.Identity returns `a` itself: a changes too
        return self.head(a + b)


class AddInplaceWithAlias(_Base):
    def forward(self, x):
        a = self.c1(x)
        skip = a
        a.add_(1)  # skip is the same tensor
        return self.head(torch.relu(a) + skip)


class ChainOfInplaceOps(_Base):
    def forward(self, x):
        a = self.c1(x)
        b = a
        a.mul_(2)
        torch.relu_(b)
        c = F.leaky_relu(a, 0.1, True)
        return self.head(a + b + c)


class AugmentedAssignWithAlias(_Base):
    """`a += f(a)`: fx records `a + f(a)` (no in-place), so `skip` would keep the old value."""

    def __init__(self):
        super().__init__()
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)

    def forward(self, x):
        a = self.c1(x)
        skip = a
        a += self.c3(a)
        return self.head(a + skip)


class InplaceThroughAView(_Base):
    def forward(self, x):
        a = self.c1(x)
        flat = a.view(a.size(0), -1)
        a.relu_()
        return self.head(a) + flat.sum(1, keepdim=True)


class ZeroInplace(_Base):
    def forward(self, x):
        a = self.c1(x)
        out = self.head(a)
        a.zero_()
        return out + a.sum()


def _pruned(model_class):
    torch.manual_seed(0)
    model = model_class().eval()
    with torch.no_grad():
        model.c1.weight[[1, 4]] = 0
        model.c1.bias[[1, 4]] = torch.tensor([0.7, -0.3])  # relu keeps 0.7: a non-zero constant
    return model


@pytest.mark.parametrize("model_class", [ReluInplaceThenReadAgain, IdentityBeforeInplaceRelu, AddInplaceWithAlias,
                                         ChainOfInplaceOps])
def test_inplace_changes_are_rewritten_out_of_place_exactly(model_class):
    model = _pruned(model_class)
    x = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    result = simplify(model, x[:1])
    with torch.no_grad():
        reference, simplified = model(x.clone()), result.model(x.clone())
    scale = float(reference.abs().max())
    assert float((reference - simplified).abs().max()) <= 1e-5 * scale
    assert result.summary["inplace_rewritten"]
    assert result.model.get_submodule("c1").out_channels < 6  # channel 4 (constant 0 after relu) went
    # The simplified graph holds no in-place operator any more.
    for node in result.model.graph.nodes:
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        assert not (name.endswith("_") and not name.startswith("_")), node
        assert node.kwargs.get("inplace") is not True, node
        if node.op == "call_module":
            assert getattr(result.model.get_submodule(node.target), "inplace", False) is not True, node


def test_the_model_passed_in_keeps_its_inplace_modules():
    model = _pruned(ReluInplaceThenReadAgain)
    simplify(model, torch.randn(1, 3, 5, 5))
    assert model.relu.inplace is True


def test_augmented_assignment_that_fx_does_not_record_is_refused_naming_the_layer():
    model = _pruned(AugmentedAssignWithAlias)
    with pytest.raises(UnsupportedError, match=r"output of layer 'c1' is changed in place.*\(a = a \+ b\)"):
        simplify(model, torch.randn(1, 3, 5, 5))


def test_inplace_change_seen_through_a_view_is_refused_naming_the_node():
    model = _pruned(InplaceThroughAView)
    with pytest.raises(UnsupportedError, match=r"node 'relu_' .* read later through a view of another shape "
                                               r"\(node 'view'"):
        simplify(model, torch.randn(1, 3, 5, 5))


def test_inplace_operator_without_an_out_of_place_form_is_refused_naming_the_node():
    model = _pruned(ZeroInplace)
    with pytest.raises(UnsupportedError, match=r"node 'zero_' \(call_method zero_\) changes 'c1' in place"):
        simplify(model, torch.randn(1, 3, 5, 5))

"""SimplifiedGraphModule: fx's per-call wrapper stays off through recompile, deepcopy and pickling."""

import copy
import io

import torch
from torch import nn

from potatura.simplify import SimplifiedGraphModule, simplify


def _simplified():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    with torch.no_grad():
        model[0].weight[1] = 0
    return model, simplify(model, torch.randn(1, 1, 6, 6)).model


def test_call_goes_straight_to_module_call_and_survives_copies():
    model, gm = _simplified()
    x = torch.randn(2, 1, 6, 6)
    copies = {"original": gm, "deepcopy": copy.deepcopy(gm)}
    buf = io.BytesIO()
    torch.save(gm, buf)
    buf.seek(0)
    copies["torch.load"] = torch.load(buf, weights_only=False)
    gm.graph.lint()
    gm.recompile()
    for name, m in copies.items():
        assert isinstance(m, SimplifiedGraphModule), name
        assert type(m).__call__ is nn.Module.__call__, name
        assert not m.training, name
        with torch.no_grad():
            torch.testing.assert_close(m(x), model(x), rtol=1e-5, atol=1e-6)
    assert copies["torch.load"].get_submodule("0").out_channels == 3

"""Shrinking during training: exact removal, optimizer state carried, equals masking, resume, expand."""

import pytest
import torch
from torch import nn

from potatura.config import TrainConfig
from potatura.errors import UnsupportedError
from potatura.models import build_model
from potatura.train.loop import TrainLoop, evaluate, seed_everything
from potatura.train.methods import build_pruning
from potatura.train.shrink import ShrinkDuringTraining, links
from potatura.train.stats import sparsity_report

SHAPE = (1, 8, 8)


def _lenet(seed=0):
    seed_everything(seed)
    return build_model("lenet5", SHAPE, 10, channels=(6, 12), hidden=24)


def test_links_of_lenet5_and_refusal_of_branches():
    model = _lenet()
    got = [(l.producer, l.consumer, l.flattened) for l in links(model, "fc2")]
    assert got == [("conv1", "conv2", False), ("conv2", "fc1", True), ("fc1", "fc2", False)]

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.c(self.b(h) + h)

    with pytest.raises(UnsupportedError, match="'a'"):
        links(Branch(), "c")


def test_shrink_is_exact_with_nonzero_constants_and_expands_back(digits_splits):
    model = _lenet()
    with torch.no_grad():
        model.conv1.weight[[1, 4]] = 0       # dead, bias non-zero: relu(b) folds into conv2 (no padding)
        model.conv1.bias[1] = 0.7
        model.conv2.weight[[0, 3, 5]] = 0    # dead conv2 channels feed fc1 through pool + flatten
        model.conv2.bias[[0, 3]] = torch.tensor([0.3, -0.2])
        model.fc1.weight[[2, 7, 8]] = 0
        model.fc1.bias[2] = 1.5
    x = digits_splits.x_test[:50]
    model.eval()
    before = model(x).detach()
    full_report = sparsity_report(model, SHAPE, head="fc2")
    hook = ShrinkDuringTraining(model, SHAPE, "fc2", every=1)
    removal = hook.shrink()
    assert {n: int((~r[1]).sum()) for n, r in removal.items()} == {"conv1": 2, "conv2": 3, "fc1": 3}
    assert model.conv1.weight.shape[0] == 4 and model.conv2.weight.shape == (9, 4, 3, 3)
    assert model.fc1.weight.shape == (21, 9) and model.fc2.weight.shape == (10, 21)
    after = model(x).detach()
    assert torch.allclose(after, before, atol=1e-5), (after - before).abs().max()
    # The report still counts against the architecture: removed neurons are pruned ones.
    shrunk_report = sparsity_report(model, SHAPE, head="fc2")
    assert shrunk_report["network"]["neurons"] == full_report["network"]["neurons"]
    assert shrunk_report["network"]["neurons_remaining"] == full_report["network"]["neurons_remaining"]
    hook.expand()
    assert model.conv1.weight.shape == (6, 1, 3, 3) and model.fc1.weight.shape == (24, 12)
    assert torch.allclose(model(x).detach(), before, atol=1e-5)
    fresh = _lenet()
    fresh.load_state_dict(model.state_dict())  # loads as the zoo architecture


def _oneshot_cfg(**kw):
    base = dict(method="magnitude-oneshot", keep_neurons={"conv1": 3, "conv2": 5, "fc1": 10}, oneshot_epoch=1,
                epochs=4, lr=0.05, momentum=0.9, weight_decay=1e-4, lr_schedule="constant", batch_size=64)
    base.update(kw)
    return TrainConfig(**base)


def test_shrinking_during_training_equals_masking(digits_splits, tmp_path):
    results = {}
    for shrink in (0, 1):
        model = _lenet()
        cfg = _oneshot_cfg(shrink_every=shrink)
        setup = build_pruning(cfg, model, SHAPE)
        seen = []
        loop = TrainLoop(model, digits_splits, cfg, seed=0, hooks=setup.hooks,
                         on_epoch=lambda m: seen.append(sum(p.numel() for p in model.parameters())))
        history = loop.run().history
        results[shrink] = (model, history, seen)
    masked, shrunk = results[0][0], results[1][0]
    # The shrunk run trained on a smaller network from epoch 2 on, and was expanded at the end.
    assert results[1][2][-1] < results[0][2][-1]
    assert results[1][1][1]["shrink_removed_neurons"] == 0 and results[1][1][0]["shrink_removed_neurons"] == 3 + 7 + 14
    x = digits_splits.x_test
    masked.eval(), shrunk.eval()
    diff = (masked(x) - shrunk(x)).abs().max().item()
    assert diff < 1e-5, diff
    assert [h["remaining_neurons_pct"] for h in results[0][1]] == [h["remaining_neurons_pct"] for h in results[1][1]]


def test_shrunk_run_resumes(digits_splits, tmp_path):
    def run(stop_after=None, seed_model=0):
        model = _lenet(seed_model)
        cfg = _oneshot_cfg(shrink_every=1)
        setup = build_pruning(cfg, model, SHAPE)
        loop = TrainLoop(model, digits_splits, cfg, seed=0, hooks=setup.hooks, checkpoint_dir=tmp_path / "ck")
        loop.run(stop_after=stop_after)
        return model

    run(stop_after=2)
    resumed = run(seed_model=5)
    model = _lenet()
    cfg = _oneshot_cfg(shrink_every=1)
    setup = build_pruning(cfg, model, SHAPE)
    TrainLoop(model, digits_splits, cfg, seed=0, hooks=setup.hooks).run()
    x = digits_splits.x_test
    assert torch.allclose(resumed.eval()(x), model.eval()(x), atol=1e-5)


def test_serene_with_shrinking_trains_and_reports(digits_splits):
    model = _lenet()
    cfg = TrainConfig(method="serene", epochs=14, pwe=1, twt=0.3, lmbda=0.01, finetune_epochs=2, shrink_every=2)
    setup = build_pruning(cfg, model, SHAPE)
    history = TrainLoop(model, digits_splits, cfg, seed=0, hooks=setup.hooks).run().history
    assert setup.shrink.events, "serene removes neurons at epoch 11 of this run: shrink must have acted"
    assert evaluate(model, digits_splits.x_test, digits_splits.y_test)["accuracy"] > 0.5
    assert model.conv1.weight.shape[0] == 6  # expanded back
    assert history[-1]["remaining_neurons_pct"] < 100


def test_neq_follows_shrinking(digits_splits):
    model = _lenet()
    cfg = _oneshot_cfg(epochs=6, shrink_every=1, neq={"eps": 0.05, "timing_batches": 0, "skip_min_frozen": 0.0})
    setup = build_pruning(cfg, model, SHAPE)
    history = TrainLoop(model, digits_splits, cfg, seed=0, hooks=setup.hooks).run().history
    assert history[0]["shrink_removed_neurons"] == 24
    # After the shrink the probe history has the kept channels only, and freezing went on.
    assert setup.neq.previous["conv1"].shape[1] == 3 and setup.neq.previous["fc1"].shape[1] == 10
    assert any(h["neq_frozen_pct"] > 0 for h in history[2:])
    assert evaluate(model, digits_splits.x_test, digits_splits.y_test)["accuracy"] > 0.5

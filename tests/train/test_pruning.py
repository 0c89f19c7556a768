"""The pruning methods inside the training loop: masks, targets, fine-tuning, resume."""

import pytest
import torch

from potatura.models import build_model
from potatura.train.config import TrainConfig
from potatura.train.loop import TrainLoop, seed_everything
from potatura.train.magnitude import keep_counts, neuron_l1_norms, prune_lowest_l1_
from potatura.train.masks import ZeroMask, alive_neurons, weight_parameters
from potatura.train.methods import build_pruning

SMALL = dict(channels=(6, 12), hidden=32)


def _model(seed=0):
    seed_everything(seed)
    return build_model("lenet5", (1, 8, 8), 10, **SMALL)


def _cfg(**kw):
    if kw.get("method") == "lobster":
        kw.setdefault("lmbda", 0.001)  # every parameter decays (head, biases): a gentler lambda
    base = dict(method="serene", sensitivity="bounded", lmbda=0.01, epochs=8, pwe=1, twt=0.3, finetune_epochs=2,
                batch_size=64, lr=0.05, momentum=0.9, lr_schedule="constant")
    base.update(kw)
    return TrainConfig(**base)


def _train(model, data, cfg, seed=0, **kw):
    setup = build_pruning(cfg, model, data.input_shape)
    loop = TrainLoop(model, data, cfg, seed=seed, hooks=setup.hooks, **kw)
    return loop, setup


@pytest.mark.parametrize("method", ["serene", "lobster"])
def test_pruned_parameters_stay_zero_through_further_training(digits_splits_module, method):
    data = digits_splits_module
    model = _model()
    cfg = _cfg(method=method)
    snapshots = []
    weights = weight_parameters(model)
    loop, setup = _train(model, data, cfg, on_epoch=lambda m: snapshots.append(
        {n: p.detach().eq(0).clone() for n, p in weights.items()}))
    result = loop.run()
    rounds = setup.schedule.rounds
    assert rounds and sum(r["zeroed"] for r in rounds) > 0, "no threshold round pruned anything"
    for before, after in zip(snapshots, snapshots[1:]):
        for name in before:
            assert bool(after[name][before[name]].all()), f"{name}: a pruned weight came back"
    # momentum buffers of pruned weights are zero too
    for name, p in weights.items():
        buf = loop.optimizer.state[p]["momentum_buffer"]
        assert bool((buf[p.detach() == 0] == 0).all()), name
    assert result.history[-1]["remaining_parameters_pct"] < 100.0
    phases = [h["phase"] for h in result.history]
    assert phases[-1] == "finetune" and phases[0] == "prune"


def test_zero_mask_keeps_zero_against_momentum():
    p = torch.nn.Parameter(torch.tensor([1.0, 0.0, 2.0]))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    mask = ZeroMask({"p": p})
    mask.refresh()
    for _ in range(3):
        opt.zero_grad()
        (p * torch.tensor([1.0, 5.0, 1.0])).sum().backward()
        opt.step()
        mask.apply(opt)
    assert p[1].item() == 0.0 and opt.state[p]["momentum_buffer"][1].item() == 0.0
    assert p[0].item() != 1.0


def test_serene_prunes_neurons_and_keeps_accuracy(digits_splits_module):
    from potatura.train.loop import evaluate

    data = digits_splits_module
    model = _model()
    cfg = _cfg(epochs=30, pwe=3, lmbda=0.005, finetune_epochs=4)
    loop, setup = _train(model, data, cfg)
    loop.run()
    acc = evaluate(model, data.x_test, data.y_test)["accuracy"]
    alive = {n: int(alive_neurons(m).sum()) for n, m in [("conv1", model.conv1), ("conv2", model.conv2), ("fc1", model.fc1)]}
    assert acc > 0.9, acc
    assert sum(alive.values()) < 0.9 * (6 + 12 + 32), alive
    assert int(alive_neurons(model.fc2).sum()) == 10  # the head keeps every output


def test_target_stops_pruning_then_finetunes(digits_splits_module):
    data = digits_splits_module
    model = _model()
    cfg = _cfg(epochs=40, target_parameters_pct=60.0, finetune_epochs=2)
    loop, setup = _train(model, data, cfg)
    result = loop.run()
    ended = [i for i, h in enumerate(result.history) if h["phase"] == "finetune"]
    assert setup.schedule.stop_reason.startswith("target 60% parameters")
    assert result.epochs_run < 40 and result.stopped_early
    first_ft = ended[0]
    assert result.history[first_ft - 1]["remaining_parameters_pct"] <= 60.0
    assert len(result.history) - first_ft == 2  # exactly finetune_epochs more epochs
    # no threshold rounds during fine-tuning
    assert all("threshold" not in h for h in result.history[first_ft:])
    # the constant LR of pruning anneals along a half cosine while fine-tuning: 0.05, then 0.05 * (1 + cos(pi/2)) / 2
    assert [h["lr"] for h in result.history[first_ft - 1:]] == pytest.approx([0.05, 0.05, 0.025])


@pytest.mark.parametrize("method,extra", [
    ("serene", {}), ("serene", {"sensitivity": "full"}), ("lobster", {}),
    ("serene", {"threshold": "neurons+parameters", "sensitivity_norm": "layer-max", "sensitivity_every": 3}),
])
def test_resume_equals_uninterrupted(tmp_path, digits_splits_module, method, extra):
    data = digits_splits_module
    cfg = _cfg(method=method, epochs=14, finetune_epochs=2, lr_schedule="plateau", lr_patience=1, lr_cooldown=0,
               **extra)
    full = _model()
    loop_a, setup_a = _train(full, data, cfg, seed=5, checkpoint_dir=tmp_path / "a")
    loop_a.run()
    assert setup_a.schedule.rounds, "the run should contain threshold rounds to make this test meaningful"

    part = _model()
    loop_b, _ = _train(part, data, cfg, seed=5, checkpoint_dir=tmp_path / "b")
    assert loop_b.run(stop_after=9).epochs_run == 9
    fresh = _model(seed=77)
    loop_c, setup_c = _train(fresh, data, cfg, seed=5, checkpoint_dir=tmp_path / "b")
    resumed = loop_c.run()
    assert resumed.resumed_from == 9 and resumed.epochs_run == 14
    for (name, a), (_, b) in zip(full.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["val_loss"] for h in loop_a.history] == [h["val_loss"] for h in loop_c.history]
    assert [h["lr"] for h in loop_a.history] == [h["lr"] for h in loop_c.history]
    assert setup_a.schedule.rounds == setup_c.schedule.rounds
    assert setup_c.schedule.phase == setup_a.schedule.phase


def test_oneshot_structured_magnitude_keeps_largest_l1_neurons(digits_splits_module):
    model = _model()
    norms = neuron_l1_norms(model.fc1)
    counts = keep_counts(model, "fc2", keep={"conv1": 3, "fc1": 5})
    kept = prune_lowest_l1_(model, counts)
    assert kept["fc1"] == sorted(torch.argsort(norms, descending=True)[:5].tolist())
    assert int(alive_neurons(model.fc1).sum()) == 5 and int(alive_neurons(model.conv1).sum()) == 3
    assert int(alive_neurons(model.conv2).sum()) == 12
    dropped = [i for i in range(32) if i not in kept["fc1"]]
    assert float(model.fc1.bias.detach()[dropped].abs().sum()) == 0.0
    assert keep_counts(model, "fc2", keep_pct=25.0) == {"conv1": 2, "conv2": 3, "fc1": 8}


def test_oneshot_method_fine_tunes_with_masks(digits_splits_module):
    from potatura.train.loop import evaluate

    data = digits_splits_module
    seed_everything(0)
    model = build_model("lenet5", (1, 8, 8), 10, **SMALL)
    cfg = TrainConfig(method="magnitude-oneshot", epochs=10, oneshot_epoch=5, keep_neurons={"fc1": 8, "conv2": 6},
                      lr_schedule="cosine")
    loop, setup = _train(model, data, cfg)
    result = loop.run()
    assert [h.get("pruned") for h in result.history][4] == "one-shot L1"
    assert int(alive_neurons(model.fc1).sum()) == 8 and int(alive_neurons(model.conv2).sum()) == 6
    assert result.history[-1]["remaining_neurons_pct"] == pytest.approx(100 * (6 + 6 + 8) / 50)
    assert evaluate(model, data.x_test, data.y_test)["accuracy"] > 0.8


def test_nan_loss_rolls_back_and_training_goes_on(digits_splits_module):
    from potatura.train.loop import TrainHook

    class PoisonOnce(TrainHook):
        """Turns the weights into NaN at the end of epoch 4, before the schedule sees the loss."""

        def on_epoch_end(self, loop, metrics):
            if metrics["epoch"] == 4:
                with torch.no_grad():
                    loop.model.fc1.weight.fill_(float("nan"))
                metrics["val_loss"] = float("nan")

    data = digits_splits_module
    model = _model()
    cfg = _cfg(epochs=7, pwe=5, finetune_epochs=1)
    setup = build_pruning(cfg, model, data.input_shape)
    loop = TrainLoop(model, data, cfg, seed=0, hooks=[PoisonOnce(), *setup.hooks])
    result = loop.run()
    assert result.history[3]["rolled_back"] == "nan"
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert all(h["train_loss"] == h["train_loss"] for h in result.history[4:])  # no NaN after the rollback
    assert result.history[-1]["val_accuracy"] > 0.5

"""The `train` section: bad hyperparameters get one clear line naming the field; presets fill unset fields."""

import pytest

from potatura.config import load_config
from potatura.errors import ConfigError
from potatura.train.config import TrainConfig
from potatura.train.presets import PRESETS, resolve_train_config


@pytest.mark.parametrize("train,expected", [
    ({"lmbda": -0.1}, "train.lmbda: lambda must be a finite number >= 0"),
    ({"lmbda": 1.5}, "train.lmbda: lambda must be < 1"),
    ({"twt": -0.05}, "train.twt: twt must be >= 0"),
    ({"pwe": -1}, "train.pwe: pwe must be >= 0"),
    ({"pwe": 0, "twt": 0.05}, "train: pwe 0 never detects a plateau"),
    ({"epochs": 5, "finetune_epochs": 10}, "finetune_epochs (10) exceeds epochs (5)"),
    ({"method": "magnitude-oneshot"}, "magnitude-oneshot needs target_neurons_pct"),
    ({"method": "lobster", "sensitivity": "full"}, "sensitivity 'full' applies to method serene only"),
    ({"method": "prune-everything"}, "train.method: got 'prune-everything'; accepted values:"),
    ({"sensitivity": "fast"}, "train.sensitivity: got 'fast'; accepted values:"),
    ({"target_parameters_pct": 0}, "train.target_parameters_pct"),
    ({"keep_neurons": {"fc1": 0}, "method": "magnitude-oneshot"}, "keep at least 1 neuron"),
    ({"lmbda_typo": 1}, "train.lmbda_typo: unknown field; accepted fields here: method, preset, sensitivity, lmbda"),
])
def test_bad_hyperparameters_give_one_clear_line(tmp_path, train, expected):
    import yaml

    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump({"train": train}))
    with pytest.raises(ConfigError) as err:
        load_config(flow)
    message = str(err.value)
    assert expected in message, message
    assert len(message.splitlines()) == 1 and message.startswith(str(flow))


def test_pwe_zero_without_twt_means_regularize_only():
    cfg = TrainConfig(pwe=0, twt=0)
    assert cfg.pwe == 0


def test_defaults_are_the_demo_serene_setup():
    cfg = load_config(None)
    assert cfg.train.method == "serene" and cfg.train.sensitivity == "bounded"
    resolved, name = resolve_train_config(cfg.train, "lenet5", "digits")
    assert name == "lenet5/digits"
    # the defaults equal the digits preset for SeReNe, so resolving changes nothing
    assert resolved.model_dump() == cfg.train.model_dump()


def test_preset_fills_only_unset_fields():
    cfg = TrainConfig(method="serene", lmbda=0.001, epochs=7)
    resolved, name = resolve_train_config(cfg, "lenet5", "fashion-mnist")
    preset = {**PRESETS[("lenet5", "fashion-mnist")]["common"], **PRESETS[("lenet5", "fashion-mnist")]["serene"]}
    assert name == "lenet5/fashion-mnist"
    assert resolved.lmbda == 0.001 and resolved.epochs == 7            # the user's values win
    assert resolved.batch_size == preset["batch_size"] and resolved.twt == preset["twt"]
    off, none = resolve_train_config(cfg.model_copy(update={"preset": "off"}), "lenet5", "fashion-mnist")
    assert none is None and off.batch_size == TrainConfig().batch_size


def test_preset_conflict_is_a_config_error():
    # valid alone (default epochs 100), but the Fashion-MNIST preset's shorter budget cannot hold it
    cfg = TrainConfig(method="serene", finetune_epochs=95)
    preset_epochs = PRESETS[("lenet5", "fashion-mnist")]["common"]["epochs"]
    assert preset_epochs < 95
    with pytest.raises(ConfigError, match=r"train: finetune_epochs \(95\) exceeds epochs .*preset"):
        resolve_train_config(cfg, "lenet5", "fashion-mnist")


def test_finetune_default_shrinks_with_a_short_budget():
    assert TrainConfig(epochs=8).effective_finetune_epochs() == 2  # unset: at most a quarter
    assert TrainConfig(epochs=8, finetune_epochs=5).effective_finetune_epochs() == 5


def test_shipped_fashion_flow_trains_the_configuration_of_the_readme_row():
    # README "Training", row "the preset": measured with exactly these values; the shipped flow
    # file must not override any of them (issue 16: a flow's epochs once overrode the preset's).
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "flows" / "fashion-lenet5.yaml")
    resolved, name = resolve_train_config(cfg.train, cfg.model.name, cfg.data.dataset)
    assert name == "lenet5/fashion-mnist"
    got = {k: getattr(resolved, k) for k in ("method", "sensitivity", "epochs", "batch_size", "lr", "momentum",
                                             "lr_schedule", "lmbda", "pwe", "twt", "threshold", "neuron_share",
                                             "sensitivity_norm", "sensitivity_every", "shrink_every")}
    assert got == {"method": "serene", "sensitivity": "bounded", "epochs": 60, "batch_size": 100, "lr": 0.05,
                   "momentum": 0.9, "lr_schedule": "constant", "lmbda": 1e-3, "pwe": 3, "twt": 0.1,
                   "threshold": "neurons+parameters", "neuron_share": 0.5, "sensitivity_norm": "layer-max",
                   "sensitivity_every": 2, "shrink_every": 5}
    assert resolved.effective_finetune_epochs() == 10 and cfg.seed == 0

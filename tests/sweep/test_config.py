"""The sweep file: dotted keys checked against the flow schema, one-line errors, parameter mapping."""

import pytest

from potatura.errors import ConfigError
from potatura.sweep.config import apply_params, load_sweep, validate_sweep

BASE = {
    "name": "s",
    "flow": {"stages": ["train", "simplify", "quant", "hwgen"]},
    "space": {
        "train.lmbda": {"float": [1e-4, 1e-2], "log": True},
        "train.target_neurons_pct": {"int": [20, 80], "step": 10},
        "bits": {"choices": [4, 6, 8], "keys": ["quant.weight_bits", "quant.act_bits"]},
        "hwgen.boards": {"choices": ["pynq-z2", "zcu104"]},
    },
    "objectives": ["accuracy", {"metric": "latency_us"}, "lut_fraction"],
    "constraints": [{"metric": "accuracy", "min": 0.5}],
}


def _error(space=None, **changes) -> str:
    raw = dict(BASE, **changes)
    if space is not None:
        raw["space"] = space
    with pytest.raises(ConfigError) as info:
        validate_sweep(raw, "s.yaml")
    return str(info.value)


def test_valid_sweep_and_trial_flow(tmp_path):
    loaded = validate_sweep(dict(BASE, runs_dir=str(tmp_path)), "s.yaml")
    assert [o.resolved_direction for o in loaded.config.objective_list()] == ["maximize", "minimize", "minimize"]
    flow = loaded.trial_flow(7, {"train.lmbda": 1e-3, "train.target_neurons_pct": 40, "bits": 4, "hwgen.boards": "zcu104"})
    assert flow["name"] == "7" and flow["runs_dir"] == str(tmp_path.resolve() / "s" / "trials")
    # one parameter, two keys; a scalar choice for a list field becomes a one-element list
    assert flow["quant"] == {"weight_bits": 4, "act_bits": 4}
    assert flow["hwgen"]["boards"] == ["zcu104"] and flow["train"]["lmbda"] == 1e-3
    assert loaded.base_raw.get("quant") is None, "the base mapping is not modified"


def test_unknown_key_names_the_parameter_and_the_accepted_fields():
    msg = _error(space={"train.lmbd": {"float": [0.0, 0.1]}})
    assert len(msg.splitlines()) == 1
    assert msg.startswith("s.yaml: space.train.lmbd: 'train.lmbd' is not a flow key: train has method,")
    assert "lmbda" in msg
    assert "is not a flow key: the flow file has" in _error(space={"trian.lr": {"choices": [0.1]}})
    assert "train.lr is a value, not a section" in _error(space={"train.lr.x": {"choices": [0.1]}})
    assert "quant.wieght_bits" in _error(space={"b": {"choices": [4], "keys": ["quant.wieght_bits"]}})


def test_per_layer_keys_go_through_the_dict_field():
    loaded = validate_sweep(dict(BASE, space={"quant.layers.conv1.weight_bits": {"int": [2, 8]}}), "s.yaml")
    assert loaded.trial_flow(0, {"quant.layers.conv1.weight_bits": 3})["quant"]["layers"] == {"conv1": {"weight_bits": 3}}


def test_values_outside_the_flow_schema_are_refused_before_any_trial():
    msg = _error(space={"quant.weight_bits": {"choices": [4, 20]}})
    assert msg == ("s.yaml: space.quant.weight_bits: value 20 makes an invalid flow: "
                   "quant.weight_bits: Input should be less than or equal to 16 (got 20)")
    assert "value 'nope' makes an invalid flow" in _error(space={"hwgen.boards": {"choices": ["nope"]}})
    assert "lambda must be < 1" in _error(space={"train.lmbda": {"float": [0.1, 2.0]}})


def test_bad_specs_objectives_and_samplers():
    assert "give exactly one of float" in _error(space={"train.lr": {"float": [0.1, 0.2], "int": [1, 2]}})
    assert "low must be <= high" in _error(space={"train.lr": {"float": [0.2, 0.1]}})
    assert "log range [0.0, 0.1] needs low > 0" in _error(space={"train.lr": {"float": [0.0, 0.1], "log": True}})
    assert "unknown metric 'speed'; accepted: accuracy" in _error(objectives=["speed"])
    assert "objectives: lut_fraction need the hwgen stage" in _error(flow={"stages": ["train", "simplify", "quant"]},
                                                                      objectives=["accuracy", "lut_fraction"])
    assert "grid sampler needs a step" in _error(sampler={"name": "grid"})
    assert "sampler.name: Input should be" in _error(sampler={"name": "cmaes"})
    assert "one board and one backend" in _error(space={"train.lr": {"choices": [0.1]}},
                                                 flow={"stages": ["train", "simplify", "quant", "hwgen"],
                                                       "hwgen": {"boards": ["pynq-z2", "zcu104"]}})


def test_load_sweep_reads_the_base_relative_to_the_file(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "base.yaml").write_text("name: b\nstages: [train, simplify, quant]\ntrain: {epochs: 3}\n")
    path = tmp_path / "flows" / "sweep.yaml"
    path.write_text("name: sw\nbase: base.yaml\nflow: {train: {batch_size: 32}}\n"
                    "space: {quant.weight_bits: {choices: [4, 8]}}\nobjectives: [accuracy]\n")
    loaded = load_sweep(path)
    assert loaded.base_raw["train"] == {"epochs": 3, "batch_size": 32} and loaded.base_cfg.stages == ["train", "simplify", "quant"]
    path.write_text("name: sw\nbase: missing.yaml\nspace: {quant.weight_bits: {choices: [4]}}\n")
    with pytest.raises(ConfigError, match="base flow file not found"):
        load_sweep(path)


def test_grid_values_of_ranges():
    loaded = validate_sweep(dict(BASE, space={"train.target_neurons_pct": {"int": [20, 50], "step": 10},
                                              "train.lr": {"float": [0.05, 0.1], "step": 0.025}},
                                 sampler={"name": "grid"}), "s.yaml")
    space = loaded.config.space
    assert space["train.target_neurons_pct"].grid_values("p") == [20, 30, 40, 50]
    assert space["train.lr"].grid_values("lr") == pytest.approx([0.05, 0.075, 0.1])
    assert apply_params({}, space, {"train.lr": 0.075}) == {"train": {"lr": 0.075}}

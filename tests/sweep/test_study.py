"""The Optuna side without flows: every sampler proposes points of the space; results, constraints and
failures told back; the journal reopened by --resume."""

import pytest

from potatura.sweep.config import validate_sweep
from potatura.sweep.study import flow_params, grid_points, open_study, suggest_all, tell

SPACE = {"train.lmbda": {"float": [1e-4, 1e-2], "log": True},
         "train.target_neurons_pct": {"int": [20, 80], "step": 10},
         "bits": {"choices": [4, 8], "keys": ["quant.weight_bits", "quant.act_bits"]},
         "hwgen.boards": {"choices": [["pynq-z2"], ["zcu104"]]}}


def _loaded(tmp_path, sampler, space=SPACE, n_trials=6):
    return validate_sweep({"name": f"st-{sampler}", "runs_dir": str(tmp_path), "space": space, "n_trials": n_trials,
                           "flow": {"stages": ["train", "simplify", "quant", "hwgen"]},
                           "objectives": ["accuracy", "lut_fraction"], "constraints": [{"metric": "accuracy", "min": 0.5}],
                           "sampler": {"name": sampler, "population_size": 2}}, "st.yaml")


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_samplers_propose_points_of_the_space_and_take_results(tmp_path, sampler):
    loaded = _loaded(tmp_path, sampler)
    study = open_study(loaded, resume=False)
    for i in range(6):
        trial = study.ask()
        params = flow_params(loaded, suggest_all(trial, loaded))
        assert 1e-4 <= params["train.lmbda"] <= 1e-2 and params["train.target_neurons_pct"] in range(20, 81, 10)
        assert params["bits"] in (4, 8) and params["hwgen.boards"] in (["pynq-z2"], ["zcu104"])
        flow = loaded.trial_flow(trial.number, params)
        assert flow["hwgen"]["boards"] == params["hwgen.boards"] and flow["quant"]["act_bits"] == params["bits"]
        if i == 2:
            result = {"status": "failed", "reason": "FitError: does not fit pynq-z2", "metrics": {}}
        else:
            result = {"status": "complete", "metrics": {"accuracy": 0.3 + 0.1 * i, "lut_fraction": 0.1 * i, "fits": True}}
        tell(study, loaded, trial, result)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert study.trials[2].user_attrs["reason"] == "FitError: does not fit pynq-z2"
    assert study.trials[0].user_attrs["constraints"] == [pytest.approx(0.2), 0.0]  # accuracy 0.3 < 0.5
    assert study.trials[3].user_attrs["constraints"] == [0.0, 0.0]
    # reopened from the journal (what --resume does): the same six trials
    again = open_study(loaded, resume=True)
    assert [t.number for t in again.trials] == list(range(6)) and again.trials[4].values == [0.7, pytest.approx(0.4)]


def test_grid_enqueues_every_point_once_in_order(tmp_path):
    space = {"bits": {"choices": [4, 8], "keys": ["quant.weight_bits"]}, "train.target_neurons_pct": {"int": [20, 40], "step": 10}}
    loaded = _loaded(tmp_path, "grid", space=space)
    assert grid_points(loaded) == [{"bits": b, "train.target_neurons_pct": p} for b in (4, 8) for p in (20, 30, 40)]
    study = open_study(loaded, resume=False)
    seen = [suggest_all(study.ask(), loaded) for _ in range(6)]
    assert seen == grid_points(loaded)


def test_a_missing_objective_fails_the_trial_with_the_reason(tmp_path):
    loaded = _loaded(tmp_path, "random")
    study = open_study(loaded, resume=False)
    trial = study.ask()
    suggest_all(trial, loaded)
    tell(study, loaded, trial, {"status": "complete", "metrics": {"accuracy": 0.9}, "stages": {"train": {}, "quant": {}}})
    assert study.trials[0].state.name == "FAIL"
    assert study.trials[0].user_attrs["reason"] == "objective lut_fraction not measured (stages run: train, quant)"

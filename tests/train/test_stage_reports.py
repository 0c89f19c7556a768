"""Train stage reports: fine-tuning length as run, progress after a resume, only the hyperparameters that
apply, metrics.json/curves.png every epoch, the pruning-end mark."""

import json

from potatura.config import TrainConfig, load_config
from potatura.flow import run_flow
from potatura.train import stage as train_stage
from potatura.train.plots import pruning_end_epoch
from potatura.train.stage import _ResumeProgress, method_description

FLOW = """
name: r
seed: 0
runs_dir: {runs}
stages: [train]
model:
  name: lenet5
  options: {{channels: [4, 8], hidden: 16}}
train:
  method: {method}
  epochs: {epochs}
  pwe: 1
  twt: 0.3
"""


def _run(tmp_path, method, epochs, monkeypatch=None):
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(runs=tmp_path / "runs", method=method, epochs=epochs))
    run_flow(load_config(path))
    out = tmp_path / "runs" / "r" / "train"
    return json.loads((out / "summary.json").read_text()), json.loads((out / "metrics.json").read_text())


def test_summary_finetune_epochs_is_what_ran_and_files_written_every_epoch(tmp_path, monkeypatch):
    writes = []
    real_write = train_stage.write_json

    def counting_write(path, data):
        if path.name == "metrics.json":
            writes.append(len(data))
        return real_write(path, data)

    monkeypatch.setattr(train_stage, "write_json", counting_write)
    # The digits preset says finetune_epochs 10; a 12-epoch budget caps it at a quarter: 3.
    summary, metrics = _run(tmp_path, "serene", 12)
    assert summary["hyperparameters"]["finetune_epochs"] == 3
    assert summary["finetune_epochs_run"] == sum(1 for m in metrics if m.get("phase") == "finetune") == 3
    assert writes[:len(metrics)] == list(range(1, len(metrics) + 1))  # one write per epoch, growing
    assert pruning_end_epoch(metrics) == len(metrics) - 3


def test_dense_run_describes_no_pruning_hyperparameters():
    dense = method_description(TrainConfig(method="none"))
    assert "lambda" not in dense and "pwe" not in dense and "twt" not in dense
    assert "lambda 0.01" in method_description(TrainConfig(method="serene"))
    assert "NEq eps 0.001" in method_description(TrainConfig(method="none", neq={}))
    plain = method_description(TrainConfig(method="serene"))
    assert "threshold" not in plain and "normalized" not in plain and "every" not in plain
    variant = method_description(TrainConfig(method="serene", threshold="neurons+parameters", neuron_share=0.4,
                                             sensitivity_norm="layer-max", sensitivity_every=2))
    assert variant.endswith(", threshold neurons+parameters (neuron share 0.4), sensitivity normalized layer-max, "
                            "sensitivity every 2 steps")


def test_progress_moves_to_the_resumed_epoch():
    calls = []

    class Loop:
        epoch = 7

    _ResumeProgress(lambda **kw: calls.append(kw), 30).on_run_start(Loop())
    assert calls and calls[0]["completed"] == 7
    Loop.epoch = 0
    calls.clear()
    _ResumeProgress(lambda **kw: calls.append(kw), 30).on_run_start(Loop())
    assert calls == []


def test_pruning_end_mark():
    hist = [{"epoch": 1, "phase": "prune"}, {"epoch": 2, "phase": "prune"}, {"epoch": 3, "phase": "finetune"}]
    assert pruning_end_epoch(hist) == 2
    assert pruning_end_epoch([{"epoch": 1}, {"epoch": 2, "pruned": "one-shot L1"}]) == 2
    assert pruning_end_epoch([{"epoch": 1}]) is None


def test_potatura_train_neq_and_shrink_flags(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(runs=tmp_path / "runs", method="magnitude-oneshot", epochs=4)
                    + "  target_neurons_pct: 50\n  oneshot_epoch: 1\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "potatura", "train", str(path), "--neq", "--set", "train.neq.eps=0.05",
                          "--shrink-every", "1"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "runs" / "r" / "train" / "summary.json").read_text())
    assert summary["hyperparameters"]["neq"]["eps"] == 0.05 and summary["hyperparameters"]["shrink_every"] == 1
    assert summary["shrink"]["events"][0]["removed"] == {"conv1": 2, "conv2": 4, "fc1": 8}
    assert "mean_frozen_pct" in summary["neq"]
    assert summary["neurons_per_layer"]["conv1"] == [2, 4]  # model.pt expanded back: 2 of 4 alive


def test_potatura_train_threshold_and_sensitivity_norm_flags(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(runs=tmp_path / "runs", method="serene", epochs=16) + "  lmbda: 0.01\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "potatura", "train", str(path)]
    bad = subprocess.run(cmd + ["--threshold", "neurons"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "train.threshold: got 'neurons'; accepted values:" in bad.stderr
    res = subprocess.run(cmd + ["--threshold", "neurons+parameters", "--sensitivity-norm", "layer-max"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "runs" / "r" / "train" / "summary.json").read_text())
    hyper = summary["hyperparameters"]
    assert (hyper["threshold"], hyper["sensitivity_norm"]) == ("neurons+parameters", "layer-max")
    rounds = summary["pruning_rounds"]
    assert rounds and all("neuron_threshold" in r and r["val_loss_after"] <= r["bound"] * (1 + 1e-9) for r in rounds)

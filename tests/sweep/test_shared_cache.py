"""The stage cache through the flow runner and a 6-trial sweep: trials sharing a training config train once."""

import csv
import json

from potatura.artifacts import read_json
from potatura.config import load_config
from potatura.flow import run_flow
from potatura.sweep.config import load_sweep
from potatura.sweep.study import run_sweep

FLOW = {"stages": ["train", "simplify", "quant"], "model": {"name": "lenet300", "options": {"hidden": [24, 12]}},
        "train": {"method": "serene", "epochs": 2, "preset": "off", "pwe": 1, "finetune_epochs": 0},
        "quant": {"calibration_samples": 128}}


def test_run_flow_restores_stages_from_the_cache_in_another_run_directory(tmp_path):
    cache = tmp_path / "cache"
    first = load_config(None, dict(FLOW, name="a", runs_dir=str(tmp_path)))
    assert [o.status for o in run_flow(first, show_progress=False, stage_cache=cache)] == ["done"] * 3
    # Same training, other bit width: train and simplify come from the cache, quant runs.
    second = load_config(None, dict(FLOW, name="b", runs_dir=str(tmp_path), quant={"weight_bits": 4}))
    outcomes = run_flow(second, show_progress=False, stage_cache=cache)
    assert [(o.name, o.status) for o in outcomes] == [("train", "cached"), ("simplify", "cached"), ("quant", "done")]
    a, b = read_json(tmp_path / "a" / "manifest.json")["stages"], read_json(tmp_path / "b" / "manifest.json")["stages"]
    assert b["train"]["outputs"] == a["train"]["outputs"] and b["train"]["status"] == "done"
    assert b["train"]["cache"]["key"] == f"train/{a['train']['input_hash']}"
    assert (tmp_path / "b" / "train" / "model.pt").read_bytes() == (tmp_path / "a" / "train" / "model.pt").read_bytes()
    assert b["quant"]["input_hash"] != a["quant"]["input_hash"] and "cache" not in b["quant"]
    assert "stage train: restored from the stage cache" in (tmp_path / "b" / "run.log").read_text()
    # A rerun of b: everything unchanged, skipped as usual.
    assert [o.status for o in run_flow(second, show_progress=False, stage_cache=cache)] == ["skipped"] * 3


def test_six_trial_sweep_on_two_workers_trains_each_config_once(write_sweep, client, tmp_path):
    path = write_sweep(name="six")  # grid: 3 bit widths x 2 learning rates = 2 training configs
    outcome = run_sweep(load_sweep(path), client=client)
    s = outcome.summary
    assert (s["trials"], s["complete"], s["failed"]) == (6, 6, 0)
    assert s["stage_executions"] == {"train": 2, "simplify": 2, "quant": 6}
    assert s["stage_cache_hits"] == {"train": 4, "simplify": 4}
    assert s["seconds_saved_by_cache"] > 0
    trained = {}
    for r in outcome.trials:
        if not r["stages"]["train"]["cached"]:
            trained.setdefault(r["params"]["train.lr"], []).append(r["number"])
    assert sorted(trained) == [0.05, 0.1] and all(len(v) == 1 for v in trained.values())
    assert len({r["worker"] for r in outcome.trials}) == 2, "both workers ran trials"

    sweep_dir = tmp_path / "runs" / "six"
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    assert doc["summary"] == s and doc["objectives"][0]["metric"] == "accuracy"
    # The front: recomputed by hand from the trials' values (accuracy max, weight bytes min).
    values = {r["number"]: r["values"] for r in outcome.trials}
    dominated = {n for n, (acc, size) in values.items()
                 if any(a >= acc and b <= size and (a, b) != (acc, size) for a, b in values.values())}
    assert sorted(doc["pareto"]["all"]) == sorted(set(values) - dominated)
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
    assert len(rows) == 6 and {r["pareto"] for r in rows} <= {"0", "1"}
    assert sum(r["pareto"] == "1" for r in rows) == len(doc["pareto"]["all"])
    assert (sweep_dir / "front_all.png").read_bytes()[:4] == b"\x89PNG"
    md = (sweep_dir / "sweep.md").read_text()
    assert "train 2 run / 4 reused" in md and "## Pareto front: all" in md
    # accuracy is the quant stage's measured test accuracy
    for r in outcome.trials:
        quant = read_json(sweep_dir / "trials" / str(r["number"]) / "quant" / "summary.json")
        assert r["metrics"]["accuracy"] == quant["accuracy"]["test"]["quantized"]


def test_a_restored_stage_names_its_own_run_directory_and_stays_intact(tmp_path):
    """Stage outputs that name their run directory (as hwgen's report.json and hls4ml_config.yml
    do) are rewritten on restore; the next run sees the restored stage as intact and skips it."""
    import subprocess

    from potatura.artifacts import tree_sha256, write_json

    cache = tmp_path / "cache"
    flow = dict(FLOW, stages=["train", "simplify"])
    run_flow(load_config(None, dict(flow, name="a", runs_dir=str(tmp_path))), show_progress=False, stage_cache=cache)
    a = (tmp_path / "a").resolve()
    # Make the cached simplify entry name run a, as hwgen's entries do.
    entry = next((cache / "simplify").glob("[0-9a-f]*[0-9a-f]"))
    record = read_json(entry / "record.json")
    note = entry / "out" / "report.json"
    write_json(note, {"run_dir": str(a), "model": f"{a}/train/model.pt"})
    record["outputs"]["report"] = {"path": "simplify/report.json", "sha256": tree_sha256(note)}
    write_json(entry / "record.json", record)

    second = load_config(None, dict(flow, name="b", runs_dir=str(tmp_path)))
    assert [o.status for o in run_flow(second, show_progress=False, stage_cache=cache)] == ["cached", "cached"]
    b = tmp_path / "b"
    grep = subprocess.run(["grep", "-rlI", str(a), str(b / "train"), str(b / "simplify")], capture_output=True, text=True)
    assert grep.stdout == "", f"files naming run a: {grep.stdout}"
    assert read_json(b / "simplify" / "report.json") == {"run_dir": str(b.resolve()), "model": f"{b.resolve()}/train/model.pt"}
    assert [o.status for o in run_flow(second, show_progress=False, stage_cache=cache)] == ["skipped", "skipped"]

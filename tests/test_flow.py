"""The flow runner: run directory, manifest, caching, --from/--to, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from potatura.config import load_config
from potatura.errors import ConfigError, PotaturaError
from potatura.flow import run_flow
from potatura.models import load_model_file

FLOW = """
name: tiny
seed: 5
runs_dir: {runs}
stages: [train]
model:
  name: lenet300
  options: {{hidden: [24, 12]}}
train:
  method: none
  epochs: {epochs}
  batch_size: {batch}
"""


def _flow(tmp_path, epochs=2, batch=64):
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW.format(runs=tmp_path / "runs", epochs=epochs, batch=batch))
    return path


def test_run_writes_the_run_directory(tmp_path):
    cfg = load_config(_flow(tmp_path))
    outcomes = run_flow(cfg)
    run_dir = tmp_path / "runs" / "tiny"
    assert [(o.name, o.status) for o in outcomes] == [("train", "done")]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rec = manifest["stages"]["train"]
    assert rec["status"] == "done" and rec["seconds"] > 0 and len(rec["input_hash"]) == 64
    assert rec["tool_versions"]["torch"].startswith("2.13.0")
    assert set(rec["outputs"]) >= {"model", "metrics", "summary", "data_stats"}
    for out in rec["outputs"].values():
        assert (run_dir / out["path"]).exists() and len(out["sha256"]) == 64
    assert load_config(run_dir / "config.yaml") == cfg  # the resolved config round-trips
    assert "stage train: done" in (run_dir / "run.log").read_text()
    stats = json.loads((run_dir / "train" / "data_stats.json").read_text())
    assert stats["input_shape"] == [1, 8, 8] and stats["std"] > 0
    assert json.loads((run_dir / "time_per_stage.json").read_text())["train"] == rec["seconds"]
    assert not list(run_dir.rglob(".*.tmp")), "no temporary files left behind"


def test_unchanged_inputs_skip_changed_inputs_rerun(tmp_path):
    flow = _flow(tmp_path)
    run_flow(load_config(flow))
    model_path = tmp_path / "runs" / "tiny" / "train" / "model.pt"
    mtime = model_path.stat().st_mtime_ns
    assert [o.status for o in run_flow(load_config(flow))] == ["skipped"]
    assert model_path.stat().st_mtime_ns == mtime
    # a changed hyperparameter reruns the stage
    assert [o.status for o in run_flow(load_config(flow, {"train": {"batch_size": 32}}))] == ["done"]
    # a damaged output reruns the stage
    model_path.write_bytes(b"garbage")
    assert [o.status for o in run_flow(load_config(flow, {"train": {"batch_size": 32}}))] == ["done"]
    load_model_file(model_path)
    # --from forces the named stage
    assert [o.status for o in run_flow(load_config(flow, {"train": {"batch_size": 32}}), from_stage="train")] == ["done"]


def test_from_and_to_reject_unknown_stages(tmp_path):
    cfg = load_config(_flow(tmp_path))
    with pytest.raises(ConfigError, match="--from synth: not a stage of this flow"):
        run_flow(cfg, from_stage="synth")


def test_bad_config_leaves_earlier_run_intact(tmp_path):
    flow = _flow(tmp_path)
    run_flow(load_config(flow))
    run_dir = tmp_path / "runs" / "tiny"
    before = (run_dir / "manifest.json").read_text()
    flow.write_text(flow.read_text().replace("epochs: 2", "epochs: -3"))
    proc = subprocess.run([sys.executable, "-m", "potatura", "run", str(flow)], capture_output=True, text=True)
    assert proc.returncode == 2 and "train.epochs" in proc.stderr
    assert (run_dir / "manifest.json").read_text() == before
    load_model_file(run_dir / "train" / "model.pt")


def test_killed_run_resumes_and_matches_uninterrupted(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    flow_a, flow_b = _flow(tmp_path / "a", epochs=30, batch=8), _flow(tmp_path / "b", epochs=30, batch=8)
    env = dict(os.environ, POTATURA_TEST_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "potatura", "run", str(flow_b)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "b" / "runs" / "tiny" / "train" / "last.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the run ended before writing its first checkpoint"
    epochs_done = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= epochs_done < 30
    manifest = json.loads((tmp_path / "b" / "runs" / "tiny" / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "running"

    outcomes = run_flow(load_config(flow_b))
    assert [o.status for o in outcomes] == ["done"]
    log = (tmp_path / "b" / "runs" / "tiny" / "run.log").read_text()
    assert "stage train: resuming" in log and f"after epoch {epochs_done}" in log

    run_flow(load_config(flow_a))
    resumed, _ = load_model_file(tmp_path / "b" / "runs" / "tiny" / "train" / "model.pt")
    straight, _ = load_model_file(tmp_path / "a" / "runs" / "tiny" / "train" / "model.pt")
    for (name, x), (_, y) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(x, y), name


TWO_STAGES = """
name: two
runs_dir: {runs}
stages: [train, simplify]
model:
  name: lenet300
  options: {{hidden: [24, 12]}}
train:
  method: none
  epochs: 2
"""


def _two(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(TWO_STAGES.format(runs=tmp_path / "runs"))
    return path


def test_from_reruns_every_later_stage_and_to_stops(tmp_path):
    flow = _two(tmp_path)
    assert [(o.name, o.status) for o in run_flow(load_config(flow))] == [("train", "done"), ("simplify", "done")]
    assert [(o.name, o.status) for o in run_flow(load_config(flow))] == [("train", "skipped"), ("simplify", "skipped")]
    assert [(o.name, o.status) for o in run_flow(load_config(flow), from_stage="train")] == [("train", "done"), ("simplify", "done")]
    assert [(o.name, o.status) for o in run_flow(load_config(flow), to_stage="train")] == [("train", "skipped")]
    assert [(o.name, o.status) for o in run_flow(load_config(flow), from_stage="simplify")] == [("simplify", "done")]


def test_deterministic_training_writes_identical_files(tmp_path):
    flow = _two(tmp_path)
    run_flow(load_config(flow))
    manifest = json.loads((tmp_path / "runs" / "two" / "manifest.json").read_text())
    first = manifest["stages"]["train"]["outputs"]["model"]["sha256"]
    run_flow(load_config(flow), from_stage="train")
    manifest = json.loads((tmp_path / "runs" / "two" / "manifest.json").read_text())
    assert manifest["stages"]["train"]["outputs"]["model"]["sha256"] == first
    mode = (tmp_path / "runs" / "two" / "train" / "model.pt").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask, oct(mode)  # the mode of any new file, not mkstemp's 0600


def test_empty_selections_are_errors_not_silent_successes(tmp_path):
    flow = _two(tmp_path)
    with pytest.raises(ConfigError, match="nothing to run: --from simplify comes after --to train"):
        run_flow(load_config(flow), from_stage="simplify", to_stage="train")
    with pytest.raises(ConfigError, match="stage quant is not among this flow's stages \\(train, simplify\\)"):
        run_flow(load_config(flow), only=["quant"])
    assert not (tmp_path / "runs" / "two").exists()


def test_stale_upstream_stage_is_refused(tmp_path):
    flow = _two(tmp_path)
    run_flow(load_config(flow))
    changed = load_config(flow, {"train": {"epochs": 3}})
    with pytest.raises(PotaturaError, match="stage 'train' .* was made with other settings or data"):
        run_flow(changed, from_stage="simplify")
    with pytest.raises(PotaturaError, match="stage 'train'"):
        run_flow(changed, only=["simplify"], force=True)
    assert [o.status for o in run_flow(changed)] == ["done", "done"]


def test_replaced_data_file_invalidates_the_cache(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=rng.random((60, 1, 4, 4)), y_train=rng.integers(0, 3, 60),
             x_test=rng.random((20, 1, 4, 4)), y_test=rng.integers(0, 3, 20))
    flow = tmp_path / "f.yaml"
    flow.write_text(FLOW.format(runs=tmp_path / "runs", epochs=1, batch=16) + f"data:\n  dataset: npz\n  path: {data}\n")
    assert [o.status for o in run_flow(load_config(flow))] == ["done"]
    assert [o.status for o in run_flow(load_config(flow))] == ["skipped"]
    np.savez(data, x_train=rng.random((60, 1, 4, 4)), y_train=rng.integers(0, 3, 60),
             x_test=rng.random((20, 1, 4, 4)), y_test=rng.integers(0, 3, 20))
    os.utime(data, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert [o.status for o in run_flow(load_config(flow))] == ["done"]


def test_manifest_of_the_wrong_shape_is_set_aside(tmp_path):
    flow = _flow(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text("[]")
    assert [o.status for o in run_flow(load_config(flow))] == ["done"]
    assert (run_dir / "manifest.corrupt.json").read_text() == "[]"


def test_relative_runs_dir_works_across_stages(tmp_path, monkeypatch):
    """The README's `scripts/demo` uses runs/ relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "rel.yaml"
    path.write_text(TWO_STAGES.format(runs="runs"))
    assert [o.status for o in run_flow(load_config(path))] == ["done", "done"]
    manifest = json.loads((tmp_path / "runs" / "two" / "manifest.json").read_text())
    assert manifest["stages"]["simplify"]["outputs"]["model"]["path"] == "simplify/model.pt"
    assert manifest["stages"]["train"]["outputs"]["model"]["path"] == "train/model.pt"


def test_changed_code_reruns_a_stage_whatever_the_version_says(tmp_path, monkeypatch):
    """The input hash covers potatura's own source: a stage made by other code is not reused."""
    import potatura.flow as flow_module

    flow = _flow(tmp_path)
    run_flow(load_config(flow))
    assert [o.status for o in run_flow(load_config(flow))] == ["skipped"]
    fingerprint = flow_module.code_fingerprint()
    assert len(fingerprint) == 64 and fingerprint == flow_module.code_fingerprint()
    monkeypatch.setattr(flow_module, "code_fingerprint", lambda: "0" * 64)  # an edited estimator, say
    assert [o.status for o in run_flow(load_config(flow))] == ["done"]

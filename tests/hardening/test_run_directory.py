"""Issue 9 items 4, 5, 6 and 10 (runner parts): verified inputs, a lock per run directory, one
line per error and no traceback, stale downstream stages marked."""

import json
import os
import subprocess
import sys
import time

import pytest

from potatura.config import load_config
from potatura.errors import PotaturaError
from potatura.flow import RunLock, run_flow
from potatura.models import build_model, save_model_file
from tests.hardening.conftest import cli, write_flow


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished train + simplify run (tiny), shared: tests copy it before changing it."""
    root = tmp_path_factory.mktemp("done")
    flow = write_flow(root)
    run_flow(load_config(flow))
    return root


def _copy_run(done_run, tmp_path):
    import shutil

    shutil.copytree(done_run / "runs", tmp_path / "runs")
    return write_flow(tmp_path)


def test_replaced_upstream_artifact_is_refused(done_run, tmp_path):
    """Item 4: another valid model put in place of train/model.pt is not used silently."""
    flow = _copy_run(done_run, tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    other = build_model("lenet300", (1, 8, 8), 10, hidden=[16, 8])
    save_model_file(run_dir / "train" / "model.pt", other, spec={"name": "lenet300", "options": {"hidden": [16, 8]},
                                                                  "input_shape": [1, 8, 8], "num_classes": 10})
    before = (run_dir / "manifest.json").read_text()
    proc = cli("simplify", flow)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train/model.pt" in lines[0] and "changed since that stage wrote it" in lines[0]
    assert "--from train" in lines[0] and "Traceback" not in proc.stdout + proc.stderr
    assert (run_dir / "manifest.json").read_text() == before  # nothing recorded as done


def test_second_run_stops_naming_the_holder(done_run, tmp_path):
    """Item 5: a run directory in use is refused with the holder's pid; nothing changes."""
    flow = _copy_run(done_run, tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path; from potatura.flow import RunLock\n"
                               f"with RunLock(Path({str(run_dir)!r})):\n"
                               "    print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != ".lock"}
        proc = cli("run", flow, "--force")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "in use by another potatura run" in lines[0]
        after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != ".lock"}
        assert after == before
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock is taken over by the next run.
    assert "pid" in (run_dir / ".lock").read_text()
    outcomes = run_flow(load_config(flow))
    assert [o.status for o in outcomes] == ["skipped", "skipped"]


def test_lock_is_exclusive_within_one_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(PotaturaError, match=f"pid {os.getpid()}"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released on exit
        pass


def test_runs_dir_that_is_a_file_or_unwritable(tmp_path):
    """Item 6: one line, exit 2, no traceback."""
    (tmp_path / "afile").write_text("x")
    for runs_dir in (tmp_path / "afile", "/proc/potatura-runs"):
        proc = cli("run", write_flow(tmp_path), "--set", f"runs_dir={runs_dir}")
        assert proc.returncode == 2, (runs_dir, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr


def test_stage_error_is_printed_once(tmp_path):
    """Item 6: a stage's error is one `error:` line, not also a log ERROR line."""
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    proc = cli("run", write_flow(tmp_path, stages="train"), "--set", f"train.checkpoint={tmp_path / 'junk.pt'}")
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert out.count("junk.pt: not a readable model file") == 1, out
    assert proc.stderr.startswith("error:") and "Traceback" not in out
    assert "junk.pt" in (tmp_path / "runs" / "tiny" / "run.log").read_text()  # the log file keeps it


def test_rerun_with_new_settings_marks_downstream_stale(done_run, tmp_path):
    """Item 10: `--to train` with other settings leaves simplify's files marked stale."""
    flow = _copy_run(done_run, tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    run_flow(load_config(flow, {"seed": 4}), to_stage="train")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done"
    assert manifest["stages"]["simplify"]["status"] == "stale"
    with pytest.raises(PotaturaError, match="'train' .* was made with other settings"):
        run_flow(load_config(flow), only=["simplify"])  # train was made with seed 4, this flow has 3
    outcomes = run_flow(load_config(flow, {"seed": 4}))  # the stale stage is not taken as cached
    assert [(o.name, o.status) for o in outcomes] == [("train", "skipped"), ("simplify", "done")]
    assert json.loads((run_dir / "manifest.json").read_text())["stages"]["simplify"]["status"] == "done"


def test_summary_timings_do_not_force_downstream_reruns(done_run, tmp_path):
    """Item 10: a rerun of train that gives the same model (different timings in summary.json)
    leaves simplify cached, because simplify declares it reads only train's model."""
    flow = _copy_run(done_run, tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    summary_before = (run_dir / "train" / "summary.json").read_text()
    time.sleep(0.05)
    outcomes = run_flow(load_config(flow), only=["train"], force=True)
    assert outcomes[0].status == "done"
    assert (run_dir / "train" / "summary.json").read_text() != summary_before  # timings differ
    outcomes = run_flow(load_config(flow))
    assert [(o.name, o.status) for o in outcomes] == [("train", "skipped"), ("simplify", "skipped")]


def test_failed_rerun_keeps_the_previous_outputs(done_run, tmp_path):
    """A rerun that fails (here: a refused checkpoint file) gives the completed outputs back."""
    flow = _copy_run(done_run, tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    before = {p.relative_to(run_dir): p.read_bytes() for p in (run_dir / "train").rglob("*") if p.is_file()}
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(PotaturaError, match="junk.pt"):
        run_flow(load_config(flow, {"train": {"checkpoint": str(tmp_path / "junk.pt")}}), to_stage="train")
    after = {p.relative_to(run_dir): p.read_bytes() for p in (run_dir / "train").rglob("*") if p.is_file()}
    assert after == before
    record = json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]
    assert record["status"] == "done" and "junk.pt" in record["last_failure"]["error"]
    assert not list(run_dir.glob(".*.previous"))
    outcomes = run_flow(load_config(flow))  # the original flow is still cached
    assert [o.status for o in outcomes] == ["skipped", "skipped"]

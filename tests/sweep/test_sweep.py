"""Sweeps on a Dask LocalCluster: results, failures, a killed driver resumed, a killed worker's trial retried."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from potatura.artifacts import read_json
from potatura.sweep.config import load_sweep
from potatura.sweep.study import run_sweep


def _sweep_json(path):
    return json.loads(path.read_text()) if path.is_file() else None


def test_failed_trial_is_recorded_and_the_sweep_goes_on(write_sweep, client, tmp_path):
    path = write_sweep(name="fails", n_trials=2, space="train.checkpoint: {choices: [null, /nonexistent/model.pt]}",
                       cache="false")
    outcome = run_sweep(load_sweep(path), client=client)
    by_ckpt = {r["params"]["train.checkpoint"]: r for r in outcome.trials}
    assert by_ckpt[None]["state"] == "complete" and by_ckpt[None]["reason"] is None
    failed = by_ckpt["/nonexistent/model.pt"]
    assert failed["state"] == "fail" and "/nonexistent/model.pt" in failed["reason"]
    assert failed["stages"]["train"]["status"] == "failed"
    assert outcome.summary["complete"] == 1 and outcome.summary["failed"] == 1
    assert outcome.fronts["all"] == [by_ckpt[None]["number"]]
    md = (tmp_path / "runs" / "fails" / "sweep.md").read_text()
    assert f"- trial {failed['number']}: " in md


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_trials(write_sweep, client, tmp_path):
    path = write_sweep(name="resume", cache="false")
    sweep_dir = tmp_path / "runs" / "resume"
    # The driver alone on one worker, killed (with its LocalCluster) once two trials are finished.
    driver = subprocess.Popen(
        [sys.executable, "-c", "from potatura.sweep.config import load_sweep\n"
         "from potatura.sweep.study import run_sweep\n"
         f"run_sweep(load_sweep({str(path)!r}), workers=1)"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=(tmp_path / "driver.log").open("w"))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            doc = _sweep_json(sweep_dir / "sweep.json")
            if doc and doc["summary"]["complete"] >= 2:
                break
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
            time.sleep(0.1)
        else:
            raise AssertionError("two trials did not finish in 240 s")
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        driver.wait()
    before = {r["number"]: r for r in _sweep_json(sweep_dir / "sweep.json")["trials"] if r["state"] == "complete"}
    manifests = {n: (sweep_dir / "trials" / str(n) / "manifest.json").read_bytes() for n in before}
    assert len(before) >= 2

    outcome = run_sweep(load_sweep(path), resume=True, client=client)
    assert outcome.summary == {**outcome.summary, "trials": 6, "complete": 6, "failed": 0, "running": 0}
    assert sorted(r["number"] for r in outcome.trials) == list(range(6))
    after = {r["number"]: r for r in outcome.trials}
    for n, row in before.items():
        assert after[n]["metrics"] == row["metrics"] and after[n]["worker"] == row["worker"]
        assert (sweep_dir / "trials" / str(n) / "manifest.json").read_bytes() == manifests[n], f"trial {n} was redone"
    # every grid point once
    assert sorted((r["params"]["quant.weight_bits"], r["params"]["train.lr"]) for r in outcome.trials) == \
        sorted((b, lr) for b in (4, 6, 8) for lr in (0.05, 0.1))


@pytest.mark.slow
def test_killed_worker_trial_is_retried_and_resumed(write_sweep, tmp_path):
    import logging

    from dask.distributed import Client, LocalCluster

    # Long enough training (many small batches) that the worker can be killed mid-stage.
    path = write_sweep(name="kill", n_trials=2, epochs=30, batch=8, cache="false",
                       space="train.lr: {choices: [0.05, 0.1]}")
    run0 = tmp_path / "runs" / "kill" / "trials" / "0"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.CRITICAL)
    client = Client(cluster)
    outcome = {}
    driver = threading.Thread(target=lambda: outcome.update(o=run_sweep(load_sweep(path), client=client)))
    driver.start()
    killed_pid = None
    try:
        deadline = time.monotonic() + 240
        while killed_pid is None and time.monotonic() < deadline and driver.is_alive():
            # Once trial 0 has checkpointed an epoch, kill the worker process running it.
            if (run0 / "train" / "last.pt").is_file():
                where = [w for w, keys in client.processing().items() if any(str(k).endswith("-trial-0") for k in keys)]
                if where:
                    killed_pid = client.run(os.getpid, workers=where[:1])[where[0]]
                    os.kill(killed_pid, signal.SIGKILL)
            time.sleep(0.05)
        assert killed_pid is not None, "trial 0 never checkpointed"
        driver.join(timeout=300)
        assert not driver.is_alive()
    finally:
        client.close()
        cluster.close()
    trial0 = next(r for r in outcome["o"].trials if r["number"] == 0)
    assert trial0["state"] == "complete", trial0["reason"]
    assert not trial0["worker"].endswith(f":{killed_pid}"), "finished by another worker process"
    log = (run0 / "run.log").read_text()
    assert "stage train: resuming" in log, "the retried trial resumed the stage it was in"
    assert read_json(run0 / "manifest.json")["stages"]["quant"]["status"] == "done"
    assert outcome["o"].summary["complete"] == 2


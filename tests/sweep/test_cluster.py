"""A sweep through a real `dask scheduler` + `dask worker` pair on loopback (not a LocalCluster)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from potatura.sweep.config import load_sweep
from potatura.sweep.study import run_sweep

DASK = Path(sys.executable).with_name("dask")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the scheduler exited:\n{log.read_text()[-2000:]}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"no scheduler on port {port} after {seconds} s")


@pytest.fixture
def scheduler_and_worker(tmp_path):
    """tcp://127.0.0.1:<port> served by a `dask scheduler` process and one `dask worker` process."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    try:
        log = tmp_path / "scheduler.log"
        procs.append(subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard", "--no-show"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait_for_port(port, procs[0], log)
        procs.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--no-dashboard", "--death-timeout", "60", "--local-directory", str(tmp_path / "w")],
                                      stdout=(tmp_path / "worker.log").open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        yield address, procs
    finally:
        for p in reversed(procs):  # each in its own session: its whole group (the worker's nanny child too)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def test_sweep_through_a_scheduler_address(write_sweep, scheduler_and_worker, tmp_path):
    address, procs = scheduler_and_worker
    path = write_sweep(name="remote", n_trials=2, space="quant.weight_bits: {choices: [4, 8]}")
    outcome = run_sweep(load_sweep(path), scheduler=address)
    assert outcome.summary["complete"] == 2, [r["reason"] for r in outcome.trials]
    workers = {r["worker"] for r in outcome.trials}
    assert len(workers) == 1 and not workers.pop().endswith(f":{os.getpid()}"), "ran in the dask worker process"
    assert all(r["metrics"]["accuracy"] > 0.3 for r in outcome.trials)
    assert (tmp_path / "runs" / "remote" / "sweep.csv").read_text().count("\n") == 3


def test_no_scheduler_at_the_address_is_one_clear_error(write_sweep, tmp_path, monkeypatch):
    from potatura.errors import PotaturaError
    from potatura.sweep import study

    monkeypatch.setattr(study, "CONNECT_TIMEOUT_S", 2)
    path = write_sweep(name="nowhere", n_trials=1, space="quant.weight_bits: {choices: [4]}")
    with pytest.raises(PotaturaError, match=r"--scheduler tcp://127.0.0.1:\d+: no Dask scheduler answers there"):
        run_sweep(load_sweep(path), scheduler=f"tcp://127.0.0.1:{_free_port()}")
    assert not (tmp_path / "runs" / "nowhere").exists(), "nothing written"

"""A run directory with the bench stage: a copy of hwgen's session run (train -> simplify -> quant ->
hwgen on digits, tests/hwgen/conftest.py) plus the sim and deploy stages (emulated board) and the bench
stage with a short protocol."""

import shutil

import pytest

from tests.hwgen.conftest import CNN_FLOW, cnn_flow  # noqa: F401  (session fixture, shared)

BENCH = {"iterations": 20, "warmup": 2, "batch_sizes": [1, 8], "max_seconds": 0.2}


@pytest.fixture(scope="session")
def bench_run(cnn_flow, tmp_path_factory):  # noqa: F811
    """(run directory, FlowConfig) after the bench stage, in a copy of cnn_flow's run directory."""
    from potatura.config import load_config
    from potatura.flow import run_flow

    source, _ = cnn_flow
    runs = tmp_path_factory.mktemp("bench-runs")
    shutil.copytree(source, runs / source.name)
    cfg = load_config(None, dict(CNN_FLOW, runs_dir=str(runs), stages=CNN_FLOW["stages"] + ["sim", "deploy", "bench"],
                                 bench=BENCH))
    outcomes = {o.name: o.status for o in run_flow(cfg, show_progress=False)}
    assert {n for n, status in outcomes.items() if status == "skipped"} == set(CNN_FLOW["stages"])  # reused
    return cfg.run_dir(), cfg

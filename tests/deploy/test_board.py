"""Hardware-in-the-loop on a real board (pynq-z2, zcu104, kv260, ...): marker `board`.

Needs an agent on the board (README, "Deploying to a board") and:
    POTATURA_BOARD          the agent's URL, e.g. http://127.0.0.1:8765 (an SSH tunnel), or host:port
    POTATURA_AGENT_TOKEN    its token
    POTATURA_BOARD_BUNDLE   a bundle built for that board (runs/<name>/deploy/<board>/<backend>/), with its
                            bitstream (not a placeholder)

    POTATURA_BOARD=http://127.0.0.1:8765 POTATURA_AGENT_TOKEN=... POTATURA_BOARD_BUNDLE=... \
        python -m pytest -m board tests/deploy/test_board.py

Labs with labgrid: `pytest -m board --lg-env lab.yaml tests/deploy/test_board.py` with
POTATURA_BOARD_BUNDLE set: the board is reached over the target's SSHDriver (port forward, token read
there), the bundle is copied to it, and a hang is recovered by a power cycle through its power driver
(potatura.deploy.lab).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from potatura.deploy import bundle as bundles
from potatura.deploy.check import run_check, table
from potatura.deploy.client import BoardClient, wait_ready
from potatura.deploy.errors import LinkError

pytestmark = pytest.mark.board


def _labgrid(config) -> bool:
    return config.pluginmanager.hasplugin("labgrid") and bool(config.getoption("lg_env", default=None))


@pytest.fixture(scope="module")
def board(request):
    needed = ("POTATURA_BOARD_BUNDLE",) if _labgrid(request.config) else (
        "POTATURA_BOARD", "POTATURA_AGENT_TOKEN", "POTATURA_BOARD_BUNDLE")
    missing = [v for v in needed if not os.environ.get(v)]
    if missing:
        pytest.fail(f"the board tests need {', '.join(missing)} (see this file's docstring)")
    bundle = Path(os.environ["POTATURA_BOARD_BUNDLE"])
    manifest = bundles.verify_bundle(bundle)
    assert not manifest["bitstream"]["placeholder"], f"{bundle}: the bitstream is a placeholder (build it first)"
    if _labgrid(request.config):
        from potatura.deploy.lab import LabgridBoard

        lab = LabgridBoard.from_env(request.getfixturevalue("env"))
        lab.install_bundle(bundle)
        with lab.agent_url() as url:
            client = BoardClient(url, lab.token(), timeout_s=120)
            try:
                client.info(timeout_s=5)
            except LinkError:
                lab.start_agent()
            wait_ready(client, timeout_s=60)
            yield client, bundle, manifest, lab.power_cycle
        return
    url = os.environ["POTATURA_BOARD"]
    url = url if url.startswith("http") else f"http://{url}"
    yield BoardClient(url, os.environ["POTATURA_AGENT_TOKEN"], timeout_s=120), bundle, manifest, None


def test_board_runs_the_golden_set_bit_exact_and_measures_latency(board):
    client, bundle, manifest, recover = board
    steps = run_check(client, bundle, batch_sizes=(1, 8, 64), iterations=20, warmup=3, soak_seconds=30,
                      recover=recover)
    print(table(steps))
    assert all(s.passed for s in steps), table(steps)
    info = client.info()
    assert info["device"] == "pynq" and info["loaded"]["board"] == manifest["board"]
    bench = steps[2].data
    assert bench["hardware_source"] == "measured"
    assert all(row["hardware_s"]["p50"] > 0 for row in bench["rows"])


def test_board_recovers_after_reset(board):
    client, bundle, _, _ = board
    client.reset()
    assert client.golden_check(bundle)["passed"]

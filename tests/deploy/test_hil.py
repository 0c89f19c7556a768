"""Hardware-in-the-loop on loopback: bundle -> agent (emulated board, real simulator) -> client.

Every wait is bounded by the client's timeout: a fault that did not produce its typed error in time
would surface as LinkTimeoutError instead, so the error types below are the deadline checks.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from potatura.deploy import bundle as bundles
from potatura.deploy.client import BoardClient, wait_ready
from potatura.deploy.driver import Driver
from potatura.deploy.emulated import EmulatedBoard, start_emulated_agent
from potatura.deploy.errors import (
    AcceleratorHangError, AuthError, BundleError, BundleIntegrityError, BundleTooLargeError, DmaDecodeError,
    DmaInternalError, DmaSlaveError, InputError, LinkTimeoutError, OutputMismatchError, VersionMismatchError)
from potatura.sim.api import load_project

from .conftest import mlp_reference

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def agent(bundle):
    url, token, stop = start_emulated_agent()
    client = BoardClient(url, token, timeout_s=20)
    client.deploy(bundle)
    yield client
    stop()


def test_bundle_lists_every_file_with_its_sha256_and_reference_codes(bundle, project):
    manifest = bundles.verify_bundle(bundle)
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert manifest["bitstream"]["placeholder"] is True and manifest["board"] == "pynq-z2"
    assert manifest["tensors"]["input"]["wire"]["dtype"] == "float32"
    assert manifest["tensors"]["output"]["min_code"] == -(2 ** 23)
    assert manifest["ip"]["dma"]["phys_addr"] == 0x4040_0000
    x, y = bundles.load_golden(bundle, manifest)
    assert np.array_equal(y, mlp_reference(x))
    assert manifest["golden"]["simulator_agrees"] == f"{len(x)}/{len(x)}"
    assert manifest["sim"]["batch_1"]["total_cycles"] == load_project(project).cycles(1).total_cycles


def test_driver_on_the_emulated_board_is_bit_exact_and_counts_simulated_cycles(bundle):
    manifest = bundles.read_manifest(bundle)
    acc = load_project(bundle / "emulation")
    x, y = bundles.load_golden(bundle, manifest)
    board = EmulatedBoard(acc, manifest)
    driver = Driver(board, manifest)
    out, timing = driver.run(x)
    assert np.array_equal(out, y)
    assert timing["source"] == "emulated"
    assert timing["hardware_cycles"] == acc.cycles(len(x)).total_cycles
    assert timing["hardware_s"] == pytest.approx(acc.cycles(len(x)).total_cycles / 100e6)
    # A batch larger than one DMA transfer is split: 24 samples in transfers of 5.
    small = json.loads(json.dumps(manifest))
    small["dma"]["max_transfer_bytes"] = 5 * 16 * 4
    driver = Driver(EmulatedBoard(acc, small), small)
    out, timing = driver.run(x)
    assert np.array_equal(out, y)
    assert timing["hardware_cycles"] == 4 * acc.cycles(5).total_cycles + acc.cycles(4).total_cycles
    with pytest.raises(InputError, match="outside the type"):
        driver.run(np.full((1, 16), 256))
    with pytest.raises(InputError, match="shape"):
        driver.run(np.zeros((2, 15), dtype=np.int64))


def test_emulated_cache_needs_flush_and_invalidate(bundle):
    manifest = bundles.read_manifest(bundle)
    board = EmulatedBoard(load_project(bundle / "emulation"), manifest)
    buf = board.allocate((4,), np.float32)
    buf[:] = 1.5
    assert board.ddr.read(buf.physical_address, 16) == bytes(16)  # not flushed yet: DDR still zero
    buf.flush()
    board.ddr.write(buf.physical_address, np.float32([2, 3, 4, 5]).tobytes())
    assert buf[0] == 1.5
    buf.invalidate()
    assert buf.tolist() == [2, 3, 4, 5]


def test_hls_control_block_must_be_started(bundle):
    """An IP with an ap_ctrl_hs block streams only once started; the driver starts it (auto-restart)."""
    manifest = json.loads(json.dumps(bundles.read_manifest(bundle)))
    manifest["ip"]["accelerator"].update(control="ap_ctrl_hs", phys_addr=0x43C0_0000, addr_range=0x10000)
    acc = load_project(bundle / "emulation")
    x, y = bundles.load_golden(bundle, manifest)
    board = EmulatedBoard(acc, manifest)
    driver = Driver(board, manifest)
    assert board.read(0x43C0_0000) & 0x80  # auto-restart set by the driver
    out, _ = driver.run(x)
    assert np.array_equal(out, y)
    board.write(0x43C0_0000, 0)  # stop the block behind the driver's back: the stream stalls
    with pytest.raises(AcceleratorHangError):
        driver.run(x[:2], deadline_s=0.2)
    out, _ = driver.run(x[:2])  # the hang's reset started the block again
    assert np.array_equal(out, y[:2])


def test_loopback_golden_bit_exact_and_benchmark_cycles_equal_the_simulator(agent, bundle):
    report = agent.golden_check(bundle)
    assert report["exact"] == report["samples"] == 24
    acc = load_project(bundle / "emulation")
    bench = agent.benchmark([1, 4, 16], iterations=3, warmup=1)
    assert bench["hardware_source"] == "emulated" and bench["end_to_end_source"] == "measured"
    for row in bench["rows"]:
        cycles = acc.cycles(row["batch"]).total_cycles
        assert row["hardware_cycles"] == [cycles]
        assert row["hardware_s"]["p50"] == pytest.approx(cycles / 100e6)
    fit = bench["fit_hardware"]
    assert fit["per_sample_s"] == pytest.approx((acc.cycles(16).total_cycles - acc.cycles(4).total_cycles) / 12 / 100e6)
    info = agent.info()
    assert info["loaded"]["board"] == "pynq-z2" and info["device"] == "emulated"


FAULTS = [
    ({"hang": {}}, AcceleratorHangError),
    ({"dma_error": {"channel": "mm2s", "kind": "internal"}}, DmaInternalError),
    ({"dma_error": {"channel": "s2mm", "kind": "slave"}}, DmaSlaveError),
    ({"dma_error": {"channel": "s2mm", "kind": "decode"}}, DmaDecodeError),
    ({"flip_bit": {"sample": 3, "element": 2, "bit": 0}}, OutputMismatchError),
    ({"slow_link": {"seconds": 1.5}}, LinkTimeoutError),
]


@pytest.mark.parametrize("fault, error", FAULTS, ids=[e.__name__ for _, e in FAULTS])
def test_each_fault_gives_its_typed_error_and_the_agent_keeps_serving(agent, bundle, fault, error):
    agent.inject(**fault)
    with pytest.raises(error):
        agent.golden_check(bundle, timeout_s=1.0 if error is LinkTimeoutError else 3.0)
    report = agent.golden_check(bundle, timeout_s=10)
    assert report["exact"] == report["samples"]


def test_corrupted_upload_and_version_mismatch_are_refused(agent, bundle, tmp_path):
    agent.inject(corrupt_upload={})
    with pytest.raises(BundleIntegrityError, match="sha256"):
        agent.upload(bundle)
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = bundles.read_manifest(other)
    manifest["driver_abi"] = bundles.DRIVER_ABI + 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VersionMismatchError):  # the client checks before sending
        agent.upload(other)
    with pytest.raises(VersionMismatchError):  # and the agent checks what it receives
        agent._request("PUT", "/bundle", bundles.pack_bundle(other), "application/x-tar")
    assert agent.golden_check(bundle)["passed"]


def test_wrong_token_gets_401(agent):
    with pytest.raises(AuthError):
        BoardClient(agent.url, "not-the-token", timeout_s=5).info()
    request = urllib.request.Request(agent.url + "/info", headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=5)
    assert exc.value.code == 401


def _tar(members, mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("members, error, message", [
    ([("manifest.json", "file", b"{}"), ("../escape.txt", "file", b"x")], BundleError, "escapes"),
    ([("/tmp/potatura-abs-escape.txt", "file", b"x")], BundleError, "escapes"),
    ([("link", "symlink", "/etc/passwd")], BundleError, "link"),
    ([("big.bin", "file", bytes(200_000))], BundleTooLargeError, "unpacks to more than"),
], ids=["dotdot", "absolute", "symlink", "size"])
def test_unsafe_uploads_are_refused_and_nothing_is_written_outside(tmp_path, members, error, message):
    store = tmp_path / "store"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(error, match=message):  # gzip: the size check is on what the upload unpacks to
        bundles.unpack_upload(_tar(members, "w:gz"), store, max_bytes=65536)
    with pytest.raises(BundleTooLargeError, match="exceeds the limit"):
        bundles.unpack_upload(_tar(members), store, max_bytes=4096)
    after = set(tmp_path.rglob("*"))
    assert after - before <= {store, store / "bundles"}  # no staging left, nothing beside the store
    assert not Path("/tmp/potatura-abs-escape.txt").exists()


def test_unsafe_upload_over_http_is_refused(agent, tmp_path):
    with pytest.raises(BundleError, match="escapes"):
        agent._request("PUT", "/bundle", _tar([("../../x", "file", b"x")]), "application/x-tar")
    assert agent.info()["loaded"] is not None


def _start_agent(state: Path, token_file: Path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "potatura.deploy.agent", "serve", "--emulated", "--port", "0",
                             "--state", str(state), "--token-file", str(token_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    assert "listening on" in line, proc.stderr.read() if proc.poll() is not None else line
    return proc, line.split("listening on ")[1].strip()


def test_killed_agent_restarts_and_serves_the_loaded_bundle(bundle, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    state = tmp_path / "state"
    proc, url = _start_agent(state, token_file)
    try:
        client = BoardClient(url, "s3cret-token", timeout_s=20)
        client.deploy(bundle)
        assert client.golden_check(bundle)["passed"]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    proc, url = _start_agent(state, token_file)
    try:
        client = BoardClient(url, "s3cret-token", timeout_s=20)
        info = wait_ready(client)
        assert info["loaded"]["board"] == "pynq-z2" and info["load_error"] is None
        assert client.golden_check(bundle)["exact"] == 24  # no deploy after the restart
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_oneshot_validate_over_ssh_style(bundle, tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "potatura.deploy.agent", "run", "--bundle", str(bundle), "--mode",
                           "validate", "--emulated", "--output", str(out), "--state", str(tmp_path / "s")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["passed"] and result["exact"] == 24


def test_hil_check_writes_a_table_and_junit(agent, bundle, tmp_path):
    from potatura.deploy.check import junit_xml, run_check, table

    steps = run_check(agent, bundle, batch_sizes=(1, 8), iterations=2, warmup=0, soak_seconds=30, soak_max_runs=3)
    assert [s.name for s in steps] == ["deploy", "golden", "throughput", "soak"]
    assert all(s.passed for s in steps), table(steps)
    assert steps[3].data["runs"] == 3
    root = ET.parse(junit_xml(steps, tmp_path / "hil.xml")).getroot()
    assert root.get("tests") == "4" and root.get("failures") == "0"
    agent.inject(flip_bit={"sample": 0, "element": 0, "bit": 1})
    steps = run_check(agent, bundle, batch_sizes=(1,), iterations=1, warmup=0, soak_seconds=1, soak_max_runs=1)
    assert [s.passed for s in steps] == [True, False, True, True]
    assert "OutputMismatchError" in steps[1].error
    root = ET.parse(junit_xml(steps, tmp_path / "hil2.xml")).getroot()
    assert root.get("failures") == "1" and root.find("testcase[@name='golden']/failure") is not None


def test_the_bundles_agent_package_runs_on_its_own(bundle, tmp_path):
    """A board needs only the bundle: PYTHONPATH=<bundle>/agent gives the driver and agent (stdlib + numpy)."""
    code = ("import sys, potatura.deploy.agent as a, potatura.deploy.bundle as b; "
            "m = b.verify_bundle(sys.argv[1]); print(a.__file__); print(m['board'])")
    env = dict(os.environ, PYTHONPATH=str(bundle / "agent"))
    proc = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    module_file, board = proc.stdout.split()
    assert Path(module_file).is_relative_to(bundle / "agent") and board == "pynq-z2"


def test_hil_check_recovers_a_hang_through_its_recover_callback(agent, bundle):
    """The recovery path a labgrid power cycle plugs into: a hang, recover(), the step again."""
    from potatura.deploy.check import run_check

    calls = []
    agent.inject(hang={"times": 1})
    short = BoardClient(agent.url, agent.token, timeout_s=3)
    steps = run_check(short, bundle, batch_sizes=(1,), iterations=1, warmup=0, soak_seconds=1, soak_max_runs=1,
                      recover=lambda: calls.append("power cycle"))
    assert calls == ["power cycle"]
    golden = steps[1]
    assert golden.passed and golden.data["recovered_from"] == "AcceleratorHangError"
    assert all(s.passed for s in steps)


def test_check_of_the_emulated_board_names_it_and_says_why_the_deploy_failed(tmp_path):
    """`potatura deploy --check emulated` with a folder that is not a bundle: the error names the
    emulated board (not its agent's random local address) and the reason."""
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    proc = subprocess.run([sys.executable, "-m", "potatura", "deploy", "--check", "emulated", "--bundle",
                           str(not_a_bundle)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: HIL check of the emulated board: deploy failed: BundleError: {not_a_bundle}: no manifest.json "
        f"(not a deploy bundle)"), proc.stderr
    assert "127.0.0.1" not in proc.stderr

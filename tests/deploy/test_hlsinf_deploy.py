"""The memory-mapped engine path: an HLSinf-style project -> bundle -> agent on the emulated board.

The fast tests use a ResNet-style IR graph (tests/hwgen: stem, identity block, stride-2 block with a
1x1 shortcut, global average pooling, dense) on an engine with HO_MAX=4, so the calls include row
frames, residual adds and a dense layer read from a GHWC buffer. Expected outputs are the
simulator's whole-graph run; the emulated engine computes each call from what the driver put in its
DDR and registers, so the two meet only if the calls, addresses, packing and arguments are right.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from potatura.artifacts import read_json
from potatura.deploy import bundle as bundles
from potatura.deploy.errors import AcceleratorHangError, DeployError, OutputMismatchError, VersionMismatchError
from potatura.sim.api import load_project


@pytest.fixture(scope="module")
def hlsinf_project(tmp_path_factory):
    from potatura.boards.catalog import get_board
    from potatura.hwgen.config import HwgenConfig
    from potatura.hwgen.hlsinf.project import generate_project
    from tests.hwgen.test_hlsinf import resnet_graph

    out = tmp_path_factory.mktemp("hwgen") / "pynq-z2" / "hlsinf"
    cfg = HwgenConfig(backends={"hlsinf": {"ho_max": 4, "wo_max": 8}}).backend("hlsinf")
    generate_project(resnet_graph(), get_board("pynq-z2"), out, cfg)
    x = np.random.default_rng(5).integers(-128, 128, size=(12, 8, 8, 4))
    np.savez(out / "golden.npz", x_codes=x, y_codes=load_project(out).run(x))
    return out


@pytest.fixture(scope="module")
def hlsinf_bundle(hlsinf_project, tmp_path_factory):
    from potatura.deploy.writer import write_bundle

    out = tmp_path_factory.mktemp("deploy") / "pynq-z2" / "hlsinf"
    write_bundle(hlsinf_project, hlsinf_project / "golden.npz", out, samples=None)
    return out


@pytest.fixture
def agent(hlsinf_bundle):
    from potatura.deploy.client import BoardClient
    from potatura.deploy.emulated import start_emulated_agent

    url, token, stop = start_emulated_agent(hlsinf_bundle)
    yield BoardClient(url, token, 30)
    stop()


def test_project_and_bundle_describe_the_engine(hlsinf_project, hlsinf_bundle):
    hw = read_json(hlsinf_project / "manifest.json")
    assert hw["protocol"] == "memory-mapped-engine" and hw["engine"]["control"] == "ap_ctrl_hs"
    regs = hw["engine"]["registers"]
    # HLS s_axilite layout: pointers (64-bit) from 0x10 in 12 bytes each, then 32-bit arguments in 8
    assert [regs[n]["offset"] for n in ("act_in", "filters", "act_out", "I", "O")] == [0x10, 0x1C, 0x40, 0x4C, 0x54]
    assert regs["clip_lo"]["bits"] == 64 and hw["engine"]["m_axi"]["act_add"]["port"] == "S_AXI_HP2"
    manifest = bundles.verify_bundle(hlsinf_bundle)  # versions and the sha256 of every file
    assert manifest["protocol"] == "memory-mapped-engine" and manifest["driver_abi"] == 2
    with pytest.raises(VersionMismatchError, match="protocol 'memory-mapped-engine' driver ABI 1"):
        bundles.check_versions({**manifest, "driver_abi": 1})  # an engine bundle under the stream ABI
    assert "agent/potatura/deploy/engine.py" in manifest["files"] and "engine.npz" in manifest["files"]
    acc = load_project(hlsinf_project)
    assert len(manifest["calls"]) == len(acc.plan.calls) > 10
    assert sum(c["frames"] > 1 for c in manifest["calls"]) >= 2 and any(c["add_input"] for c in manifest["calls"])
    assert sum(c["cycles"] for c in manifest["calls"]) == acc.cycles(1).latency_cycles
    assert manifest["bitstream"]["placeholder"] is True and manifest["bitstream"]["hwh"] == "overlay/hlsinf.hwh"


def test_golden_bit_exact_and_cycles_equal_the_simulator(agent, hlsinf_bundle, hlsinf_project):
    acc = load_project(hlsinf_project)
    report = agent.golden_check(hlsinf_bundle)
    assert report["exact"] == report["samples"] == 12
    assert report["timing"]["hardware_cycles"] == acc.cycles(12).total_cycles
    bench = agent.benchmark([1, 3], iterations=2, warmup=1)
    assert bench["hardware_source"] == "emulated"
    assert [row["hardware_cycles"] for row in bench["rows"]] == [[acc.cycles(1).total_cycles],
                                                                 [acc.cycles(3).total_cycles]]
    assert agent.info()["batches"] == 12 + 3 * 1 + 3 * 3


def test_hang_gives_the_typed_error_within_its_deadline_and_the_agent_recovers(agent, hlsinf_bundle):
    with np.load(hlsinf_bundle / "golden.npz", allow_pickle=False) as golden:
        x = golden["x_codes"][:2]
    agent.inject(hang={"times": 1})
    start = time.monotonic()
    with pytest.raises(AcceleratorHangError, match="call of layer stem frame 0 did not finish within 1 s"):
        agent.run(x)
    assert time.monotonic() - start < 10  # the manifest's 1 s floor, not the client's 30 s
    assert agent.golden_check(hlsinf_bundle)["exact"] == 12  # the overlay reload cleared the hang
    agent.inject(flip_bit={"element": 3, "bit": 0})
    with pytest.raises(OutputMismatchError, match="1/12 samples beyond tolerance 0 codes; first: sample 0 element 3"):
        agent.golden_check(hlsinf_bundle)


def test_the_emulated_engine_checks_the_weights_the_driver_put_in_ddr(hlsinf_bundle):
    from potatura.deploy.driver import make_driver
    from potatura.deploy.emulated import EmulatedBoard

    manifest = bundles.verify_bundle(hlsinf_bundle)
    board = EmulatedBoard.from_bundle(hlsinf_bundle, manifest)
    driver = make_driver(board, manifest, hlsinf_bundle)
    filters, _ = driver.weights["stem"]
    filters[0] += 1
    filters.flush()
    with np.load(hlsinf_bundle / "golden.npz", allow_pickle=False) as golden:
        x = golden["x_codes"][:1]
    with pytest.raises(DeployError, match="are not the packed weights of layer"):
        driver.run(x)


def test_stage_skips_a_project_without_a_bundle_writer(hlsinf_project, project, tmp_path):
    """A project whose backend describes no board interface is skipped with its reason, never a crash."""
    import shutil

    from potatura.deploy.config import DeployConfig
    from potatura.deploy.stage import headline, run_deploy

    bare = tmp_path / "bare"
    shutil.copytree(hlsinf_project, bare, ignore=shutil.ignore_patterns("manifest.json", "project"))
    cfg = DeployConfig(target="bundle-only")
    run_deploy(cfg, [{"board": "pynq-z2", "backend": "other", "path": bare, "fits": True}],
               hlsinf_project / "golden.npz", tmp_path / "out")
    assert headline(tmp_path / "out").startswith("nothing deployed: skipped pynq-z2/other: ")
    assert "no manifest.json" in read_json(tmp_path / "out" / "report.json")["skipped"][0]


FLOW = {
    "name": "hlsinf", "stages": ["train", "simplify", "quant", "hwgen", "sim", "deploy", "bench"],
    "model": {"name": "lenet5", "options": {"channels": [4, 8], "hidden": 16}},
    "train": {"method": "magnitude-oneshot", "target_neurons_pct": 50, "epochs": 3, "finetune_epochs": 1,
              "preset": "off", "lr": 0.05},
    "quant": {"calibration_samples": 128},
    "hwgen": {"boards": ["pynq-z2"], "backends": ["hlsinf"]},
    "deploy": {"golden_samples": 16, "batch_sizes": [1, 4], "iterations": 2, "warmup": 1},
    "bench": {"targets": ["simulated", "emulated"], "batch_sizes": [1, 4], "iterations": 3, "warmup": 1},
}


def test_flow_with_hlsinf_goes_through_sim_deploy_and_bench(tmp_path):
    from potatura.config import load_config
    from potatura.deploy.stage import headline
    from potatura.flow import run_flow

    cfg = load_config(None, dict(FLOW, runs_dir=str(tmp_path)))
    run_flow(cfg, show_progress=False)
    run_dir = cfg.run_dir()
    record = read_json(run_dir / "deploy" / "pynq-z2" / "hlsinf.result.json")
    assert record["golden_provenance"]["y"].startswith("golden.npz y_codes")  # quant's integer reference
    assert record["golden"]["exact"] == record["golden"]["samples"] == 16
    acc = load_project(run_dir / "hwgen" / "pynq-z2" / "hlsinf")
    assert record["benchmark"]["rows"][1]["hardware_cycles"] == [acc.cycles(4).total_cycles]
    assert "pynq-z2/hlsinf: golden 16/16 bit-exact on the emulated board" in headline(run_dir / "deploy")
    latency = read_json(run_dir / "bench" / "latency.json")
    boards = [r for r in latency["results"] if r.get("kind") == "emulated"]
    assert boards and all("hlsinf" in r["name"] for r in boards), [r.get("name") for r in latency["results"]]


def test_real_pynq_drives_the_emulated_engine_bit_exact(hlsinf_bundle, tmp_path):
    """The pynq lane for an engine bundle: pynq 4.0's Overlay parses the bundle's .hwh (the engine's
    s_axi_control window), pynq.MMIO reaches its registers, pynq.allocate its buffers; a hang is typed
    and the overlay reload clears it."""
    import os

    from tests.deploy.test_pynq_lane import BOARD_PYTHON, run_lane

    if not BOARD_PYTHON.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"CI: the board environment is missing ({BOARD_PYTHON})")
        pytest.skip(f"no board environment ({BOARD_PYTHON}); make it with scripts/env-board")
    lane = run_lane(hlsinf_bundle, tmp_path)
    assert lane["pynq"] == "4.0.0" and lane["numpy"].startswith("1.")
    assert lane["active_device"] == "EmulatedPynqDevice"
    assert lane["engine_ip"] == {"phys_addr": 0x4000_0000, "addr_range": 0x10000,
                                 "type": "xilinx.com:hls:hlsinf_top:1.0"}
    assert lane["driver_exact"] == [True, True]
    assert lane["driver_timing"]["hardware_cycles"] == lane["sim_total_cycles"]
    assert lane["hang"] == "AcceleratorHangError" and lane["after_hang_exact"]


def test_a_built_overlays_register_map_overrides_the_manifests(hlsinf_bundle):
    """On a board the .hwh is authoritative: the driver takes its offsets (Vivado HLS names a 64-bit
    argument's low word <name>_1), and refuses an overlay that lacks one of the engine's arguments."""
    from potatura.deploy.driver import make_driver
    from potatura.deploy.emulated import EmulatedBoard

    manifest = bundles.verify_bundle(hlsinf_bundle)
    regs = manifest["ip"]["engine"]["registers"]
    hwh = {name + ("_1" if r["bits"] == 64 else ""): r["offset"] for name, r in regs.items()}
    board = EmulatedBoard.from_bundle(hlsinf_bundle, manifest)
    board.ip_registers = lambda name: dict(hwh, CTRL=0)
    driver = make_driver(board, manifest, hlsinf_bundle)
    assert driver.register_source.startswith("overlay .hwh")
    x, y = bundles.load_golden(hlsinf_bundle, manifest)
    assert np.array_equal(driver.run(x[:2])[0], y[:2])
    del hwh["relu2"]
    with pytest.raises(DeployError, match="the overlay's register map has no 'relu2'"):
        make_driver(board, manifest, hlsinf_bundle)

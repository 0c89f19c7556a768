"""Issue 9 item 1: loading any artifact never runs code from it (torch.load(weights_only=True),
models stored as data; docs/ARCHITECTURE.md "Artifact formats and safety")."""

import json
import subprocess
import sys

import pytest
import torch

from potatura.config import load_config
from potatura.errors import DataError, PotaturaError
from potatura.flow import run_flow
from potatura.models import build_model, load_model_file, save_model_file
from tests.hardening.conftest import cli, write_evil_pickle, write_flow


def test_the_evil_file_is_really_evil(evil, tmp_path):
    """The fixture is a real attack: an unrestricted torch.load creates the marker."""
    path, marker = evil
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists()


def test_simplify_model_refuses_evil_file(evil, tmp_path):
    path, marker = evil
    proc = cli("simplify", "--model", path, "--out", tmp_path / "o.pt")
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.pt").exists()


def test_quant_model_refuses_evil_file_and_leaves_no_folder(evil, tmp_path):
    path, marker = evil
    flow = write_flow(tmp_path)
    out = tmp_path / "qout"
    proc = cli("quant", flow, "--model", path, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_train_checkpoint_refuses_evil_file(evil, tmp_path):
    path, marker = evil
    flow = write_flow(tmp_path, stages="train")
    proc = cli("run", flow, "--set", f"train.checkpoint={path}")
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "Traceback" not in proc.stderr


def test_run_directory_files_refused(tmp_path):
    """last.pt (resume), train/model.pt (read by simplify) and brevitas.pt never run code."""
    cfg = load_config(write_flow(tmp_path, stages="train, simplify"))
    run_flow(cfg)
    run_dir = tmp_path / "runs" / "tiny"
    marker = tmp_path / "pwned"

    # the run directory's model.pt, read by the next stage
    write_evil_pickle(run_dir / "train" / "model.pt", marker)
    with pytest.raises(PotaturaError):
        run_flow(cfg, only=["simplify"], force=True)
    assert not marker.exists()

    # the resume checkpoint of an interrupted training
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["stages"]["train"]["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    write_evil_pickle(run_dir / "train" / "last.pt", marker, wrap_in_payload=False)
    with pytest.raises(DataError, match="last.pt: refused"):
        run_flow(cfg, to_stage="train")
    assert not marker.exists()

    # a Brevitas model file
    from potatura.quant.pipeline import load_brevitas_model

    write_evil_pickle(tmp_path / "brevitas.pt", marker)
    with pytest.raises(DataError, match="refused"):
        load_brevitas_model(tmp_path / "brevitas.pt")
    assert not marker.exists()


def test_graph_description_cannot_inject_code(tmp_path):
    """The forward is regenerated from the stored graph: names that would become code are refused."""
    from potatura.simplify import simplify

    model = build_model("lenet300", (1, 8, 8), 10, hidden=[6, 4]).eval()
    small = simplify(model, torch.randn(1, 1, 8, 8)).model
    save_model_file(tmp_path / "m.pt", small)
    marker = tmp_path / "pwned"
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    injections = [
        ("nodes", 1, "name", f"x = __import__('os').system('touch {marker}')"),
        ("nodes", 1, "target", "torch.load"),  # a call_function target outside the allow-list
        ("modules", 0, "class", "os.system"),
        ("modules", 0, "name", f'a"); __import__("os").system("touch {marker}"); ("'),
    ]
    for table, index, key, value in injections:
        bad = torch.load(tmp_path / "m.pt", weights_only=True)
        entry = bad["graph"][table][index]
        if key == "target" and entry["op"] != "call_function":
            entry["op"] = "call_function"
        entry[key] = value
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(DataError):
            back, _ = load_model_file(tmp_path / "bad.pt")
            back(torch.randn(1, 1, 8, 8))
        assert not marker.exists(), (table, key)
    assert payload["format"] == "potatura-model/2"


def test_simplified_model_round_trips_exactly_as_data(tmp_path):
    from potatura.simplify import simplify

    model = build_model("resnet8", (3, 16, 16), 10).eval()
    x = torch.randn(4, 3, 16, 16)
    small = simplify(model, x[:1]).model
    save_model_file(tmp_path / "m.pt", small)
    back, payload = load_model_file(tmp_path / "m.pt")
    assert "module" not in payload and "graph" in payload
    torch.testing.assert_close(back(x), small(x), rtol=0, atol=0)
    assert back.code == small.code


def test_old_pickled_module_file_is_refused_by_name(tmp_path):
    """A potatura-model/1 file holding a pickled module (what simplify wrote before) is refused."""
    from potatura.simplify import simplify

    small = simplify(build_model("lenet300", (1, 8, 8), 10, hidden=[6, 4]).eval(), torch.randn(1, 1, 8, 8)).model
    torch.save({"format": "potatura-model/1", "extra": {}, "module": small}, tmp_path / "old.pt")
    with pytest.raises(DataError, match=r"old.pt: refused: .*re-run the stage"):
        load_model_file(tmp_path / "old.pt")
    # a /1 file with a spec and weights (what train wrote) still loads
    zoo = build_model("lenet5", (1, 8, 8), 10)
    torch.save({"format": "potatura-model/1", "extra": {}, "spec": {"name": "lenet5", "options": {},
                "input_shape": [1, 8, 8], "num_classes": 10}, "state_dict": zoo.state_dict()}, tmp_path / "zoo.pt")
    back, _ = load_model_file(tmp_path / "zoo.pt")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(back(x), zoo.eval()(x), rtol=0, atol=0)


def test_no_unrestricted_torch_load_in_the_package():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "potatura"
    offenders = [f"{p}:{i}" for p in root.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "torch.load(" in line and "weights_only=True" not in line]
    assert offenders == []
    pickles = [str(p) for p in root.rglob("*.py") if re.search(r"^\s*import pickle|allow_pickle=True", p.read_text(), re.M)]
    assert pickles == []


def test_checkpoint_of_the_previous_format_still_loads(tmp_path):
    """Checkpoints written before held numpy's RNG state as an array: still read, without code."""
    import numpy as np

    from potatura.artifacts import read_torch
    from potatura.train.loop import _numpy_rng_from

    np.random.seed(7)
    state = {"epoch": 3, "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    torch.save(state, tmp_path / "last.pt")
    back = read_torch(tmp_path / "last.pt", "training checkpoint", numpy_arrays=True)
    np.random.set_state(_numpy_rng_from(back["rng"]["numpy"]))
    first = np.random.rand()
    np.random.seed(7)
    assert first == np.random.rand()

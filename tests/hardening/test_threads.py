"""Issue 9 item 7: --threads / POTATURA_THREADS, a default that does not depend on the machine's
load, the setting in the manifest, identical results for a given seed and thread setting."""

import json

import pytest

from potatura import threads
from potatura.config import load_config
from potatura.errors import ConfigError
from tests.hardening.conftest import cli, write_flow


def _train_record(root):
    return json.loads((root / "runs" / "tiny" / "manifest.json").read_text())["stages"]["train"]


def test_same_seed_and_threads_give_identical_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc_a = cli("--threads", "2", "run", write_flow(tmp_path / "a", stages="train"))
    proc_b = cli("run", write_flow(tmp_path / "b", stages="train"), env={"POTATURA_THREADS": "2"})
    assert proc_a.returncode == 0 and proc_b.returncode == 0, proc_a.stderr + proc_b.stderr
    rec_a, rec_b = _train_record(tmp_path / "a"), _train_record(tmp_path / "b")
    assert rec_a["threads"]["torch_threads"] == rec_b["threads"]["torch_threads"] == 2
    assert "--threads" in rec_a["threads"]["source"]
    assert rec_a["threads"]["omp_wait_policy"] == "PASSIVE"
    assert rec_a["outputs"]["model"]["sha256"] == rec_b["outputs"]["model"]["sha256"]


def test_default_is_one_thread_for_a_small_model(monkeypatch, tmp_path):
    monkeypatch.delenv("POTATURA_THREADS", raising=False)
    setting = threads.choose(load_config(write_flow(tmp_path)))
    assert setting["threads"] == 1 and "small model" in setting["source"]
    big = load_config(write_flow(tmp_path), {"model": {"name": "vgg16", "options": {}}, "data": {"dataset": "mnist"}})
    setting = threads.choose(big)
    assert setting["threads"] == threads.available_cpus() and "available" in setting["source"]


def test_bad_thread_setting_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("POTATURA_THREADS", "many")
    with pytest.raises(ConfigError, match="POTATURA_THREADS='many'"):
        threads.choose(None)
    proc = cli("--threads", "0", "run", write_flow(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr

"""The content-addressed stage cache: store/restore, integrity, one computation per key across processes."""

import json
import subprocess
import sys
import time

from potatura import stagecache
from potatura.artifacts import tree_sha256

HASH = "ab" * 32


def _stage_dir(run_dir, payload: bytes = b"weights"):
    out = run_dir / "train"
    out.mkdir(parents=True)
    (out / "model.pt").write_bytes(payload)
    (out / "sub").mkdir()
    (out / "sub" / "metrics.json").write_text('{"loss": 0.5}')
    return {"status": "done", "input_hash": HASH, "seconds": 12.5,
            "outputs": {"model": {"path": "train/model.pt", "sha256": tree_sha256(out / "model.pt")},
                        "metrics": {"path": "train/sub/metrics.json", "sha256": tree_sha256(out / "sub" / "metrics.json")}}}


def test_store_then_restore_in_another_run_directory(tmp_path):
    cache, run_a, run_b = tmp_path / "cache", tmp_path / "a", tmp_path / "b"
    record = _stage_dir(run_a)
    assert stagecache.restore(cache, "train", HASH, run_a) is None  # a miss: ours to compute (lock taken)
    assert stagecache.store(cache, "train", HASH, run_a, record) is True
    assert json.loads((cache / "train" / HASH / "record.json").read_text()) == record
    assert not [p for p in (cache / "train").iterdir() if p.name.startswith(".")], "no temporary folder left"

    (run_b / "train").mkdir(parents=True)
    (run_b / "train" / "stale.txt").write_text("from an older attempt")
    got = stagecache.restore(cache, "train", HASH, run_b)
    assert got["outputs"] == record["outputs"] and got["status"] == "done"
    assert got["cache"] == {"key": f"train/{HASH}", "source_seconds": 12.5}
    assert (run_b / "train" / "model.pt").read_bytes() == b"weights"
    assert (run_b / "train" / "sub" / "metrics.json").read_text() == '{"loss": 0.5}'
    assert not (run_b / "train" / "stale.txt").exists(), "the stage folder is the cached one, nothing else"
    assert stagecache.store(cache, "train", HASH, run_b, got) is False, "an existing entry is kept"


def test_damaged_entry_is_a_miss_and_outputs_outside_the_stage_are_not_cached(tmp_path):
    cache, run_a, run_b = tmp_path / "cache", tmp_path / "a", tmp_path / "b"
    record = _stage_dir(run_a)
    stagecache.store(cache, "train", HASH, run_a, record)
    (cache / "train" / HASH / "out" / "model.pt").write_bytes(b"bit rot")
    run_b.mkdir()
    assert stagecache.restore(cache, "train", HASH, run_b) is None
    assert not (cache / "train" / HASH).exists() and not (run_b / "train").exists()
    stagecache.release()

    outside = dict(record, outputs={"model": {"path": "elsewhere.pt", "sha256": "0" * 64}})
    (run_a / "elsewhere.pt").write_bytes(b"x")
    assert stagecache.store(cache, "train", "cd" * 32, run_a, outside) is False
    assert stagecache.store(cache, "train", "ef" * 32, run_a, dict(record, status="failed")) is False


def test_a_second_process_waits_for_the_first_and_restores(tmp_path):
    cache, run_a, run_b = tmp_path / "cache", tmp_path / "a", tmp_path / "b"
    run_b.mkdir()
    record = _stage_dir(run_a)
    assert stagecache.restore(cache, "train", HASH, run_a) is None  # this process computes the entry
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from potatura import stagecache\n"
         "print('calling', flush=True)\n"
         f"r = stagecache.restore({str(cache)!r}, 'train', {HASH!r}, {str(run_b)!r})\n"
         "print('hit' if r else 'miss', flush=True)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "calling"
        time.sleep(0.5)  # without the lock the child would have seen the miss by now
        stagecache.store(cache, "train", HASH, run_a, record)  # releases the lock
        assert child.stdout.readline().strip() == "hit"
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        stagecache.release()
    assert (run_b / "train" / "model.pt").read_bytes() == b"weights"


def test_cache_dir_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(stagecache.ENV_VAR, raising=False)
    assert stagecache.cache_dir_from() is None
    monkeypatch.setenv(stagecache.ENV_VAR, str(tmp_path / "c"))
    assert stagecache.cache_dir_from() == tmp_path / "c"
    assert stagecache.cache_dir_from(tmp_path / "x") == tmp_path / "x"


def test_restore_rewrites_the_source_run_directory_in_text_files(tmp_path):
    """A stage that writes its own run directory into its outputs (hls4ml_config.yml's OutputDir,
    hwgen's report.json): restored elsewhere, the files name the new run directory, not the old one."""
    cache, run_a, run_b = tmp_path / "cache", tmp_path / "trials" / "1", tmp_path / "trials" / "2"
    record = _stage_dir(run_a, payload=b"\x00\xffbinary " + str(run_a.resolve()).encode() + b"\xfe")
    config = run_a / "train" / "sub" / "config.yml"
    config.write_text(f"OutputDir: {run_a.resolve()}/train/project\nOther: {run_a.resolve()}0/x\n")
    record["outputs"]["config"] = {"path": "train/sub/config.yml", "sha256": tree_sha256(config)}
    stagecache.store(cache, "train", HASH, run_a, record)
    run_b.mkdir(parents=True)
    got = stagecache.restore(cache, "train", HASH, run_b)
    restored = (run_b / "train" / "sub" / "config.yml").read_text()
    assert restored == f"OutputDir: {run_b.resolve()}/train/project\nOther: {run_a.resolve()}0/x\n"
    # The binary is copied byte for byte; every output's sha256 is that of the restored file.
    assert (run_b / "train" / "model.pt").read_bytes() == (run_a / "train" / "model.pt").read_bytes()
    assert got["outputs"]["config"]["sha256"] == tree_sha256(run_b / "train" / "sub" / "config.yml")
    assert got["outputs"]["config"]["sha256"] != record["outputs"]["config"]["sha256"]
    assert got["outputs"]["model"] == record["outputs"]["model"]
    # The cache entry itself is unchanged: a third run directory gets its own path too.
    run_c = tmp_path / "trials" / "3"
    run_c.mkdir()
    stagecache.restore(cache, "train", HASH, run_c)
    assert (run_c / "train" / "sub" / "config.yml").read_text().startswith(f"OutputDir: {run_c.resolve()}/train")

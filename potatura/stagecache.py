"""A content-addressed stage cache shared by run directories (sweep trials, repeated runs).

The key of an entry is (stage name, the stage's input hash as potatura.flow computes it). That
hash already covers the config sections the stage reads, the seed, the data fingerprint and the
content hashes of the upstream outputs, so two run directories with the same key would compute
the same stage: the second one copies the first one's outputs instead.

    <cache_dir>/<stage>/<input hash>/out/          a copy of the stage's folder (run_dir/<stage>)
    <cache_dir>/<stage>/<input hash>/record.json   its manifest record (outputs with sha256)
    <cache_dir>/<stage>/<input hash>/source.json   {"run_dir": absolute path of the run directory it came from}
    <cache_dir>/<stage>/<input hash>.lock          held while one process computes that entry

The API is two calls used by the flow runner around a stage:

    record = restore(cache_dir, stage, input_hash, run_dir)   # a hit: outputs copied, record back
    ... run the stage when record is None ...
    store(cache_dir, stage, input_hash, run_dir, record)       # after it completed

On a miss, restore() takes an exclusive lock on the key (an OS file lock, so a killed process
frees it) and store() releases it: two processes that want the same stage at the same time
compute it once, the second waits and restores. A process that ran the stage and failed frees
its keys with release(); a process that exits frees them anyway.

Entries are written to a temporary folder and renamed into place, so a reader never sees half
an entry; restored outputs are checked against the recorded sha256 before use.

Stages write their own run directory's path into text outputs (hls4ml_config.yml's OutputDir,
hwgen's report.json). On restore into another run directory, occurrences of the source run
directory's absolute path in the restored text files (utf-8) become the destination's, and the
sha256 of the outputs in the returned record are recomputed; binary files are copied as they are.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Optional

from potatura.artifacts import read_json, tree_sha256, write_json

ENV_VAR = "POTATURA_STAGE_CACHE"

# Locks this process holds: (cache dir, stage, input hash) -> open file descriptor.
_held: dict[tuple[str, str, str], int] = {}


def cache_dir_from(explicit: Optional[os.PathLike | str] = None) -> Optional[Path]:
    """The cache folder: `explicit` when given, else $POTATURA_STAGE_CACHE, else None (no cache)."""
    value = explicit if explicit is not None else os.environ.get(ENV_VAR) or None
    return Path(value).resolve() if value is not None else None


def _entry(cache_dir: Path, stage: str, input_hash: str) -> Path:
    return Path(cache_dir) / stage / input_hash


def _valid(entry: Path) -> Optional[dict]:
    record_path = entry / "record.json"
    if not record_path.is_file():
        return None
    try:
        record = read_json(record_path)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("outputs"), dict) else None


def _lock(cache_dir: Path, stage: str, input_hash: str) -> None:
    key = (str(cache_dir), stage, input_hash)
    if key in _held:
        return
    path = Path(cache_dir) / stage / f"{input_hash}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process computes this entry
    _held[key] = fd


def release(cache_dir: Optional[Path] = None, stage: Optional[str] = None,
            input_hash: Optional[str] = None) -> None:
    """Free this process's locks (all, or those matching the given parts of the key)."""
    for key in list(_held):
        if ((cache_dir is None or key[0] == str(cache_dir)) and (stage is None or key[1] == stage)
                and (input_hash is None or key[2] == input_hash)):
            fd = _held.pop(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def restore(cache_dir: os.PathLike | str, stage: str, input_hash: str, run_dir: os.PathLike | str) -> Optional[dict]:
    """Copy a cached stage into run_dir/<stage> and return its manifest record, or None on a miss.

    The returned record is the one stored (status "done", outputs with paths relative to the run
    directory and their sha256) plus "cache": {"key", "source_seconds"}; the caller writes it into
    the manifest. On a miss the key stays locked by this process until store() or release().
    """
    cache_dir, run_dir = Path(cache_dir), Path(run_dir)
    entry = _entry(cache_dir, stage, input_hash)
    if _valid(entry) is None:
        _lock(cache_dir, stage, input_hash)
        if _valid(entry) is None:  # still missing once another process had its turn: ours to compute
            return None
        release(cache_dir, stage, input_hash)
    record = _valid(entry)
    out_dir = run_dir / stage
    tmp = run_dir / f".{stage}.restore-{uuid.uuid4().hex[:8]}"
    shutil.copytree(entry / "out", tmp)
    for out in record["outputs"].values():
        path = tmp / Path(out["path"]).relative_to(stage)
        if not path.exists() or tree_sha256(path) != out["sha256"]:
            # A damaged entry: drop it and let the stage run.
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(entry, ignore_errors=True)
            _lock(cache_dir, stage, input_hash)
            return None
    record = dict(record)
    if _rewrite_paths(tmp, _source_run_dir(entry), run_dir):
        record["outputs"] = {k: dict(out, sha256=tree_sha256(tmp / Path(out["path"]).relative_to(stage)))
                             for k, out in record["outputs"].items()}
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return dict(record, cache={"key": f"{stage}/{input_hash}", "source_seconds": record.get("seconds")})


def _source_run_dir(entry: Path) -> dict:
    """{"run_dir": resolved path, "run_dir_absolute": as given, made absolute} of the run
    directory an entry came from; {} for an entry stored before source.json existed."""
    try:
        value = read_json(entry / "source.json")
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str) and v} if isinstance(value, dict) else {}


def _rewrite_paths(folder: Path, source: dict, run_dir: Path) -> bool:
    """Replace the source run directory's absolute path (resolved, and as it was given) with
    run_dir's in every utf-8 text file under `folder`; a path followed by more of a name (trials/1
    in trials/10) is left alone. Returns whether any file changed."""
    dest = {"run_dir": str(Path(run_dir).resolve()), "run_dir_absolute": os.path.abspath(run_dir)}
    pairs = {source[k]: dest[k] for k in dest if k in source and source[k] != dest[k]}
    if not pairs:
        return False
    pattern = re.compile("|".join(re.escape(s) for s in sorted(pairs, key=len, reverse=True)) + r"(?![\w.-])")
    needles = [s.encode() for s in pairs]
    changed = False
    for p in folder.rglob("*"):
        if not p.is_file() or p.is_symlink():
            continue
        data = p.read_bytes()
        if not any(n in data for n in needles):
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a binary (a compiled library, a bitstream): left as it is
        new = pattern.sub(lambda m: pairs[m.group(0)], text)
        if new != text:
            p.write_bytes(new.encode("utf-8"))
            changed = True
    return changed


def store(cache_dir: os.PathLike | str, stage: str, input_hash: str, run_dir: os.PathLike | str,
          record: dict) -> bool:
    """Copy run_dir/<stage> and its manifest record into the cache; release the key's lock.

    Returns False (nothing stored) when an output lies outside the stage's folder, since only that
    folder is copied, or when the entry already exists (another process stored it first).
    """
    cache_dir, run_dir = Path(cache_dir), Path(run_dir)
    try:
        out_dir = (run_dir / stage).resolve()
        outputs = record.get("outputs", {})
        if record.get("status") != "done" or not out_dir.is_dir() or not all(
                (run_dir / o["path"]).resolve().is_relative_to(out_dir) for o in outputs.values()):
            return False
        entry = _entry(cache_dir, stage, input_hash)
        if _valid(entry) is not None:
            return False
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.parent / f".{input_hash}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(out_dir, tmp / "out")
        clean = {k: v for k, v in record.items() if k != "cache"}
        write_json(tmp / "record.json", clean)
        write_json(tmp / "source.json", {"run_dir": str(run_dir.resolve()), "run_dir_absolute": os.path.abspath(run_dir)})
        if entry.exists():  # a damaged entry (no record): replace it
            shutil.rmtree(entry)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process renamed its copy into place first
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True
    finally:
        release(cache_dir, stage, input_hash)

"""Artifact IO shared by every stage: atomic writes, content hashes, JSON helpers.

Every file a stage produces is written to a temporary file in the same directory and renamed
into place, so a killed run never leaves a half-written artifact behind and an earlier good
artifact is never lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; artifacts get the mode any new file would get (umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    # Saving through a file object keeps the archive's inner folder name fixed ("archive"):
    # saving to the temporary path would embed its random name and change the bytes every time.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def load_torch(path: str | os.PathLike, numpy_arrays: bool = False) -> Any:
    """Read a torch-saved file without running code from it: torch.load(weights_only=True).

    weights_only reads tensors and plain containers (dict, list, tuple, str, numbers) and refuses
    every other global the pickle names, so a crafted file cannot call os.system & co.
    `numpy_arrays` also allows numpy arrays and scalars (numpy's reconstructors build data, they
    call nothing named by the file); older training checkpoints hold numpy's RNG state.
    """
    import torch

    if not numpy_arrays:
        return torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _numpy_globals() -> list:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32, np.int32, np.uint8, np.bool_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


def read_torch(path: str | os.PathLike, what: str, numpy_arrays: bool = False) -> Any:
    """load_torch with one-line errors: DataError naming the file for a missing, foreign or refused file."""
    from potatura.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error says enough
            warnings.simplefilter("ignore")
            return load_torch(path, numpy_arrays=numpy_arrays)
    except Exception as exc:  # torch raises many kinds for a file that is not its own
        text = str(exc)
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        if "WeightsUnpickler error" in text:
            # torch's own message is a page long: keep its one telling line
            first = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                          if line.strip()), first)
        if "unsupported global" in text.lower():
            unsafe = _unsafe_globals(path)
            raise DataError(f"{path}: refused: the file is a pickle that names code to run "
                            f"({', '.join(unsafe) or first}); potatura reads only tensors and plain "
                            f"data (a {what} written by an older potatura may hold a pickled module: re-run the "
                            f"stage that wrote it)") from None
        raise DataError(f"{path}: not a readable {what}: {first}") from None


def load_payload(path: str | os.PathLike, fmt: str | tuple[str, ...], what: str = "model file",
                 numpy_arrays: bool = False) -> dict:
    """Read a torch-saved dict artifact whose "format" field is `fmt` (or one of them); DataError otherwise.

    The file is read with weights_only=True: a file that needs anything beyond tensors and plain
    containers (a pickled module, or a pickle that asks to run code) is refused, naming the file.
    """
    from potatura.errors import DataError

    payload = read_torch(path, what, numpy_arrays=numpy_arrays)
    formats = (fmt,) if isinstance(fmt, str) else tuple(fmt)
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        found = payload.get("format") if isinstance(payload, dict) else None
        hint = f", found {found!r}" if isinstance(found, str) else ""
        raise DataError(f"{path}: not a potatura {what} (expected format {' or '.join(formats)}{hint})")
    return payload


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a refused pickle names (read from the pickle opcodes; nothing is called)."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))[:4]
    except Exception:
        return []


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_sha256(path: str | os.PathLike) -> str:
    """Hash of a file, or of every file under a directory (names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h.update(str(p.relative_to(path)).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def json_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()


def npz_read_error(path: str | os.PathLike, exc: Exception):
    """The DataError for an .npz that numpy could not read, without numpy's advice to enable pickle:
    potatura never loads pickled arrays (a file from a stranger could run code)."""
    from potatura.errors import DataError

    text = str(exc)
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
    except OSError:
        is_zip = False
    if not is_zip:
        reason = "not an .npz (zip) archive"
    elif "pickle" in text:
        reason = "an array holds pickled objects, which potatura never loads"
    else:
        reason = text.splitlines()[0] if text else type(exc).__name__
    return DataError(f"{path}: not a readable .npz file of arrays ({reason})")

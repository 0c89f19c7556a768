"""IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

Layout: 2 zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
dimension, then the data in C order. Every header field and the data size are checked, so a
truncated or foreign file gets a clear error instead of a reshape failure.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from potatura.errors import DataError

# type code -> (numpy dtype, big-endian)
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except EOFError:
        raise DataError(f"{path}: truncated .gz: the compressed stream ends early "
                        f"({path.stat().st_size} bytes on disk)") from None
    except (OSError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file into a numpy array of its native dtype (native byte order)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IDX file not found")
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file: magic starts with {data[:2].hex()}, expected 0000")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02x}; known: "
            + ", ".join(f"0x{c:02x}" for c in _IDX_TYPES)
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise DataError(f"{path}: truncated IDX header: {ndim} dimensions need {header_end} bytes, file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_end
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX data {what}: dimensions {'x'.join(map(str, dims))} of {dtype.name} need "
            f"{expected} bytes, file has {actual}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as an IDX file (gzip if the name ends in .gz or compress=True)."""
    from potatura.artifacts import write_bytes

    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("=").str: k for k, v in _IDX_TYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise DataError(f"IDX cannot store dtype {array.dtype}")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = header + array.astype(_IDX_TYPES[code], copy=False).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        body = gzip.compress(body, mtime=0)
    return write_bytes(path, body)


def find_idx_pair(folder: Path, split: str) -> tuple[Path, Path]:
    """Locate the images/labels files of `split` ('train' or 't10k') in `folder`."""
    found = []
    for kind, dims in (("images", 3), ("labels", 1)):
        candidates = [folder / f"{split}-{kind}-idx{dims}-ubyte{ext}" for ext in ("", ".gz")]
        candidates += [folder / f"{split}-{kind}.idx{dims}-ubyte{ext}" for ext in ("", ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise DataError(
                f"{folder}: no {split} {kind} file; expected {candidates[0].name} or {candidates[1].name}"
            )
        found.append(hit)
    return found[0], found[1]

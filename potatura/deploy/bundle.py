"""Deploy bundles on the board side: read and verify a manifest, pack a folder, unpack an upload safely.

stdlib + numpy only (runs on the board). The host-side writer is potatura.deploy.writer.

A bundle folder:

    manifest.json             protocol, board, clock, IP names/addresses, DMA parameters or the engine's
                              register map and kernel calls, tensors (shape,
                              fixed-point type, wire words), tolerance, versions, sim cycle report,
                              and the sha256 of every other file
    overlay/<name>.bit/.hwh   the bitstream and its hardware handoff (or a placeholder, marked so)
    golden.npz                x_codes (N, *input shape), y_codes (N, *output shape), int64
    engine.npz                memory-mapped engine bundles only: packed filters/biases per layer and the
                              GHWC word <-> element maps (input_index, output_index)
    emulation/                the simulator's design (design.json + weights) for the emulated board
    agent/                    the board-side Python package (driver, agent): PYTHONPATH=agent
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from potatura.deploy.errors import (
    BundleError, BundleIntegrityError, BundleTooLargeError, VersionMismatchError)

BUNDLE_FORMAT = "potatura-deploy-bundle/1"
DRIVER_ABI = 1  # bumped when the manifest sections the driver reads change meaning
# per protocol: an agent from before the memory-mapped engine (ABI 1 only) refuses engine bundles by version
DRIVER_ABIS = {"axi-stream-dma": DRIVER_ABI, "memory-mapped-engine": 2}
MANIFEST = "manifest.json"
MAX_FILES = 2000


def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir) -> dict:
    path = Path(bundle_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir}: no {MANIFEST} (not a deploy bundle)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: a JSON object expected")
    return manifest


def check_versions(manifest: dict, where: str = "bundle") -> None:
    """VersionMismatchError unless the bundle speaks this agent's bundle format and driver ABI."""
    fmt, abi = manifest.get("format"), manifest.get("driver_abi")
    protocol = manifest.get("protocol", "axi-stream-dma")
    if fmt != BUNDLE_FORMAT or abi != DRIVER_ABIS.get(protocol):
        raise VersionMismatchError(
            f"{where}: format {fmt!r} protocol {protocol!r} driver ABI {abi!r} (potatura "
            f"{manifest.get('potatura_version')}), this agent speaks {BUNDLE_FORMAT!r} with ABI "
            f"{', '.join(f'{v} for {k}' for k, v in DRIVER_ABIS.items())}: rebuild the bundle with this potatura, or "
            "install the bundle's agent on the board (PYTHONPATH=<bundle>/agent)")


def verify_bundle(bundle_dir, strict: bool = True, label: Optional[str] = None) -> dict:
    """The manifest, after checking versions and every file's sha256 (strict: no unlisted files).

    label: how errors name the bundle (default its folder)."""
    bundle_dir = Path(bundle_dir)
    where = label or str(bundle_dir)
    manifest = read_manifest(bundle_dir)
    check_versions(manifest, where)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{where}/{MANIFEST}: no 'files' table of sha256 digests")
    for rel, digest in files.items():
        path = bundle_dir / safe_relpath(rel)
        if not path.is_file() or path.is_symlink():
            raise BundleIntegrityError(f"{where}: {rel} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise BundleIntegrityError(f"{where}: {rel} has sha256 {actual[:16]}..., the manifest says "
                                       f"{str(digest)[:16]}... (corrupted or altered)")
    if strict:
        listed = set(files) | {MANIFEST}
        for path in bundle_dir.rglob("*"):
            if path.is_symlink():
                raise BundleError(f"{where}: {path.relative_to(bundle_dir)} is a symlink")
            rel = path.relative_to(bundle_dir).as_posix()
            if path.is_file() and rel not in listed and "__pycache__" not in rel:
                raise BundleIntegrityError(f"{where}: {rel} is not in the manifest")
    return manifest


def load_golden(bundle_dir, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(bundle_dir) / manifest["golden"]["file"], allow_pickle=False) as data:
        return np.asarray(data["x_codes"], dtype=np.int64), np.asarray(data["y_codes"], dtype=np.int64)


def safe_relpath(name: str) -> str:
    """A bundle-relative POSIX path, or BundleError if it is absolute or climbs out with '..'."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise BundleError(f"bundle path {name!r}: not a plain relative path")
    norm = posixpath.normpath(name)
    if posixpath.isabs(name) or norm == ".." or norm.startswith("../") or norm == ".":
        raise BundleError(f"bundle path {name!r} escapes the bundle directory")
    return norm


def pack_bundle(bundle_dir) -> bytes:
    """The bundle as an uncompressed tar (regular files only, relative names, no owners)."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for rel in [MANIFEST, *sorted(manifest.get("files", {}))]:
            path = bundle_dir / rel
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return out.getvalue()


def unpack_upload(data: bytes, store_dir, max_bytes: int) -> tuple[str, Path]:
    """Unpack an uploaded bundle tar into store_dir/bundles/<id>/ atomically; return (id, path).

    Refused with BundleError (nothing written outside a private staging folder, which is removed):
    members that are not regular files or folders (symlinks, hard links, devices), absolute names or
    names with '..', more than MAX_FILES members, more than max_bytes unpacked; then the manifest's
    versions and sha256 digests are checked (BundleIntegrityError, VersionMismatchError). The id
    is the sha256 of the manifest.
    """
    if len(data) > max_bytes:
        raise BundleTooLargeError(f"upload of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    store_dir = Path(store_dir)
    bundles = store_dir / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=bundles))
    try:
        try:
            tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        except tarfile.TarError as exc:
            raise BundleError(f"upload is not a tar archive: {exc}") from None
        total = 0
        with tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES:
                raise BundleError(f"upload has {len(members)} members, at most {MAX_FILES}")
            for member in members:
                rel = safe_relpath(member.name)
                if member.issym() or member.islnk():
                    raise BundleError(f"upload member {member.name!r} is a link; bundles hold regular files only")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(f"upload member {member.name!r} is not a regular file")
                total += member.size
                if total > max_bytes:
                    raise BundleTooLargeError(f"upload unpacks to more than {max_bytes} bytes")
                target = staging / rel
                if staging.resolve() not in target.parent.resolve().parents and \
                        target.parent.resolve() != staging.resolve():
                    raise BundleError(f"upload member {member.name!r} escapes the bundle directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                # O_EXCL | O_NOFOLLOW: never write through a link or over a file of this upload
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
                with os.fdopen(fd, "wb") as fh:
                    shutil.copyfileobj(source, fh)
        verify_bundle(staging, label="uploaded bundle")
        bundle_id = sha256_file(staging / MANIFEST)[:16]
        final = bundles / bundle_id
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=bundles))
            os.replace(final, old / "b")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, final)
        return bundle_id, final
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

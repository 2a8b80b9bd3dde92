"""Atomic file writes: a reader, or a rerun after a crash, never sees half a file under its
final name (manifests, checkpoints, model artifacts, cached images, downloads); a file's
SHA-256 (packaged weights, the artifact an ONNX export came from); and the check that a path the
user gave as a folder is one."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from binventory import BinventoryError


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks (weights files run to 100s of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_folder(path: str | Path, what: str = "dataset folder", hint: str = "") -> Path:
    """``path`` if it is a folder, else a BinventoryError that says whether it is missing or a
    file (a user who passed a manifest or a photo for a folder should read which)."""
    path = Path(path)
    if path.is_dir():
        return path
    message = f"{path} is a file, not a {what}" if path.exists() else f"{what} not found: {path}"
    raise BinventoryError(message + (f" ({hint})" if hint else ""))

"""Where an observation's photo is: the one rule for ``observation.image_uri``.

An S3 photo keeps its ``s3://bucket/key``. A local photo is recorded by its path relative to the
image store (``--image-dir``, default ``$BINVENTORY_DATA_DIR/observations``): an upload through
the API lands in the store (``ab/abcd....jpg``), a photo ``reconcile`` read from a dataset
folder is reached from it (``../abid/bin-images/00523.jpg``). So a row means the same to every
command and server given the same store, whatever folder each was started in (a path relative
to the working folder did not), and the store moves together with the photos inside it.
"""
from __future__ import annotations

import os
from pathlib import Path

from binventory.inventory.db import data_dir


def default_image_dir() -> Path:
    return data_dir() / "observations"


def photo_uri(source: str | Path, image_dir: str | Path) -> str:
    """What an observation stores for a photo read from ``source``."""
    if str(source).startswith("s3://"):
        return str(source)
    return Path(os.path.relpath(os.path.abspath(source), os.path.abspath(image_dir))).as_posix()


def photo_path(uri: str, image_dir: str | Path) -> Path:
    """The file behind a stored local ``uri`` (an absolute one stays as it is)."""
    # '..' is resolved on the names, as photo_uri made it: the store itself may not exist (reconcile
    # reading a dataset folder never creates it), and the OS cannot step out of a missing folder.
    path = Path(os.path.normpath(Path(os.path.abspath(image_dir)) / uri))
    if not path.exists() and Path(uri).exists():  # a row from before this rule: relative to the
        return Path(uri)                           # folder its server ran in
    return path

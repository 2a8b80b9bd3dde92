"""Inputs of batch prediction: every image of a folder, an S3 prefix or a manifest, and reading
one of them (local file or S3 object) with a size limit."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from binventory import BinventoryError
from binventory.data.validate import MAX_BYTES
from binventory.files import require_folder
from binventory.serving.predictor import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Item:
    image_id: str
    source: str  # absolute path or s3://bucket/key


def _image_id(rel: str) -> str:
    # ABID layout: bin-images/<id>.jpg -> <id>; elsewhere the relative path without its suffix.
    stem = rel.rsplit(".", 1)[0]
    return stem[len("bin-images/"):] if stem.startswith("bin-images/") else stem


def _is_image(name: str) -> bool:
    # Hidden files are in-flight downloads (.<name>.part) or editor droppings, not inputs.
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _folder_items(folder: Path) -> list[Item]:
    # Absolute, not resolved: a folder of symlinks keeps its own names (and ids).
    folder = Path(os.path.abspath(folder))
    if (folder / "bin-images").is_dir():  # an ABID-layout dataset: its metadata is not input
        folder = folder / "bin-images"
    items = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if _is_image(name):
                path = Path(here, name)
                items.append(Item(_image_id(path.relative_to(folder).as_posix()), str(path)))
    return items


def _manifest_items(path: Path, split: str | None = None) -> list[Item]:
    from binventory.data.manifest import split_rows

    root, valid = split_rows(path, split)
    root = Path(os.path.abspath(root))
    return [Item(i, str(root / p)) for i, p in zip(valid.image_id, valid.image_path)]


def _s3_items(uri: str, client) -> list[Item]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    # The prefix names a folder: s3://b/abid must not also pick up s3://b/abid-old/...
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    items = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if _is_image(rel.rsplit("/", 1)[-1]):
                    items.append(Item(_image_id(rel), f"s3://{bucket}/{obj['Key']}"))
    except (ClientError, BotoCoreError) as e:
        raise BinventoryError(f"cannot list {uri}: {e}") from None
    return items


def list_inputs(inputs: str | Path, endpoint_url: str | None = None, client=None,
                workers: int = 8, split: str | None = None) -> tuple[list[Item], object]:
    """The images of a folder, an s3:// prefix or a manifest (``split``: only that split of
    it), sorted by source, and the S3 client to read them with (None for local inputs)."""
    if split is not None and Path(str(inputs)).suffix != ".parquet":
        raise BinventoryError("a split can only be chosen from a manifest (.parquet) input")
    text = str(inputs)
    if text.startswith("s3://"):
        from binventory.data.fetch import make_client

        client = client or make_client(endpoint_url, workers)
        items = _s3_items(text, client)
    else:
        path = Path(inputs)
        if path.suffix == ".parquet":
            items = _manifest_items(path, split)
        else:
            items = _folder_items(require_folder(
                path, "input folder", "expected a folder, a manifest .parquet or s3://bucket/prefix"))
    if not items:
        raise BinventoryError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {text}")
    unique = {item.source: item for item in items}
    return sorted(unique.values(), key=lambda item: item.source), client


def _within(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise ImageError("too_large", f"over the limit of {max_bytes:,} bytes")
    return data


def read_s3_object(client, bucket: str, key: str, max_bytes: int = MAX_BYTES) -> bytes:
    """An S3 object's bytes, reading at most one byte past ``max_bytes`` whatever its size;
    ImageError("too_large") past the limit. botocore's errors reach the caller as they are."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return _within(body.read(max_bytes + 1), max_bytes)
    finally:
        body.close()


def read_bytes(source: str, client, max_bytes: int = MAX_BYTES) -> bytes:
    """An input's bytes (a local path or s3://bucket/key); ImageError when it is too large to be
    a bin photo."""
    if source.startswith("s3://"):
        bucket, _, key = source[len("s3://"):].partition("/")
        return read_s3_object(client, bucket, key, max_bytes)
    with open(source, "rb") as f:
        return _within(f.read(max_bytes + 1), max_bytes)


# ---- output schema -----------------------------------------------------------------------------

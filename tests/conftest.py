"""Shared fixtures: tiny ABID-layout datasets made on the fly, and the real sample when present."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ABID_SAMPLE = REPO.parent / "shared" / "abid-sample"


def jpeg_bytes(size=(40, 30), seed=0, quality=85) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def metadata_json(count: int, n_skus: int = 1) -> dict:
    n_skus = min(max(n_skus, 1), max(count, 1)) if count else 0
    skus = {}
    for k in range(n_skus):
        q = count // n_skus + (1 if k < count % n_skus else 0)
        skus[f"B00TEST{k:03d}"] = {"asin": f"B00TEST{k:03d}", "name": f"item {k}", "quantity": q,
                                   "length": {"unit": "IN", "value": 4.0},
                                   "width": {"unit": "IN", "value": 3.0},
                                   "height": {"unit": "IN", "value": 2.0},
                                   "weight": {"unit": "pounds", "value": 0.5}}
    return {"BIN_FCSKU_DATA": skus, "EXPECTED_QUANTITY": count}


def write_item(root: Path, image_id: str, count: int | None = None, image: bytes | None = None,
               meta: dict | str | None = None) -> None:
    (root / "bin-images").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    if image is not None:
        (root / "bin-images" / f"{image_id}.jpg").write_bytes(image)
    if meta is None and count is not None:
        meta = metadata_json(count, n_skus=2)
    if meta is not None:
        text = meta if isinstance(meta, str) else json.dumps(meta)
        (root / "metadata" / f"{image_id}.json").write_text(text)


def bomb_jpeg() -> bytes:
    """A small valid JPEG whose header claims 30000x30000 pixels (a decompression bomb)."""
    data = bytearray(jpeg_bytes((16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") + (30000).to_bytes(2, "big")
    return bytes(data)


# Each bad input kind the index must report, with the status it must get.
BAD_ITEMS = {
    "empty": ("empty_file", dict(image=b"", count=2)),
    "truncated": ("truncated", dict(image=jpeg_bytes((64, 48), seed=9)[:600], count=2)),
    "png": ("not_jpeg", dict(count=2)),  # image filled in by the fixture
    "garbage": ("undecodable", dict(image=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, count=1)),
    "bomb": ("decompression_bomb", dict(image=bomb_jpeg(), count=1)),
    "no-meta": ("missing_metadata", dict(image=jpeg_bytes(seed=5))),
    "no-image": ("missing_image", dict(count=3)),
    "bad-json": ("bad_metadata", dict(image=jpeg_bytes(seed=6), meta="{not json")),
    "no-qty": ("bad_metadata", dict(image=jpeg_bytes(seed=7), meta={"BIN_FCSKU_DATA": {}})),
    "neg-qty": ("bad_metadata", dict(image=jpeg_bytes(seed=8), meta={"EXPECTED_QUANTITY": -1})),
}


@pytest.fixture
def good_dataset(tmp_path) -> tuple[Path, dict[str, int]]:
    """60 valid images, 10 of each count 0..5, plus '00523' and '523' as distinct images."""
    root = tmp_path / "abid"
    labels: dict[str, int] = {}
    for i in range(60):
        image_id = f"{i + 1:05d}"
        labels[image_id] = i % 6
    labels["00523"], labels["523"] = 4, 1
    for k, (image_id, count) in enumerate(labels.items()):
        write_item(root, image_id, count, image=jpeg_bytes((48 + k % 5, 40), seed=k))
    return root, labels


@pytest.fixture
def messy_dataset(good_dataset) -> tuple[Path, dict[str, int]]:
    """The good dataset plus one file of every bad kind and an unexpected file."""
    root, labels = good_dataset
    png = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(png, "PNG")
    for image_id, (_, kwargs) in BAD_ITEMS.items():
        if image_id == "png":
            kwargs = dict(kwargs, image=png.getvalue())
        write_item(root, image_id, **kwargs)
    (root / "bin-images" / "notes.txt").write_text("not an image")
    (root / "bin-images" / ".00001.jpg.part").write_bytes(b"partial download")
    return root, labels


@pytest.fixture
def abid_sample() -> Path:
    if not (ABID_SAMPLE / "bin-images").is_dir():
        pytest.skip(f"real ABID sample not found at {ABID_SAMPLE} (development data, optional)")
    return ABID_SAMPLE

"""One reading of a manifest split (calibration, int8 export, batch prediction) and one decoder."""
import numpy as np
import pytest

from binventory import BinventoryError
from binventory.data.manifest import build_manifest, split_rows, write_manifest
from binventory.data.preprocess import Preprocess
from binventory.data.split import assign_splits
from binventory.inventory.calibrate import load_images
from binventory.serving.batch_cli import _split_images
from binventory.serving.inputs import list_inputs


@pytest.fixture
def manifests(messy_dataset, tmp_path):
    root, _ = messy_dataset
    df = build_manifest(root, workers=1, progress=False)
    plain = write_manifest(df, tmp_path / "plain.parquet", root).manifest
    split = assign_splits(df, protocol="challenge", seed=0, ratios=(0.6, 0.2, 0.2))
    return plain, write_manifest(split, tmp_path / "split.parquet", root).manifest, split


def test_split_rows_are_the_valid_images_of_the_split_by_id(manifests):
    _, path, df = manifests
    root, rows = split_rows(path, "val")
    expected = df[(df.status == "ok") & (df.split == "val")].image_id
    assert list(rows.image_id) == sorted(expected) and len(rows) > 0
    assert (root / rows.image_path.iloc[0]).is_file()
    assert len(split_rows(path)[1]) == int((df.status == "ok").sum())  # no split: every valid one


def test_every_reader_of_a_split_says_the_same_when_there_is_none(manifests):
    plain, _, _ = manifests
    readers = [lambda: load_images(plain, "val"),
               lambda: _split_images(plain, "train", Preprocess(image_size=16), None),
               lambda: list_inputs(plain, split="test")]
    for read in readers:
        with pytest.raises(BinventoryError, match=r"has no splits: run 'binventory data split' first"):
            read()


def test_export_and_calibration_decode_the_same_pixels(manifests):
    _, path, _ = manifests
    pre = Preprocess(image_size=16, resize="letterbox")
    pixels, labels = _split_images(path, "val", pre, None)
    root, rows = split_rows(path, "val")
    assert pixels.shape == (len(rows), 16, 16, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels[0], pre.load(root / rows.image_path.iloc[0]))
    assert list(labels) == list(rows.label.astype(int))
    assert pre.load_many([]).shape == (0, 16, 16, 3)

"""`data merge`: one manifest over an ABID set and a count-folder set, splits kept."""
import pytest

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.dataset import BinDataset
from binventory.data.manifest import read_manifest
from binventory.data.preprocess import Preprocess
from tests.conftest import jpeg_bytes
from tests.data.test_count_folders import COUNTS, make_tree


def test_merge_an_abid_set_and_a_count_folder_set(good_dataset, tmp_path, capsys):
    root, labels = good_dataset
    extra = tmp_path / "extra"
    make_tree(extra / "images")
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main(["data", "index", str(root), "--out", str(runs / "a.parquet"), "--workers", "1"]) == 0
    assert main(["data", "split", str(runs / "a.parquet"), "--protocol", "challenge"]) == 0
    assert main(["data", "index", str(extra), "--out", str(runs / "b.parquet"), "--workers", "1"]) == 0
    assert main(["data", "merge", str(runs / "a.parquet"), str(runs / "b.parquet"),
                 "--out", str(runs / "ab.parquet")]) == 2
    assert "has no split" in capsys.readouterr().err
    assert main(["data", "split", str(runs / "b.parquet"), "--protocol", "all", "--ratios", "1", "0", "0"]) == 0
    assert main(["data", "merge", str(runs / "a.parquet"), str(runs / "b.parquet"),
                 "--out", str(runs / "ab.parquet")]) == 0
    df, _ = read_manifest(runs / "ab.parquet")
    a, _ = read_manifest(runs / "a.parquet")
    assert len(df) == len(a) + len(COUNTS)
    extra_rows = df[df.image_id.isin(list(COUNTS))]
    assert (extra_rows.split == "train").all() and not extra_rows.has_record.any()
    assert dict(df[df.has_record].split.value_counts()) == dict(a.split.value_counts())
    train = BinDataset(runs / "ab.parquet", "train", preprocess=Preprocess(image_size=32))
    image, count = train[train.image_ids.index("401")]  # a count-folder image, read via the new root
    assert count == 4 and image.shape == (3, 32, 32)
    first_abid = train.image_ids.index(next(i for i in train.image_ids if i in labels))
    assert train[first_abid][1] == labels[train.image_ids[first_abid]]


def test_merge_refuses_one_id_for_two_images(tmp_path):
    from binventory.data.merge import merge_manifests
    for name, seed in (("x", 0), ("y", 1)):
        (tmp_path / name / "images" / "1").mkdir(parents=True)
        (tmp_path / name / "images" / "1" / "101.jpg").write_bytes(jpeg_bytes(seed=seed))
        assert main(["data", "index", str(tmp_path / name), "--workers", "1"]) == 0
        assert main(["data", "split", str(tmp_path / name / "manifest.parquet"), "--protocol", "all",
                     "--ratios", "1", "0", "0"]) == 0
    with pytest.raises(BinventoryError, match="name different images"):
        merge_manifests([tmp_path / "x" / "manifest.parquet", tmp_path / "y" / "manifest.parquet"])


def test_merge_keeps_one_copy_of_an_image_found_twice(tmp_path):
    from binventory.data.merge import merge_manifests
    for name in ("x", "y"):
        (tmp_path / name / "images" / "1").mkdir(parents=True)
        (tmp_path / name / "images" / "1" / "101.jpg").write_bytes(jpeg_bytes(seed=3))
        (tmp_path / name / "images" / "1" / f"{name}.jpg").write_bytes(jpeg_bytes(seed=ord(name)))
        assert main(["data", "index", str(tmp_path / name), "--workers", "1"]) == 0
        assert main(["data", "split", str(tmp_path / name / "manifest.parquet"), "--protocol", "all",
                     "--ratios", "1", "0", "0"]) == 0
    df, root = merge_manifests([tmp_path / "x" / "manifest.parquet", tmp_path / "y" / "manifest.parquet"])
    assert sorted(df.image_id) == ["101", "x", "y"] and root == tmp_path.resolve()
    assert df.set_index("image_id").image_path["101"] == "x/images/1/101.jpg"

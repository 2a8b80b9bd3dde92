"""`data index` reads the count-folder layout (images/<count>/<id>.jpg, labels.csv optional)."""
import pytest

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.dataset import BinDataset
from binventory.data.manifest import build_manifest, read_manifest
from binventory.data.preprocess import Preprocess
from tests.conftest import jpeg_bytes

COUNTS = {"101": 1, "102": 1, "201": 2, "401": 4, "402": 4, "501": 5}


def make_tree(base, counts=COUNTS):
    for k, (image_id, count) in enumerate(counts.items()):
        folder = base / str(count)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image_id}.jpg").write_bytes(jpeg_bytes((48, 40), seed=k))


def write_labels(root, rows):
    lines = ["image_id,count,source_split"] + [f"{i},{c},train" for i, c in rows.items()]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("under_images", [True, False])
def test_count_folders_without_labels_file(tmp_path, under_images):
    make_tree(tmp_path / "images" if under_images else tmp_path)
    df = build_manifest(tmp_path, workers=1, progress=False)
    assert (df.status == "ok").all()
    assert dict(zip(df.image_id, df.label.astype(int))) == COUNTS
    assert not df.has_record.any() and df.metadata_path.isna().all()
    prefix = "images/" if under_images else ""
    assert df.set_index("image_id").image_path["401"] == f"{prefix}4/401.jpg"


def test_labels_file_must_agree_with_the_folders(tmp_path):
    make_tree(tmp_path / "images")
    (tmp_path / "images" / "5" / "102.jpg").write_bytes(jpeg_bytes(seed=40))  # 102 also under 1/
    (tmp_path / "images" / "2" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "4" / "403.jpg").write_bytes(b"not a jpeg")
    write_labels(tmp_path, {**COUNTS, "201": 3, "999": 2, "403": 4})  # 201 disagrees, 999 absent
    df = build_manifest(tmp_path, workers=1, progress=False).set_index("image_id")
    assert df.status["101"] == "ok" and df.status["501"] == "ok"
    assert df.status["201"] == "bad_metadata" and "labels.csv says 3, its folder says 2" in df.reason["201"]
    assert (df.loc["102"].status == "bad_metadata").all()
    assert all("several counts: [1, 5]" in r for r in df.loc["102"].reason)
    assert df.status["999"] == "missing_image"
    assert df.status["403"] == "not_jpeg"
    assert df.status["images/2/notes.txt"] == "unexpected_file"


def test_an_image_missing_from_the_labels_file_is_reported(tmp_path):
    make_tree(tmp_path / "images")
    write_labels(tmp_path, {k: v for k, v in COUNTS.items() if k != "501"})
    df = build_manifest(tmp_path, workers=1, progress=False).set_index("image_id")
    assert df.status["501"] == "bad_metadata" and "not listed in labels.csv" in df.reason["501"]


def test_a_labels_file_without_its_columns_is_a_clear_error(tmp_path):
    make_tree(tmp_path / "images")
    (tmp_path / "labels.csv").write_text("id,n\n101,1\n")
    with pytest.raises(BinventoryError, match="image_id and count"):
        build_manifest(tmp_path, workers=1, progress=False)


def test_not_a_known_layout(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(BinventoryError, match="no bin-images/ .* no count folders"):
        build_manifest(tmp_path, workers=1, progress=False)


def test_cli_index_then_train_dataset(tmp_path, capsys):
    make_tree(tmp_path / "images")
    write_labels(tmp_path, COUNTS)
    assert main(["data", "index", str(tmp_path), "--workers", "1"]) == 0
    assert "carry no record" in capsys.readouterr().out
    df, _ = read_manifest(tmp_path / "manifest.parquet")
    assert not df.has_record.any()
    dataset = BinDataset(tmp_path / "manifest.parquet", preprocess=Preprocess(image_size=32))
    image, count = dataset[dataset.image_ids.index("401")]
    assert image.shape == (3, 32, 32) and count == 4


def test_old_manifests_read_with_has_record(good_dataset, tmp_path):
    import pyarrow.parquet as pq

    from binventory.data.manifest import write_manifest
    root, _ = good_dataset
    write_manifest(build_manifest(root, workers=1, progress=False), tmp_path / "m.parquet", root)
    table = pq.read_table(tmp_path / "m.parquet")
    pq.write_table(table.drop(["has_record"]), tmp_path / "old.parquet")
    df, _ = read_manifest(tmp_path / "old.parquet")
    assert df.has_record.all()


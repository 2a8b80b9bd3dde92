import json
import os
from collections import Counter

import pandas as pd
import pytest

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.manifest import (build_manifest, count_table, dataset_root, manifest_hash,
                                      quarantine_path, read_manifest, write_manifest)
from tests.conftest import BAD_ITEMS, jpeg_bytes, metadata_json, write_item


def test_index_valid_rows(good_dataset):
    root, labels = good_dataset
    df = build_manifest(root, workers=1, progress=False)
    assert len(df) == len(labels) and (df.status == "ok").all()
    by_id = df.set_index("image_id")
    # Ids are strings: "00523" and "523" are two images with their own labels.
    assert by_id.loc["00523", "label"] == 4 and by_id.loc["523", "label"] == 1
    assert by_id.loc["523", "image_path"] == "bin-images/523.jpg"
    assert by_id.loc["00523", "sha256"] != by_id.loc["523", "sha256"]
    assert dict(zip(df.image_id, df.label)) == labels
    assert (df.sku_quantity_sum == df.label).all()
    assert by_id.loc["00002", "num_skus"] == 1 and by_id.loc["00003", "num_skus"] == 2
    assert by_id.loc["00001", "num_skus"] == 0  # count 0: an empty bin has no SKUs
    assert by_id.loc["00001", "width"] == 48 and by_id.loc["00001", "height"] == 40


def test_index_quarantines_every_bad_kind_and_keeps_going(messy_dataset):
    root, labels = messy_dataset
    df = build_manifest(root, workers=2, progress=False)
    status = dict(zip(df.image_id, df.status))
    for image_id, (expected, _) in BAD_ITEMS.items():
        assert status[image_id] == expected, image_id
    assert status["bin-images/notes.txt"] == "unexpected_file"
    # the in-flight download is not data; every good image is still there and valid
    assert not any(".part" in i for i in df.image_id)
    assert sum(s == "ok" for s in status.values()) == len(labels)
    assert (df[df.status != "ok"].reason.str.len() > 0).all()


def test_write_and_read_roundtrip_with_quarantine_report(messy_dataset, tmp_path):
    root, labels = messy_dataset
    df = build_manifest(root, workers=1, progress=False)
    out = tmp_path / "out" / "m.parquet"
    paths = write_manifest(df, out, root)
    back, meta = read_manifest(out)
    assert meta["root"] == str(root.resolve())
    pd.testing.assert_frame_equal(back, df)
    report = pd.read_csv(paths.quarantine, dtype=str)
    assert paths.quarantine == quarantine_path(out)
    assert set(report.image_id) == set(BAD_ITEMS) | {"bin-images/notes.txt"}
    assert not list(out.parent.glob(".*tmp"))  # no temporary files left behind
    assert manifest_hash(back) == manifest_hash(df)


def test_manifest_hash_changes_with_labels(good_dataset):
    root, _ = good_dataset
    df = build_manifest(root, workers=1, progress=False)
    changed = df.copy()
    changed.loc[0, "label"] = 9
    assert manifest_hash(df) != manifest_hash(changed)
    assert manifest_hash(df) == manifest_hash(df.sample(frac=1, random_state=0))


def test_dataset_root_follows_a_moved_dataset(good_dataset, tmp_path):
    root, _ = good_dataset
    out = root / "manifest.parquet"
    write_manifest(build_manifest(root, workers=1, progress=False), out, root)
    moved = tmp_path / "moved"
    os.rename(root, moved)
    _, meta = read_manifest(moved / "manifest.parquet")
    assert dataset_root(meta, moved / "manifest.parquet") == moved.resolve()


def test_count_table(good_dataset):
    root, labels = good_dataset
    df = build_manifest(root, workers=1, progress=False)
    table = count_table(df)
    expected = Counter(labels.values())
    assert dict(table.images) == {str(k): v for k, v in sorted(expected.items())}


def test_index_errors(tmp_path):
    with pytest.raises(BinventoryError, match="not found"):
        build_manifest(tmp_path / "nope")
    with pytest.raises(BinventoryError, match="no bin-images.*ABID layout.*no count folders"):
        build_manifest(tmp_path)
    with pytest.raises(BinventoryError, match="not found"):
        read_manifest(tmp_path / "m.parquet")
    (tmp_path / "m.parquet").write_text("not parquet")
    with pytest.raises(BinventoryError, match="not a readable"):
        read_manifest(tmp_path / "m.parquet")


def test_cli_index_prints_table_and_writes_files(messy_dataset, capsys):
    root, labels = messy_dataset
    assert main(["data", "index", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{len(labels)} valid images of {len(labels) + len(BAD_ITEMS) + 1} indexed" in out
    assert "quarantine" in out and (root / "manifest.quarantine.csv").is_file()
    assert main(["data", "summary", str(root / "manifest.parquet")]) == 0
    assert main(["data", "index", str(root / "missing")]) == 2


@pytest.mark.slow
@pytest.mark.abid
def test_index_real_abid_sample(abid_sample, tmp_path):
    df = build_manifest(abid_sample, progress=False)
    assert (df.status == "ok").sum() == 7973 == len(df)
    # The table must agree with a count made straight from the JSON files.
    truth = Counter()
    for path in (abid_sample / "metadata").glob("*.json"):
        truth[min(json.loads(path.read_text())["EXPECTED_QUANTITY"], 11)] += 1
    table = count_table(df)
    assert dict(table.images) == {(str(k) if k < 11 else "11+"): v for k, v in sorted(truth.items())}
    assert sum(truth[k] for k in range(6)) == 4739 + 704  # the README's 0-5 item totals
    assert {"523", "00001"} <= set(df.image_id)
    write_manifest(df, tmp_path / "m.parquet", abid_sample)  # the sample itself is read-only


def test_an_implausible_quantity_is_bad_metadata(good_dataset):
    root, _ = good_dataset
    huge = metadata_json(3)
    huge["EXPECTED_QUANTITY"] = 10**12
    write_item(root, "huge", image=jpeg_bytes(seed=1), meta=huge)
    sku = metadata_json(2)
    next(iter(sku["BIN_FCSKU_DATA"].values()))["quantity"] = 10_001
    write_item(root, "sku", image=jpeg_bytes(seed=2), meta=sku)
    full = metadata_json(10_000)
    write_item(root, "full", image=jpeg_bytes(seed=3), meta=full)
    df = build_manifest(root, workers=1, progress=False).set_index("image_id")
    assert df.loc["huge", "status"] == "bad_metadata"
    assert df.loc["huge", "reason"] == ("EXPECTED_QUANTITY of 1,000,000,000,000 is not plausible: "
                                        "more than 10,000 items in one bin")
    assert df.loc["sku", "status"] == "bad_metadata" and "10,001 is not plausible" in df.loc["sku", "reason"]
    assert df.loc["full", "status"] == "ok" and df.loc["full", "label"] == 10_000

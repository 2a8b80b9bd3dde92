import json

import pytest

from binventory import BinventoryError
from binventory.data.abid import (BinRecord, SkuRecord, check_image_id, parse_metadata,
                                  read_id_list, read_metadata, record_to_json, subset_ids)
from tests.conftest import metadata_json


def test_metadata_roundtrip(tmp_path):
    record = BinRecord("00523", 3, [SkuRecord("B001", "mug", 2, 4.0, 3.0, 5.0, 0.7),
                                    SkuRecord("B002", "book", 1)])
    path = tmp_path / "00523.json"
    path.write_text(json.dumps(record_to_json(record)))
    back = read_metadata(path)
    assert back.image_id == "00523" and back.expected_quantity == 3 and back.sku_quantity_sum == 3
    assert back.skus[0] == record.skus[0] and back.skus[1].length is None


@pytest.mark.parametrize("data, reason", [
    ([], "not a JSON object"),
    ({}, "EXPECTED_QUANTITY is missing"),
    ({"EXPECTED_QUANTITY": "3"}, "not a non-negative integer"),
    ({"EXPECTED_QUANTITY": True}, "not a non-negative integer"),
    ({"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": []}, "not an object"),
    ({"EXPECTED_QUANTITY": 1, "BIN_FCSKU_DATA": {"B1": {"quantity": -2}}}, "quantity of SKU"),
])
def test_malformed_metadata_reasons(data, reason):
    with pytest.raises(ValueError, match=reason):
        parse_metadata(data, "x")


def test_label_is_expected_quantity_even_when_skus_disagree():
    data = metadata_json(3, n_skus=2)
    data["EXPECTED_QUANTITY"] = 4
    record = parse_metadata(data, "x")
    assert record.expected_quantity == 4 and record.sku_quantity_sum == 3


def test_bad_json_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="UTF-8"):
        read_metadata(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_metadata(path)


def test_ids_are_strings_and_checked():
    assert check_image_id(" 00523 ") == "00523" != check_image_id("523")
    for bad in ["../etc/passwd", "", "a/b", ".hidden"]:
        with pytest.raises(BinventoryError):
            check_image_id(bad)


def test_id_lists(tmp_path):
    (tmp_path / "ids.txt").write_text("00523\n523  # same number, other image\n\nmetadata/00001.json\n523\n")
    assert read_id_list(tmp_path / "ids.txt") == ["00523", "523", "00001"]
    (tmp_path / "ids.json").write_text(json.dumps(["7", "007"]))
    assert read_id_list(tmp_path / "ids.json") == ["7", "007"]
    with pytest.raises(BinventoryError, match="not found"):
        read_id_list(tmp_path / "none.txt")


def test_subset_ids_interleave_counts():
    data = {"1": ["data/metadata/a.json", "data/metadata/b.json", "data/metadata/c.json"],
            "2": ["data/metadata/d.json"], "3": ["data/metadata/e.json", "data/metadata/f.json"]}
    assert list(subset_ids(data).items()) == [("a", 1), ("d", 2), ("e", 3), ("b", 1), ("f", 3),
                                              ("c", 1)]
    with pytest.raises(BinventoryError):
        subset_ids({"one": []})

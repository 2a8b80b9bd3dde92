import pandas as pd
import pytest

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.manifest import build_manifest, read_manifest, write_manifest
from binventory.data.split import assign_splits, protocol_mask, stratified_assign


def _frame(labels: dict[str, int], status: str = "ok") -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(labels), "label": pd.array(list(labels.values()), "Int64"),
                         "status": status})


def test_stratified_split_is_deterministic_and_order_free():
    labels = {f"{i:05d}": i % 6 for i in range(600)}
    df = _frame(labels)
    a = assign_splits(df, protocol="challenge", seed=7)
    b = assign_splits(df.sample(frac=1, random_state=1), protocol="challenge", seed=7)
    assert dict(zip(a.image_id, a.split)) == dict(zip(b.image_id, b.split))
    c = assign_splits(df, protocol="challenge", seed=8)
    assert dict(zip(a.image_id, a.split)) != dict(zip(c.image_id, c.split))


def test_split_is_stratified_by_count():
    labels = {f"{i:05d}": i % 6 for i in range(600)}  # 100 of each count
    df = assign_splits(_frame(labels), protocol="challenge", seed=0, ratios=(0.8, 0.1, 0.1))
    table = pd.crosstab(df.label, df.split)
    assert (table["train"] == 80).all() and (table["val"] == 10).all() and (table["test"] == 10).all()


def test_small_strata_still_add_up():
    ids = [f"x{i}" for i in range(7)]
    out = stratified_assign(ids, [3] * 7, (0.8, 0.1, 0.1), seed=0)
    assert len(out) == 7 and list(out.values()).count("train") == 6


def test_protocols_select_counts_and_exclude_invalid():
    labels = {f"{i:03d}": i % 9 for i in range(90)}
    df = _frame(labels)
    df.loc[0, "status"] = "truncated"  # label 0, invalid
    df.loc[1, "label"] = pd.NA
    df.loc[1, "status"] = "bad_metadata"
    assert set(df[protocol_mask(df, "udacity")].label) == {1, 2, 3, 4, 5}
    assert set(df[protocol_mask(df, "challenge")].label) == {0, 1, 2, 3, 4, 5}
    assert set(df[protocol_mask(df, "all")].label) == set(range(9))
    out = assign_splits(df, protocol="udacity", seed=0)
    assert (out[out.label == 0].split == "excluded").all()
    assert (out[out.label > 5].split == "excluded").all()
    assert out.loc[1, "split"] == "excluded"
    assert (out[out.label.between(1, 5)].split != "excluded").all()


def test_bad_arguments():
    df = _frame({"a": 1, "b": 2})
    with pytest.raises(BinventoryError, match="ratios"):
        assign_splits(df, ratios=(0.5, 0.5, 0.5))
    with pytest.raises(BinventoryError, match="protocol"):
        assign_splits(df, protocol="nope")
    with pytest.raises(BinventoryError, match="no valid images"):
        assign_splits(_frame({"a": 9}), protocol="udacity")


def test_split_from_lists_carves_val(tmp_path):
    labels = {f"{i:04d}": i % 6 for i in range(300)}
    (tmp_path / "dev.txt").write_text("\n".join(list(labels)[:250]) + "\nmissing-id\n")
    (tmp_path / "test.txt").write_text("# test ids\n" + "\n".join(list(labels)[250:]))
    df = assign_splits(_frame(labels), protocol="challenge", seed=0, val_fraction=0.2,
                       lists={"train": tmp_path / "dev.txt", "test": tmp_path / "test.txt"})
    by_id = dict(zip(df.image_id, df.split))
    assert all(by_id[i] == "test" for i in list(labels)[250:])
    dev = [by_id[i] for i in list(labels)[:250]]
    assert dev.count("val") == pytest.approx(50, abs=3) and dev.count("train") + dev.count("val") == 250


def test_list_conflict_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("x\ny\n")
    (tmp_path / "b.txt").write_text("y\n")
    with pytest.raises(BinventoryError, match="both"):
        assign_splits(_frame({"x": 1, "y": 2}), lists={"train": tmp_path / "a.txt",
                                                      "test": tmp_path / "b.txt"})


def test_cli_split_rewrites_manifest(good_dataset, capsys):
    root, labels = good_dataset
    path = root / "manifest.parquet"
    write_manifest(build_manifest(root, workers=1, progress=False), path, root)
    assert main(["data", "split", str(path), "--protocol", "udacity", "--seed", "3"]) == 0
    df, meta = read_manifest(path)
    assert meta["split_protocol"] == "udacity" and meta["split_seed"] == "3"
    assert set(df.split) == {"train", "val", "test", "excluded"}
    assert (df[df.label == 0].split == "excluded").all()
    assert "train" in capsys.readouterr().out
    assert main(["data", "split", str(path), "--list", "bogus=x.txt"]) == 2


@pytest.mark.abid
def test_real_sample_lists(abid_sample, tmp_path):
    df = build_manifest(abid_sample, progress=False)
    splits = abid_sample / "splits"
    df = assign_splits(df, protocol="challenge", lists={"train": splits / "dev.txt",
                                                       "test": splits / "public_test.txt"})
    counts = df.split.value_counts()
    assert counts["train"] + counts["val"] == 4739 and counts["test"] == 704

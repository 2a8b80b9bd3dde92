"""What a model was trained on: synthetic bins are told from real photos by the generator's
marker, and the count goes into the artifact at train time."""
from __future__ import annotations

from binventory.data import synth
from binventory.data.manifest import build_manifest
from binventory.data.merge import merge_manifests
from binventory.data.provenance import (MARKER, describe_training_data, summarize_training_data,
                                        training_data_warning)
from binventory.data.split import assign_splits
from tests.conftest import write_item
from tests.tiny import image_bytes


def _manifest(root, tmp_path):
    from binventory.data.manifest import write_manifest

    df = assign_splits(build_manifest(root, workers=1, progress=False), protocol="all", seed=0)
    path = tmp_path / f"{root.name}.parquet"
    write_manifest(df, path, root)
    return df, path


def test_synthetic_bins_are_told_from_real_photos(tmp_path):
    synth.generate(tmp_path / "synth", n=6, workers=1, progress=False)
    assert (tmp_path / "synth" / MARKER).is_file()
    for i in range(4):
        write_item(tmp_path / "real", f"{i:05d}", count=i, image=image_bytes(i))
    fake, fake_path = _manifest(tmp_path / "synth", tmp_path)
    real, real_path = _manifest(tmp_path / "real", tmp_path)

    drawn = summarize_training_data(fake, tmp_path / "synth")
    assert (drawn["kind"], drawn["images"], drawn["synthetic_images"]) == ("synthetic", 6, 6)
    assert sum(drawn["splits"].values()) == 6
    assert summarize_training_data(real, tmp_path / "real")["kind"] == "real"
    merged, common = merge_manifests([fake_path, real_path])
    both = summarize_training_data(merged, common)
    assert (both["kind"], both["images"], both["synthetic_images"]) == ("mixed", 10, 6)

    assert "synthetic bins only (6 drawn images" in training_data_warning(drawn)
    assert training_data_warning(both) is None and training_data_warning(None) is None
    assert describe_training_data(both).startswith("4 real photos and 6 synthetic bins (train ")
    assert "not recorded" in describe_training_data(None)

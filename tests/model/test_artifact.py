import pytest
import torch

from binventory import BinventoryError
from binventory.data.preprocess import Preprocess
from binventory.model.artifact import load_artifact, save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import create_model


def test_artifact_roundtrip(tmp_path):
    model = create_model("mobilenet_v2", 7, "none").eval()
    classes = CountClasses(0, 5, True)
    preprocess = Preprocess(image_size=32, resize="letterbox")
    path = save_artifact(tmp_path / "model.pt", model, classes=classes, preprocess=preprocess,
                         temperature=1.7, metrics={"val": {"accuracy": 0.5}},
                         train_config={"lr": 0.001}, manifest_hash="abc123", name="v1")
    loaded = load_artifact(path)
    assert loaded.classes == classes and loaded.preprocess == preprocess
    assert loaded.temperature == 1.7 and loaded.manifest_hash == "abc123" and loaded.name == "v1"
    assert loaded.metrics["val"]["accuracy"] == 0.5 and loaded.train_config == {"lr": 0.001}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) / 1.7).softmax(1)
    assert torch.allclose(loaded.predict_proba(x), expected, atol=1e-6)
    assert not list(tmp_path.glob(".*tmp"))


def _save(path, seed: int, **kwargs):
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", 7, "none").eval()
    return load_artifact(save_artifact(path, model, classes=CountClasses(0, 5, True),
                                       preprocess=Preprocess(image_size=32), **kwargs))


def test_lineage_round_trip_and_old_artifacts(tmp_path):
    data = [{"manifest": "base.parquet", "hash": "1234abcd", "images": 62, "labelled_until": None},
            {"manifest": "audits/manifest.parquet", "hash": "99ff", "images": 18,
             "labelled_until": "2026-11-30T08:00:00.000000+00:00"}]
    parent = _save(tmp_path / "parent.pt", 0)
    child = _save(tmp_path / "child.pt", 1, parent=parent.model_id, data=data)
    assert child.parent == parent.model_id and child.data == data
    assert parent.parent == "" and parent.data == []
    # Written before lineage was recorded: no parent, no data.
    payload = torch.load(tmp_path / "child.pt", weights_only=True)
    del payload["parent"], payload["data"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_artifact(tmp_path / "old.pt")
    assert (old.parent, old.data, old.model_id) == ("", [], child.model_id)


def test_every_artifact_has_its_own_id(tmp_path):
    # Same name, backbone, data and file name: only the weights differ (a retrained model).
    first = _save(tmp_path / "a" / "model.pt", 0, name="mobilenet_v2-abcd1234", manifest_hash="abcd")
    again = _save(tmp_path / "b" / "model.pt", 1, name="mobilenet_v2-abcd1234", manifest_hash="abcd")
    assert first.name == again.name == "mobilenet_v2-abcd1234"
    assert first.model_id != again.model_id
    assert first.model_id.startswith("mobilenet_v2-") and len(first.model_id) <= 128
    # The same weights saved twice in a row (a fine-tune that changed nothing): two models.
    same = [_save(tmp_path / f"s{i}" / "model.pt", 0) for i in range(2)]
    assert same[0].model_id != same[1].model_id
    # Saved without a name: still a unique id, and the backbone as the readable name.
    unnamed = [_save(tmp_path / f"u{i}" / "model.pt", i) for i in range(2)]
    assert unnamed[0].model_id != unnamed[1].model_id and unnamed[0].name == "mobilenet_v2"
    # The id is stored, not recomputed: loading twice gives the same one.
    assert load_artifact(tmp_path / "a" / "model.pt").model_id == first.model_id


def test_legacy_artifact_gets_an_id_from_its_weights(tmp_path):
    ids = []
    for seed in (0, 1):
        path = tmp_path / f"m{seed}.pt"
        _save(path, seed)
        payload = torch.load(path, weights_only=True)
        del payload["model_id"], payload["name"]
        payload["version"] = "mobilenet_v2-abcd1234"  # what every run on this data was called
        torch.save(payload, path)
        ids.append(load_artifact(path).model_id)
    assert ids[0] != ids[1] and all(i.startswith("mobilenet_v2-abcd1234-") for i in ids)
    assert load_artifact(tmp_path / "m0.pt").name == "mobilenet_v2-abcd1234"


@pytest.mark.slow
def test_artifact_loads_without_training_code():
    import subprocess
    import sys
    code = ("import sys, binventory.model.artifact; "
            "assert not any(m.startswith('binventory.training') for m in sys.modules), 'training imported'")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_bad_artifacts(tmp_path):
    with pytest.raises(BinventoryError, match="not found"):
        load_artifact(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(BinventoryError, match="not a binventory model artifact: PyTorch cannot read"):
        load_artifact(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(BinventoryError, match="not a binventory model"):
        load_artifact(tmp_path / "other.pt")

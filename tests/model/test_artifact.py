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
                         train_config={"lr": 0.001}, manifest_hash="abc123", version="v1")
    loaded = load_artifact(path)
    assert loaded.classes == classes and loaded.preprocess == preprocess
    assert loaded.temperature == 1.7 and loaded.manifest_hash == "abc123" and loaded.version == "v1"
    assert loaded.metrics["val"]["accuracy"] == 0.5 and loaded.train_config == {"lr": 0.001}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) / 1.7).softmax(1)
    assert torch.allclose(loaded.predict_proba(x), expected, atol=1e-6)
    assert not list(tmp_path.glob(".*tmp"))


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
    with pytest.raises(BinventoryError, match="not a readable"):
        load_artifact(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(BinventoryError, match="not a binventory model"):
        load_artifact(tmp_path / "other.pt")

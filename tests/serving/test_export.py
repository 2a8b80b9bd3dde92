"""ONNX export: parity with torch, dynamic batch, metadata, int8, and both Predictor backends."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.manifest import build_manifest, write_manifest
from binventory.data.preprocess import Preprocess
from binventory.data.split import assign_splits
from binventory.files import sha256_file
from binventory.model.artifact import load_artifact, save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import create_model
from binventory.serving import export as export_mod
from binventory.serving.export import (PARITY_TOL, ensure_onnx, export_model, onnx_session,
                                       read_metadata, run_session, sample_images)
from binventory.serving.predictor import InferenceModule, Predictor
from tests.conftest import jpeg_bytes

SIZE = 32
# What a fine-tuned model says of where it came from (train --init-from).
LINEAGE = {"parent": "tiny-v0-20261130T000000Z-0123456789",
           "data": [{"manifest": "audits/manifest.parquet", "hash": "abc", "images": 12,
                     "labelled_until": "2026-11-30T08:00:00.000000+00:00"}]}


def tiny_artifact(path: Path, seed: int = 0, name: str = "tiny-v1") -> Path:
    """An untrained mobilenet_v2 at 32 px whose BatchNorm statistics come from a few batches,
    so activations (and probabilities) look like a trained net's rather than degenerate."""
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", 7, weights="none")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, SIZE, SIZE))
    model.eval()
    return save_artifact(path, model, classes=CountClasses(), preprocess=Preprocess(image_size=SIZE),
                         temperature=1.7, name=name, **LINEAGE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An artifact exported to fp32 and int8 ONNX, once for the whole module."""
    model = tiny_artifact(tmp_path_factory.mktemp("export") / "model.pt")
    calibration = sample_images(Preprocess(image_size=SIZE), n=8, seed=1)
    result = export_model(model, quantize=True, calibration=calibration)
    return model, result


def _torch_probs(model_path: Path, images: np.ndarray) -> np.ndarray:
    counting = Predictor.load(model_path).counting
    module = InferenceModule(counting.model, counting.preprocess, counting.temperature).eval()
    with torch.inference_mode():
        return module(torch.from_numpy(images)).numpy()


def test_parity_on_real_looking_images(exported):
    model, result = exported
    assert result.path == model.with_suffix(".onnx") and result.path.is_file()
    assert result.parity < PARITY_TOL
    images = sample_images(Preprocess(image_size=SIZE), n=6, seed=7)  # not the export's own
    got = run_session(onnx_session(result.path, threads=1), images)
    expected = _torch_probs(model, images)
    assert np.abs(got - expected).max() < PARITY_TOL
    assert expected.std() > 1e-3  # the check means something: outputs vary between images


@pytest.mark.abid
def test_parity_on_real_abid_images(exported, abid_sample):
    model, result = exported
    files = sorted((abid_sample / "bin-images").glob("*.jpg"))[:8]
    images = np.stack([Preprocess(image_size=SIZE).load(f) for f in files])
    got = run_session(onnx_session(result.path, threads=1), images)
    assert np.abs(got - _torch_probs(model, images)).max() < PARITY_TOL


def test_dynamic_batch(exported):
    _, result = exported
    session = onnx_session(result.path, threads=1)
    assert session.get_inputs()[0].name == "images" and session.get_outputs()[0].name == "probabilities"
    images = sample_images(Preprocess(image_size=SIZE), n=5, seed=3)
    one = session.run(None, {"images": images[:1]})[0]
    five = session.run(None, {"images": images})[0]
    assert one.shape == (1, 7) and five.shape == (5, 7)
    np.testing.assert_allclose(five.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one[0], five[0], atol=1e-5)  # batch size does not change answers


def test_metadata(exported):
    model, result = exported
    meta = read_metadata(result.path)
    assert meta["model_version"] == load_artifact(model).model_id and meta["model_name"] == "tiny-v1"
    assert json.loads(meta["classes"]) == ["0", "1", "2", "3", "4", "5", "6+"]
    assert Preprocess.from_dict(json.loads(meta["preprocess"])) == Preprocess(image_size=SIZE)
    assert float(meta["temperature"]) == pytest.approx(1.7)
    assert meta["source_sha256"] == sha256_file(model)
    assert meta["parent"] == LINEAGE["parent"] and json.loads(meta["data"]) == LINEAGE["data"]


def test_int8_export_runs_and_is_close(exported):
    _, result = exported
    assert result.int8_path == result.path.with_suffix(".int8.onnx") and result.int8_path.is_file()
    assert "int8" in read_metadata(result.int8_path)["quantization"]
    images = sample_images(Preprocess(image_size=SIZE), n=6, seed=9)
    fp32 = run_session(onnx_session(result.path, threads=1), images)
    int8 = run_session(onnx_session(result.int8_path, threads=1), images)
    assert int8.shape == fp32.shape
    assert np.abs(int8 - fp32).max() < 0.25  # loose: an untrained net at 32 px is a harsh case
    # The reported figures are those of the export's own check images (its default ones here).
    check = sample_images(Preprocess(image_size=SIZE))
    fp32 = run_session(onnx_session(result.path, threads=1), check)
    int8 = run_session(onnx_session(result.int8_path, threads=1), check)
    assert result.int8_diff == pytest.approx(np.abs(int8 - fp32).max(), abs=1e-6)
    assert result.int8_agreement == pytest.approx((int8.argmax(1) == fp32.argmax(1)).mean())


def test_predictor_backends_agree(exported):
    model, _ = exported
    images = [jpeg_bytes((60, 45), seed=s) for s in range(4)]
    by_torch = Predictor.load(model, backend="torch", threads=1).predict(images)
    by_onnx = Predictor.load(model, backend="onnx", threads=1).predict(images)
    for a, b in zip(by_torch, by_onnx):
        assert (a.count, a.label, a.model_version) == (b.count, b.label, b.model_version)
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < PARITY_TOL


def test_missing_onnx_is_exported_or_named(tmp_path):
    with pytest.raises(BinventoryError, match="binventory export"):
        onnx_session(tmp_path / "model.onnx")
    model = tiny_artifact(tmp_path / "m.pt")
    with pytest.raises(BinventoryError, match="binventory export"):  # a named file is never made
        Predictor.load(model, backend="onnx", onnx_path=tmp_path / "other.onnx")
    predictor = Predictor.load(model, backend="onnx", threads=1)  # beside the artifact: exported
    assert (tmp_path / "m.onnx").is_file() and predictor.backend == "onnx"


def test_ensure_onnx_reexports_a_stale_file(exported, tmp_path):
    model, result = exported
    assert ensure_onnx(model) == (result.path, False)
    other = tmp_path / "model.pt"
    tiny_artifact(other, seed=1)
    other.with_suffix(".onnx").write_bytes(result.path.read_bytes())  # exported from `model`
    path, exported_now = ensure_onnx(other)
    assert exported_now and read_metadata(path)["source_sha256"] == sha256_file(other)


def test_parity_failure_refuses_to_write(tmp_path, monkeypatch):
    model = tiny_artifact(tmp_path / "model.pt")
    monkeypatch.setattr(export_mod, "PARITY_TOL", -1.0)
    with pytest.raises(BinventoryError, match="differs from torch"):
        export_model(model, check_images=sample_images(Preprocess(image_size=SIZE), n=2))
    assert not model.with_suffix(".onnx").exists()
    assert not list(tmp_path.glob(".*.tmp"))


# ---- CLI ---------------------------------------------------------------------------------------

def test_export_help_shows_defaults_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--quantize" in out and "default: 17" in out and "examples:" in out


def test_export_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and "Traceback" not in err


def test_export_cli_with_quantize_and_manifest(good_dataset, tmp_path, capsys):
    root, _ = good_dataset
    manifest = tmp_path / "manifest.parquet"
    df = assign_splits(build_manifest(root, progress=False), protocol="all", ratios=(0.6, 0.1, 0.3))
    write_manifest(df, manifest, root)
    model = tiny_artifact(tmp_path / "model.pt")
    assert main(["export", "--model", str(model), "--quantize", "--manifest", str(manifest),
                 "--calibration-images", "8"]) == 0
    out = capsys.readouterr().out
    assert "max probability difference to torch" in out
    assert "model.int8.onnx" in out and "test split (" in out and "accuracy fp32" in out
    assert model.with_suffix(".onnx").is_file() and model.with_suffix(".int8.onnx").is_file()

"""A head over 0..15 plus "16+" through ONNX export and both Predictor backends, and what
`binventory predict` writes for it (the export parity test's tolerance)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from binventory.cli import main
from binventory.data.preprocess import Preprocess
from binventory.model.artifact import load_artifact
from binventory.model.classes import CountClasses
from binventory.serving.export import (PARITY_TOL, export_model, onnx_session, read_metadata,
                                       run_session, sample_images)
from binventory.serving.predictor import Predictor
from tests.serving.test_export import _torch_probs
from tests.tiny import image_bytes, save_tiny_model

K15 = CountClasses(0, 15, True)
NAMES = [str(c) for c in range(16)] + ["16+"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = save_tiny_model(tmp_path_factory.mktemp("k15") / "model.pt", name="k15-v1",
                            classes=K15)
    return model, export_model(model)


def test_artifact_keeps_its_17_classes(exported):
    model, _ = exported
    counting = load_artifact(model)
    assert counting.classes == K15 and counting.classes.names == NAMES


def test_onnx_parity_and_metadata(exported):
    model, result = exported
    assert result.parity < PARITY_TOL
    assert json.loads(read_metadata(result.path)["classes"]) == NAMES
    images = sample_images(Preprocess(image_size=32), n=6, seed=7)
    got = run_session(onnx_session(result.path, threads=1), images)
    expected = _torch_probs(model, images)
    assert got.shape == (6, 17)
    assert np.abs(got - expected).max() < PARITY_TOL
    assert expected.std() > 1e-3  # outputs vary between images: the check means something


def test_backends_report_the_same_classes(exported):
    model, _ = exported
    photos = [image_bytes(s) for s in range(6)]
    by_torch = Predictor.load(model, backend="torch", threads=1).predict(photos)
    by_onnx = Predictor.load(model, backend="onnx", threads=1).predict(photos)
    for a, b in zip(by_torch, by_onnx):
        assert list(a.probabilities) == NAMES == list(b.probabilities)
        assert (a.count, a.label) == (b.count, b.label)
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in NAMES) < PARITY_TOL


@pytest.mark.parametrize("favour,count,label", [(12, 12, "12"), (16, 16, "16+")])
def test_predict_reports_counts_past_5(tmp_path, capsys, favour, count, label):
    """What a user of `binventory predict` reads: the count up to 15, and "16+" as count 16."""
    model = save_tiny_model(tmp_path / "model.pt", classes=K15, favour=favour)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"bin{i}.jpg").write_bytes(image_bytes(i))
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.parquet"
        assert main(["predict", "--model", str(model), "--input", str(photos), "--out", str(out),
                     "--backend", backend, "--workers", "1", "--threads", "1"]) == 0
        df = pd.read_parquet(out)
        assert [c for c in df.columns if c.startswith("p_")] == [f"p_{n}" for n in NAMES]
        assert df["count"].tolist() == [count] * 3 and df["label"].tolist() == [label] * 3
        assert (df[f"p_{label}"] > 0.99).all()

"""Test-time augmentation (``train --tta``): a TTA model counts a bin photo the same whichever
way up it is, through the artifact, its ONNX export and a fine-tune started from it."""
from __future__ import annotations

import numpy as np
import torch

from binventory.data.preprocess import Preprocess
from binventory.model.artifact import load_artifact, save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import FlipAverage, create_model, with_tta
from binventory.serving.export import export_model, onnx_session, read_metadata, run_session
from binventory.serving.predictor import Predictor

SIZE = 32


def _model(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", 7, weights="none")
    for m in model.modules():  # BatchNorm statistics of a few batches (cumulative averages), so
        if isinstance(m, torch.nn.BatchNorm2d):  # outputs vary between images like a trained net's
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, SIZE, SIZE))
    return model.eval()


def _flips(x: torch.Tensor) -> list[torch.Tensor]:
    return [x, x.flip(3), x.flip(2), x.flip((2, 3))]


def test_a_tta_model_counts_an_image_and_its_mirrors_the_same():
    plain = _model()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        plain_out = [plain(v) for v in _flips(x)]
        tta_out = [with_tta(plain)(v) for v in _flips(x)]
    assert (plain_out[0] - plain_out[1]).abs().max() > 1e-3  # the plain net is not flip-invariant
    for out in tta_out[1:]:
        torch.testing.assert_close(out, tta_out[0], atol=1e-5, rtol=1e-4)
    # and TTA averages the views rather than, say, keeping one of them
    torch.testing.assert_close(tta_out[0], torch.stack(plain_out).mean(0), atol=1e-5, rtol=1e-4)


def test_tta_survives_the_artifact_and_onnx(tmp_path):
    plain = _model()
    path = save_artifact(tmp_path / "model.pt", with_tta(plain), classes=CountClasses(),
                         preprocess=Preprocess(image_size=SIZE), temperature=1.3)
    counting = load_artifact(path)
    assert counting.spec.tta and isinstance(counting.model, FlipAverage)
    # the stored weights are the network's own, so an artifact without TTA has the same keys
    assert set(torch.load(path, weights_only=True)["state_dict"]) == set(plain.state_dict())
    result = export_model(path)
    assert read_metadata(result.path)["tta"] == "true"
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    session = onnx_session(result.path, threads=1)
    np.testing.assert_allclose(run_session(session, mirrored), run_session(session, images), atol=1e-5)
    np.testing.assert_allclose(run_session(session, images),
                               Predictor.load(path).predict_arrays(images), atol=1e-4)
    assert load_artifact(save_artifact(tmp_path / "plain.pt", plain, classes=CountClasses(),
                                       preprocess=Preprocess(image_size=SIZE))).spec.tta is False

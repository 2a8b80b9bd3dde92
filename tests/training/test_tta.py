"""``train --tta``: the saved model counts with flips averaged, its validation figures and
temperature are those of the TTA model, and a fine-tune can start from it."""
import json

import numpy as np
import torch
import pytest

from binventory.cli import main
from binventory.data.manifest import split_rows
from binventory.model.artifact import load_artifact
from binventory.model.factory import FlipAverage
from binventory.serving.predictor import Predictor
from tests.training.conftest import TINY


@pytest.mark.slow
def test_train_with_tta_then_fine_tune_without(tiny_manifest, tmp_path, capsys):
    out = tmp_path / "tta"
    assert main(["train", "--manifest", str(tiny_manifest), "--output", str(out), "--epochs", "1",
                 "--tta", *TINY]) == 0
    counting = load_artifact(out / "model.pt")
    assert counting.spec.tta and isinstance(counting.model, FlipAverage)
    assert json.loads((out / "metrics.json").read_text())["test"]["challenge"]["n"] > 0
    root, rows = split_rows(tiny_manifest, "test")
    predictor = Predictor.load(out / "model.pt")
    images = predictor.preprocess.load_many([root / p for p in rows.image_path[:4]])
    np.testing.assert_allclose(predictor.predict_arrays(np.ascontiguousarray(images[:, ::-1])),
                               predictor.predict_arrays(images), atol=1e-5)
    # A fine-tune starts from the TTA model's weights; without --tta its child counts once.
    child = tmp_path / "child"
    assert main(["train", "--manifest", str(tiny_manifest), "--output", str(child), "--epochs", "1",
                 "--init-from", str(out / "model.pt"), "--image-size", "32", "--batch-size", "8",
                 "--workers", "0", "--no-progress", "--cache-dir", ""]) == 0
    grandchild = load_artifact(child / "model.pt")
    assert grandchild.parent == counting.model_id and not grandchild.spec.tta


@pytest.mark.slow
def test_epochs_0_adds_tta_to_a_trained_model_without_changing_its_weights(tiny_manifest, tmp_path):
    parent = tmp_path / "parent"
    assert main(["train", "--manifest", str(tiny_manifest), "--output", str(parent), "--epochs", "1",
                 *TINY]) == 0
    out = tmp_path / "with-tta"
    assert main(["train", "--manifest", str(tiny_manifest), "--output", str(out), "--epochs", "0",
                 "--init-from", str(parent / "model.pt"), "--tta", "--image-size", "32",
                 "--workers", "0", "--no-progress", "--cache-dir", ""]) == 0
    before, after = load_artifact(parent / "model.pt"), load_artifact(out / "model.pt")
    assert after.spec.tta and after.parent == before.model_id
    for key, value in before.model.state_dict().items():
        assert torch.equal(after.model.net.state_dict()[key], value), key
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == 0


def test_epochs_0_without_a_model_to_start_from_is_refused(tiny_manifest, tmp_path, capsys):
    assert main(["train", "--manifest", str(tiny_manifest), "--output", str(tmp_path / "x"),
                 "--epochs", "0", *TINY]) != 0
    assert "--init-from" in capsys.readouterr().err

"""A head over 0..15 plus "16+": artifact, ONNX export, verifier and the 6-15 metrics."""
import numpy as np
import torch

from binventory.data.preprocess import Preprocess
from binventory.inventory.verify import expected_abs_error, p_expected
from binventory.model.artifact import load_artifact, save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import create_model
from binventory.model.metrics import evaluate_logits, evaluate_many
from binventory.serving.export import export_onnx
from binventory.serving.predictor import Predictor
from tests.tiny import image_bytes

K15 = CountClasses(0, 15, True)


def test_head_round_trips_through_artifact_onnx_and_verifier(tmp_path):
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", K15.num_classes, "none")
    model.train()
    with torch.no_grad():  # batch-norm statistics from a few batches: image-dependent outputs
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32))
    model.eval()
    path = save_artifact(tmp_path / "model.pt", model, classes=K15, preprocess=Preprocess(image_size=32))
    counting = load_artifact(path)
    assert counting.classes == K15 and counting.classes.names[-1] == "16+"
    assert counting.classes.num_classes == 17
    export_onnx(path)  # refuses to write a graph that disagrees with torch
    photos = [image_bytes(i) for i in range(6)]
    by_torch = Predictor.load(path, backend="torch").predict(photos)
    by_onnx = Predictor.load(path, backend="onnx").predict(photos)
    for a, b in zip(by_torch, by_onnx):
        assert a.label == b.label and len(a.probabilities) == 17
        assert np.allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-4)
    # The verifier weighs a record of 12 items by the photo's P(12), and one of 20 by P(16+).
    probs = np.array([list(p.probabilities.values()) for p in by_torch])
    assert np.allclose(p_expected(probs, K15, [12] * 6), probs[:, 12])
    assert np.allclose(p_expected(probs, K15, [20] * 6), probs[:, 16])
    # A bin that shows 2 where 12 are expected is ~10 items off.
    two = np.zeros((1, 17))
    two[0, 2] = 1.0
    assert expected_abs_error(two, K15, [12])[0] == 10


def test_many_items_metrics_use_the_whole_head():
    counts = torch.tensor([0, 3, 6, 8, 12, 15, 20])
    logits = torch.full((7, 17), -5.0)
    for i, c in enumerate([0, 3, 6, 9, 12, 3, 16]):  # 6 and 12 right, 8 -> 9, 15 -> 3
        logits[i, c] = 5.0
    many = evaluate_many(logits, counts, K15)
    assert many["n"] == 4 and many["accuracy"] == 0.5 and many["within1"] == 0.75
    assert many["per_class_accuracy"]["12"] == 1.0 and many["per_class_accuracy"]["8"] == 0.0
    # The 0-5 protocol still judges only the exact classes 0..5.
    challenge = evaluate_logits(logits, counts, K15, protocol=(0, 5))
    assert challenge["n"] == 2 and challenge["class_names"] == ["0", "1", "2", "3", "4", "5"]
    assert evaluate_many(logits[:, :7], counts, CountClasses(0, 5, True)) is None

import numpy as np
import pytest
import torch

from binventory.model.classes import CountClasses
from binventory.model.losses import CountingLoss
from binventory.model.metrics import (count_metrics, evaluate_logits,
                                      expected_calibration_error, fit_temperature)


def test_count_metrics_match_hand_computed_values():
    # classes 0, 1, 2; four images with true classes 0, 1, 2, 2
    probs = np.array([[0.8, 0.1, 0.1],    # predicts 0, right, confidence 0.8
                      [0.6, 0.3, 0.1],    # predicts 0, wrong by 1, confidence 0.6
                      [0.1, 0.2, 0.7],    # predicts 2, right, confidence 0.7
                      [0.9, 0.05, 0.05]])  # predicts 0, wrong by 2, confidence 0.9
    targets = np.array([0, 1, 2, 2])
    m = count_metrics(probs, targets, np.array([0.0, 1.0, 2.0]))
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(np.sqrt((0 + 1 + 0 + 4) / 4))
    assert m["mae"] == pytest.approx(0.75)
    assert m["within1"] == pytest.approx(0.75)
    assert m["confusion"] == [[1, 0, 0], [1, 0, 0], [1, 0, 1]]
    assert m["per_class_accuracy"] == {"0": 1.0, "1": 0.0, "2": 0.5}
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.8, 0.3, 0.7, 0.05])))
    # ECE with 15 bins: each image alone in its bin -> mean |correct - confidence|
    assert m["ece"] == pytest.approx((0.2 + 0.6 + 0.3 + 0.9) / 4)


def test_ece_is_zero_when_calibrated():
    probs = np.array([[0.5, 0.5]] * 4)
    assert expected_calibration_error(probs, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_temperature_scaling_recovers_overconfidence():
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 5)
    targets = torch.distributions.Categorical(logits=true_logits).sample()
    t = fit_temperature(true_logits * 3.0, targets)  # 3x overconfident
    assert t == pytest.approx(3.0, rel=0.1)


def test_protocol_restriction():
    classes = CountClasses(0, 5, overflow=True)  # 0..5 and 6+
    logits = torch.full((3, 7), -5.0)
    logits[0, 6] = 5.0   # count 5 image: top class overflow, second 5
    logits[0, 5] = 4.0
    logits[1, 0] = 5.0   # count 0 image, predicted 0
    logits[2, 6] = 5.0   # count 9 image (outside 0-5)
    counts = torch.tensor([5, 0, 9])
    all_ = evaluate_logits(logits, counts, classes)
    assert all_["n"] == 3 and all_["accuracy"] == pytest.approx(2 / 3)
    challenge = evaluate_logits(logits, counts, classes, protocol=(0, 5))
    assert challenge["n"] == 2 and challenge["accuracy"] == 1.0 and len(challenge["class_names"]) == 6
    udacity = evaluate_logits(logits, counts, classes, protocol=(1, 5))
    assert udacity["n"] == 1 and udacity["class_names"] == ["1", "2", "3", "4", "5"]


def test_classes_map_counts():
    classes = CountClasses(0, 5, overflow=True)
    assert classes.num_classes == 7 and classes.names[-1] == "6+"
    assert classes.to_class(torch.tensor([0, 5, 6, 88])).tolist() == [0, 5, 6, 6]
    udacity = CountClasses.for_protocol("udacity", overflow=False)
    assert udacity.num_classes == 5 and udacity.to_class(torch.tensor([1, 5])).tolist() == [0, 4]
    assert CountClasses.from_dict(classes.to_dict()) == classes


@pytest.mark.parametrize("kind", ["ce", "ordinal", "expected"])
def test_losses_prefer_near_misses_when_ordinal(kind):
    loss = CountingLoss(kind, CountClasses(0, 5, False), label_smoothing=0.0)
    target = torch.tensor([3])
    near = torch.full((1, 6), -4.0)
    near[0, 2] = 4.0   # predicts 2 for a 3
    far = torch.full((1, 6), -4.0)
    far[0, 0] = 4.0    # predicts 0 for a 3
    right = torch.full((1, 6), -4.0)
    right[0, 3] = 4.0
    assert loss(right, target) < loss(near, target)
    if kind == "ce":
        assert loss(near, target) == pytest.approx(loss(far, target).item())
    else:
        assert loss(near, target) < loss(far, target)

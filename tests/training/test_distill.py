"""``train --distill-from``: the student learns its teachers' distribution beside the labels."""
import json

import numpy as np
import pytest
import torch

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.manifest import split_rows
from binventory.data.preprocess import Preprocess
from binventory.model.artifact import load_artifact, save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import create_model, normalization
from binventory.model.losses import CountingLoss
from binventory.serving.predictor import Predictor
from binventory.training import distill, priors
from binventory.training.manifests import read_training_data
from tests.training.conftest import TINY


def make_teacher(path, favourite: int | None = None, seed: int = 0, classes=CountClasses()):
    """An untrained 32 px MobileNetV2 artifact; with ``favourite`` its head all but always says
    that count, whatever the image (a teacher that disagrees with the labels)."""
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", classes.num_classes, "none", 0.2).eval()
    if favourite is not None:
        shift = torch.zeros(classes.num_classes)
        shift[classes.to_class(torch.tensor([favourite]))] = 20.0
        priors.fold_into_head(model, shift)
    save_artifact(path, model, classes=classes,
                  preprocess=Preprocess(32, "stretch", *normalization("mobilenet_v2")),
                  temperature=1.5)
    return path


def test_loss_is_the_label_loss_at_weight_0_and_least_where_the_student_matches_at_weight_1():
    base = CountingLoss("ce", label_smoothing=0.0)
    logits, target = torch.randn(8, 7), torch.randint(0, 7, (8,))
    soft = torch.randn(8, 7).softmax(1)
    assert torch.equal(distill.DistillLoss(base, 0.0)(logits, target, soft), base(logits, target))
    only_soft = distill.DistillLoss(base, 1.0, temperature=2.0)
    matching = 2.0 * soft.log()  # softmax(matching / T) == soft
    assert only_soft(matching, target, soft).item() == pytest.approx(0.0, abs=1e-5)
    assert only_soft(logits, target, soft) > only_soft(matching, target, soft)
    with pytest.raises(BinventoryError, match="distill-weight"):
        distill.DistillLoss(base, 1.5)


def test_soft_targets_are_the_softened_mean_of_what_the_teachers_predict(tiny_manifest, tmp_path):
    teachers = [make_teacher(tmp_path / f"t{s}.pt", seed=s) for s in (1, 2)]
    data = read_training_data(str(tiny_manifest))
    loaded = distill.load_teachers(",".join(map(str, teachers)), CountClasses())
    soft = distill.soft_targets(loaded, data.rows, data.root, temperature=2.0, progress=False)
    # The same figures the serving side's calibrated probabilities give: log p * T_cal is a
    # teacher's logits up to a constant per image, which softmax ignores.
    root, rows = split_rows(tiny_manifest, "train")
    logits = []
    for path in teachers:
        predictor = Predictor.load(path)
        probs = predictor.predict_arrays(predictor.preprocess.load_many([root / p for p in rows.image_path]))
        logits.append(np.log(probs) * 1.5)
    expected = torch.from_numpy(np.mean(logits, axis=0) / 2.0).softmax(1)
    assert soft.shape == (len(rows), 7)
    torch.testing.assert_close(soft, expected.float(), atol=1e-4, rtol=1e-4)


def test_a_teacher_with_other_classes_is_refused(tmp_path):
    path = make_teacher(tmp_path / "t.pt")
    with pytest.raises(BinventoryError, match="--max-count"):
        distill.load_teachers(str(path), CountClasses(0, 15))


@pytest.mark.slow
def test_the_student_learns_the_teachers_counts_not_only_the_labels(tiny_manifest, tmp_path):
    teacher = make_teacher(tmp_path / "teacher.pt", favourite=3)
    common = ["train", "--manifest", str(tiny_manifest), "--epochs", "3", "--loss", "ce", *TINY]
    runs = {}
    for weight in ("0", "1"):
        out = tmp_path / f"student-{weight}"
        assert main([*common, "--output", str(out), "--distill-from", str(teacher),
                     "--distill-weight", weight]) == 0
        runs[weight] = out
    root, rows = split_rows(tiny_manifest, "train")
    said_3 = {}
    for weight, out in runs.items():
        predictor = Predictor.load(out / "model.pt")
        probs = predictor.predict_arrays(predictor.preprocess.load_many([root / p for p in rows.image_path]))
        said_3[weight] = float((probs.argmax(1) == 3).mean())
    # Labels alone: a sixth of the bins hold 3. The teacher alone: it says 3 for every bin.
    assert said_3["1"] > 0.9 > said_3["0"]
    metrics = json.loads((runs["1"] / "metrics.json").read_text())
    assert metrics["teachers"] == [load_artifact(teacher).model_id]


def test_train_refuses_a_teacher_with_other_classes(tiny_manifest, tmp_path, capsys):
    teacher = make_teacher(tmp_path / "teacher.pt")
    assert main(["train", "--manifest", str(tiny_manifest), "--output", str(tmp_path / "s"),
                 "--epochs", "1", "--max-count", "8", "--distill-from", str(teacher), *TINY]) != 0
    assert "--max-count" in capsys.readouterr().err

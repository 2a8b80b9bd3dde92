"""Prior correction for count-folder data whose count mix is not the recorded data's."""
import json

import pandas as pd
import pytest
import torch

from binventory.cli import main
from binventory.model.classes import CountClasses
from binventory.model.factory import create_model
from binventory.model.losses import CountingLoss
from binventory.training import priors
from tests.data.test_count_folders import make_tree
from tests.training.conftest import TINY

CLASSES = CountClasses(0, 5, True)


def frame(rows):
    return pd.DataFrame(rows, columns=["label", "split", "has_record"]).assign(status="ok")


def test_no_correction_when_every_row_has_a_record():
    df = frame([(c, "train", True) for c in [0, 1, 2, 3, 3]] + [(1, "val", True)])
    assert priors.prior_log_ratio(df, CLASSES) is None


def test_the_counts_a_count_folder_set_lacks_are_raised():
    recorded = [(c, "train", True) for c in [0, 1, 2, 3, 4, 5, 6] * 10]
    extra = [(c, "train", False) for c in [1] * 50 + [2, 4, 5] * 10]  # no 0, 3 or 6+
    ratio = priors.prior_log_ratio(frame(recorded + extra), CLASSES)
    assert ratio.shape == (7,)
    assert ratio[0] > 0 and ratio[3] > 0 and ratio[6] > 0 and ratio[1] < 0
    # Only recorded rows define the target: the shifted prior is the recorded rows' mix.
    train_prior = priors.class_prior([c for c, _, _ in recorded + extra], CLASSES)
    target = priors.class_prior([c for c, _, _ in recorded], CLASSES)
    assert torch.allclose((train_prior.log() + ratio.double()).exp(), target, atol=1e-6)
    assert priors.logit_shift(ratio, "none") is None and priors.loss_weights(ratio, "logit_adjust") is None


def test_fold_into_head_shifts_every_logit():
    model = create_model("mobilenet_v2", 7, "none").eval()
    x = torch.randn(2, 3, 32, 32)
    shift = torch.arange(7, dtype=torch.float32) / 10
    before = model(x)
    priors.fold_into_head(model, shift)
    assert torch.allclose(model(x), before + shift, atol=1e-5)


@pytest.mark.parametrize("kind", ["ce", "ordinal", "expected"])
def test_class_weights_weigh_each_image(kind):
    logits, target = torch.randn(4, 7), torch.tensor([0, 1, 1, 3])
    weights = torch.tensor([3.0, 0.5, 1, 2, 1, 1, 1])
    per_image = torch.stack([CountingLoss(kind, CLASSES, 0.0)(logits[i:i + 1], target[i:i + 1])
                             for i in range(4)])
    w = weights[target]
    weighted = CountingLoss(kind, CLASSES, 0.0, class_weights=weights)(logits, target)
    assert torch.allclose(weighted, (per_image * w).sum() / w.sum(), atol=1e-6)


def test_tempered_correction_takes_the_share_of_the_shift_validation_prefers():
    # True 0s sit 0.8 below class 1, true 1s 1.2 above class 0: a +2 shift on class 0 fixes the
    # 0s from half of it on and breaks the 1s from 0.6 of it on, so only 0.5 gets both right.
    raw = torch.tensor([[0.0, 0.8, -5.0]] * 10 + [[0.0, 1.2, -5.0]] * 10)
    targets = torch.tensor([0] * 10 + [1] * 10)
    shift = torch.tensor([2.0, 0.0, 0.0])
    assert priors.best_fraction(raw, targets, shift) == 0.5
    # A shift that only hurts is not applied at all.
    assert priors.best_fraction(raw, targets, torch.tensor([0.0, 5.0, 0.0])) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("correction", ["logit_adjust", "tempered"])
def test_training_on_merged_data_folds_the_correction_into_the_artifact(good_dataset, tmp_path,
                                                                        correction):
    from binventory.model.artifact import load_artifact
    root, _ = good_dataset
    make_tree(tmp_path / "extra" / "images", {f"9{i:02d}": 1 for i in range(30)})  # all ones
    m = tmp_path / "m"
    assert main(["data", "index", str(root), "--out", f"{m}-a.parquet", "--workers", "1"]) == 0
    assert main(["data", "split", f"{m}-a.parquet", "--protocol", "challenge"]) == 0
    assert main(["data", "index", str(tmp_path / "extra"), "--out", f"{m}-b.parquet", "--workers", "1"]) == 0
    assert main(["data", "split", f"{m}-b.parquet", "--protocol", "all", "--ratios", "1", "0", "0"]) == 0
    assert main(["data", "merge", f"{m}-a.parquet", f"{m}-b.parquet", "--out", f"{m}.parquet"]) == 0
    out = tmp_path / "run"
    assert main(["train", "--manifest", f"{m}.parquet", "--output", str(out), "--epochs", "1", *TINY,
                 "--prior-correction", correction]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prior_correction"] == correction and "val_without_correction" in metrics
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)["scored"]
    head_bias = [k for k in best if k.endswith("bias")][-1]
    shipped = load_artifact(out / "model.pt").model.state_dict()[head_bias.removeprefix("module.")]
    # The ones are over-represented in training: the shipped head lowers them against the rest.
    delta = shipped - best[head_bias]
    assert torch.allclose(delta, torch.tensor(metrics["prior_shift"]), atol=1e-5)
    if correction == "tempered":
        assert metrics["prior_fraction"] in priors.FRACTIONS
        return
    assert metrics["prior_fraction"] == 1.0
    assert delta[1] < 0 and delta[0] > 0 and delta[3] > 0

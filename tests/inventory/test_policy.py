"""The decision rule at its thresholds, priorities, policy files and the calibrate command."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from binventory import BinventoryError
from binventory.inventory import calibrate as cal
from binventory.inventory.policy import Decision, Policy
from binventory.inventory.verify import BlindVerifier, ItemRecord, RecordVerifier
from binventory.model.classes import CountClasses

C = CountClasses(0, 5, True)


def probs_with(p_e: float, e: int, rest_at: int) -> np.ndarray:
    """A row with P(count = e) = p_e and the rest of the mass on class ``rest_at``."""
    row = np.zeros(C.num_classes)
    row[min(e, 6)] = p_e
    row[rest_at] += 1 - p_e
    return row


def test_decide_at_the_thresholds():
    policy = Policy(BlindVerifier(), t_confirm=0.6, t_flag=0.2)
    probs = np.stack([probs_with(0.6, 2, 4), probs_with(0.2, 2, 4), probs_with(0.4, 2, 4),
                      probs_with(0.59999, 2, 4), probs_with(0.20001, 2, 4)])
    ds = policy.decide(probs, C, [2] * 5, [[ItemRecord(2)]] * 5)
    assert [d.action for d in ds] == ["confirm", "flag", "review", "review", "review"]
    assert all(isinstance(d, Decision) for d in ds)
    assert ds[0].score == pytest.approx(0.6) and ds[0].priority == 0.0
    # Most probable count and variance: the flagged bin looks like 4 items, 2 expected.
    assert (ds[1].predicted_count, ds[1].variance) == (4, 2)
    assert (ds[0].predicted_count, ds[0].variance) == (2, 0)


def test_priority_flags_above_reviews_and_larger_errors_first():
    policy = Policy(BlindVerifier(), t_confirm=0.9, t_flag=0.1)
    probs = np.stack([probs_with(0.05, 2, 3), probs_with(0.05, 2, 0), probs_with(0.5, 2, 6),
                      probs_with(0.5, 2, 3)])
    ds = policy.decide(probs, C, [2, 2, 2, 2], [[]] * 4)
    assert [d.action for d in ds] == ["flag", "flag", "review", "review"]
    assert min(ds[0].priority, ds[1].priority) > max(ds[2].priority, ds[3].priority)
    assert ds[1].priority > ds[0].priority   # off by 2 ranks above off by 1
    assert ds[2].priority > ds[3].priority   # "6+" (off by >= 4) above off by 1


def test_overflow_class_and_counts_beyond_it():
    policy = Policy(BlindVerifier(), t_confirm=0.8, t_flag=0.1)
    probs = np.stack([probs_with(0.9, 6, 0), probs_with(0.9, 6, 0)])
    ds = policy.decide(probs, C, [9, 3], [[ItemRecord(9)], [ItemRecord(3)]])
    assert ds[0].action == "confirm" and ds[0].predicted_count == 6 and ds[0].variance == -3
    assert ds[1].action == "flag" and ds[1].variance == 3
    no_overflow = CountClasses(0, 5, False)
    d = policy.decide(np.eye(6)[[5]], no_overflow, [7], [[]])[0]
    assert d.action == "flag" and d.score == 0.0


def test_decide_edge_cases():
    policy = Policy.default()
    assert policy.decide(np.zeros((0, 7)), C, [], []) == []
    with pytest.raises(BinventoryError, match="non-negative"):
        policy.decide(np.full((1, 7), 1 / 7), C, [-1], [[]])
    with pytest.raises(ValueError, match="records"):
        policy.decide(np.full((1, 7), 1 / 7), C, [1], [])


def test_default_policy_is_blind_and_conservative():
    p = Policy.default()
    assert isinstance(p.verifier, BlindVerifier) and p.model_version is None
    assert p.t_confirm >= 0.9 and p.t_flag <= 0.05 and p.stats["calibrated"] is False


def test_bad_thresholds_are_refused():
    with pytest.raises(BinventoryError, match="t_flag < t_confirm"):
        Policy(BlindVerifier(), t_confirm=0.3, t_flag=0.3)
    with pytest.raises(BinventoryError, match="t_flag"):
        Policy(BlindVerifier(), t_confirm=0.3, t_flag=-0.1)


def test_save_load_round_trip(tmp_path):
    from tests.inventory.test_verify import synthetic_sample

    s = synthetic_sample(n=150)
    policy, _ = cal.calibrate(s, verifier="record", n_wrong=3)
    assert isinstance(policy.verifier, RecordVerifier)
    path = policy.save(tmp_path / "sub" / "policy.json")
    data = json.loads(path.read_text())   # plain JSON
    assert data["verifier"]["kind"] == "record" and data["model_version"] == "synthetic"
    again = Policy.load(path)
    assert (again.t_confirm, again.t_flag, again.target_fcr) == (policy.t_confirm, policy.t_flag, 0.01)
    expected = list(s.expected[:30])
    a = policy.decide(s.probs[:30], C, expected, s.records[:30])
    b = again.decide(s.probs[:30], C, expected, s.records[:30])
    assert a == b
    Policy.default().save(tmp_path / "blind.json")
    assert isinstance(Policy.load(tmp_path / "blind.json").verifier, BlindVerifier)
    assert not list(tmp_path.rglob("*.tmp"))


def test_load_errors(tmp_path):
    with pytest.raises(BinventoryError, match="not found"):
        Policy.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BinventoryError, match="bad JSON"):
        Policy.load(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BinventoryError, match="not a binventory policy"):
        Policy.load(bad)
    bad.write_text(json.dumps({"format": "binventory-policy", "verifier": {"kind": "blind"}}))
    with pytest.raises(BinventoryError, match="bad policy"):
        Policy.load(bad)
    bad.write_bytes(b"\x80\x04\x95 pickle")
    with pytest.raises(BinventoryError):
        Policy.load(bad)


def _parser():
    from binventory.cli import HelpFormatter

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    cal.define_parser(sub.add_parser("calibrate", formatter_class=HelpFormatter))
    return parser


@pytest.fixture
def val_manifest(good_dataset):
    """The 62-image dataset with most images in val, the split calibrate reads."""
    from binventory.data.manifest import build_manifest, write_manifest
    from binventory.data.split import assign_splits

    root, labels = good_dataset
    path = root / "manifest.parquet"
    df = assign_splits(build_manifest(root, workers=1, progress=False), protocol="challenge",
                       seed=0, ratios=(0.2, 0.6, 0.2))
    write_manifest(df, path, root)
    return path, labels, sorted(df.image_id[df.split == "val"])


def test_load_sample_counts_the_split_with_the_model(val_manifest, tmp_path):
    from binventory.serving.predictor import Predictor
    from tests.tiny import save_tiny_model

    manifest, labels, val_ids = val_manifest
    model = save_tiny_model(tmp_path / "model.pt")
    sample = cal.load_sample(model, manifest, "val", batch_size=8, progress=False)
    assert sample.ids == val_ids and len(val_ids) >= cal.MIN_IMAGES
    assert list(sample.expected) == [labels[i] for i in val_ids]
    assert [sum(line.quantity for line in r) for r in sample.records] == list(sample.expected)
    predictor = Predictor.load(model)
    root = manifest.parent
    direct = [predictor.predict([(root / "bin-images" / f"{i}.jpg").read_bytes()])[0]
              for i in val_ids[:3]]
    for row, p in zip(sample.probs, direct):
        assert np.allclose(row, list(p.probabilities.values()), atol=1e-5)
    assert sample.model_version == predictor.model_id


def test_calibrate_command(val_manifest, tmp_path, capsys):
    from tests.tiny import save_tiny_model

    manifest, _, val_ids = val_manifest
    model = save_tiny_model(tmp_path / "model.pt")
    args = _parser().parse_args(["calibrate", "--model", str(model), "--manifest", str(manifest),
                                 "--out", str(tmp_path / "policy.json"), "--wrong-variants", "3"])
    assert (args.split, args.target_fcr, args.error_rate, args.verifier, args.seed,
            args.confidence) == ("val", 0.01, 0.2, "auto", 0, 0.95)
    assert args.func(args) == 0
    policy = Policy.load(tmp_path / "policy.json")
    assert policy.stats["split"] == "val" and policy.stats["images"] == len(val_ids)
    fc = policy.stats["false_confirm"]
    assert fc["wrong_records"] == 3 * len(val_ids)
    out = capsys.readouterr().out
    assert "blind" in out and "record" in out and "policy (" in out
    assert f"({fc['wrong_confirmed']} of {fc['wrong_records']} wrong records)" in out


def test_calibrate_reports_shares_at_the_stated_error_rate(val_manifest, tmp_path, capsys):
    """The validation mix is 1 right to 3 wrong records here: the shares of bins and the workload
    forecast are those of an inventory with --error-rate wrong records, not of that mix."""
    from tests.tiny import save_tiny_model

    manifest, _, _ = val_manifest
    model = save_tiny_model(tmp_path / "model.pt")
    args = _parser().parse_args(["calibrate", "--model", str(model), "--manifest", str(manifest),
                                 "--out", str(tmp_path / "policy.json"), "--wrong-variants", "3",
                                 "--error-rate", "0.1"])
    assert args.func(args) == 0
    policy = Policy.load(tmp_path / "policy.json")
    r = policy.stats["measured"][policy.verifier.kind]
    flag = 0.9 * r["right_flagged"] + 0.1 * r["wrong_flagged"]
    confirm = 0.9 * r["right_confirmed"] + 0.1 * r["false_confirm_rate"]
    assert r["error_rate"] == 0.1 and r["flag_load"] == pytest.approx(flag)
    assert r["review_load"] == pytest.approx(1 - confirm - flag)
    assert r["recounts_per_1000"] == pytest.approx(1000 * (1 - confirm))
    out = capsys.readouterr().out
    assert "shares of all bins at 10% wrong records" in out
    recounts = round(1000 * flag) + round(1000 * r["review_load"])
    assert f"workload forecast at 10% wrong records, per 1,000 photos: {recounts:,} recounts" in out


def test_shares_are_weighted_to_the_error_rate_not_the_validation_mix():
    # 10 right records, all confirmed; 80 wrong ones, half flagged and half sent to review.
    scores = np.r_[np.full(10, 0.9), np.full(40, 0.05), np.full(40, 0.5)]
    right = np.r_[np.ones(10), np.zeros(80)]
    r = cal.rates(scores, right, t_confirm=0.8, t_flag=0.1, error_rate=0.2)
    # In the mix 80 of 90 bins need a person; in a store with 20% wrong records, 20% do.
    assert r["confirm_share"] == pytest.approx(0.8)
    assert r["flag_load"] == pytest.approx(0.1) and r["review_load"] == pytest.approx(0.1)
    assert r["recounts_per_1000"] == pytest.approx(200)
    assert cal.rates(scores, right, 0.8, 0.1)["error_rate"] == 0.2  # the default
    line = cal.describe_forecast(cal.rates(scores, right, 0.8, 0.1, error_rate=0.05))
    assert line.startswith("workload forecast at 5% wrong records, per 1,000 photos: 50 recounts "
                           "(25 flagged, 25 to review), 950 confirmed by photo")


def test_calibrate_command_errors(tmp_path):
    args = _parser().parse_args(["calibrate", "--model", str(tmp_path / "none.pt"), "--manifest",
                                 str(tmp_path / "none.parquet"), "--out", str(tmp_path / "p.json")])
    with pytest.raises(BinventoryError, match="manifest not found"):
        args.func(args)
    args.wrong_variants = 0
    with pytest.raises(BinventoryError, match="wrong-variants"):
        args.func(args)

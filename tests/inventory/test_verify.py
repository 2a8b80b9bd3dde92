"""Record features, the blind and record verifiers, error injection and calibration (tiny arrays)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from binventory import BinventoryError
from binventory.inventory import calibrate as cal
from binventory.inventory import inject
from binventory.inventory.verify import (FEATURES, RECORD_FEATURES, BlindVerifier, ItemRecord,
                                         RecordVerifier, expected_abs_error, features,
                                         p_expected, record_features, verifier_from_dict)
from binventory.model.classes import CountClasses

C = CountClasses(0, 5, True)          # 0..5 and "6+"
C_NO = CountClasses(1, 5, False)      # 1..5, nothing above


def line(q, dims=(4.0, 3.0, 2.0), weight=0.5):
    return ItemRecord(q, *dims, weight)


def synthetic_sample(n=240, seed=0, sharp=1.6, classes=C) -> cal.Sample:
    """A counter that is right about half the time, and records whose volume tracks the count."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 8, n)
    k = classes.num_classes
    centers = np.array([cal_class(classes, c) for c in counts])
    logits = -sharp * np.abs(np.arange(k)[None, :] - (centers + rng.normal(0, 0.7, n))[:, None])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    records = []
    for c in counts:
        lines, left = [], int(c)
        while left:
            q = int(min(left, rng.integers(1, 3)))
            lines.append(line(q, tuple(rng.uniform(1, 8, 3)), float(rng.uniform(0.1, 2))))
            left -= q
        records.append(lines)
    return cal.Sample([f"{i:05d}" for i in range(n)], probs.astype(np.float32), counts, records,
                      classes, "synthetic")


def cal_class(classes, count):
    return classes.index_of(int(count))


# ---- class mapping and blind scores ----

def test_class_index_overflow_and_out_of_range():
    assert [C.index_of(e) for e in (0, 3, 5, 6, 40)] == [0, 3, 5, 6, 6]
    assert [C_NO.index_of(e) for e in (0, 1, 5, 6)] == [-1, 0, 4, -1]


def test_p_expected_reads_the_right_class():
    probs = np.array([[0.1, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1]] * 3)
    assert np.allclose(p_expected(probs, C, [2, 9, 0]), [0.3, 0.1, 0.1])
    probs5 = np.full((3, 5), 0.2)
    # Without an overflow class a count the model cannot hold has P = 0.
    assert np.allclose(p_expected(probs5, C_NO, [0, 3, 7]), [0.0, 0.2, 0.0])
    assert np.allclose(BlindVerifier().score(probs5, C_NO, [0, 3, 7], [[], [], []]), [0, 0.2, 0])


def test_p_expected_checks_shapes():
    with pytest.raises(ValueError, match="N x 7"):
        p_expected(np.zeros((2, 5)), C, [1, 2])
    with pytest.raises(ValueError, match="expected quantities"):
        p_expected(np.zeros((2, 7)), C, [1])


def test_expected_abs_error():
    one_hot = np.eye(7)[[2, 6, 6]]
    assert np.allclose(expected_abs_error(one_hot, C, [4, 9, 3]), [2, 0, 3])


# ---- features ----

def test_features_shape_and_zero_quantity_lines_are_ignored():
    probs = np.full((2, 7), 1 / 7)
    recs = [[line(2), line(1)], [line(2), line(1), line(0, (50, 50, 50), 90)]]
    x = features(probs, C, [3, 3], recs)
    assert x.shape == (2, len(FEATURES)) and np.isfinite(x).all()
    assert np.array_equal(x[0], x[1])


def test_record_features_missing_dimensions_and_empty_records():
    x = record_features([[ItemRecord(2)], [], [line(2, (2, 2, 2), 1.0)]])
    col = {n: i for i, n in enumerate(RECORD_FEATURES)}
    assert x[0, col["missing_dims"]] == 1 and x[1, col["missing_dims"]] == 1
    assert x[1, col["n_lines"]] == 0
    assert x[2, col["missing_dims"]] == 0
    assert x[2, col["log_volume"]] == pytest.approx(np.log(16))
    assert x[2, col["log_item_volume"]] == pytest.approx(np.log(8))


# ---- record verifier ----

@pytest.mark.parametrize("model", ["logistic", "trees"])
def test_record_verifier_fits_and_round_trips_through_json(model):
    s = synthetic_sample()
    idx, e, r, right = inject.variants(s.expected, s.records, 3, np.random.default_rng(0))
    x = features(s.probs[idx], C, e, r)
    v = RecordVerifier.fit(x, right, model=model, error_rate=0.2)
    scores = v.score(s.probs[idx], C, e, r)
    assert scores.shape == (len(e),) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[right == 1].mean() > scores[right == 0].mean() + 0.1
    text = json.dumps(v.to_dict())   # plain JSON: no numpy types, no pickle
    again = verifier_from_dict(json.loads(text))
    assert np.allclose(again.score(s.probs[idx], C, e, r), scores)


def test_tree_verifier_matches_sklearn():
    from sklearn.ensemble import GradientBoostingClassifier

    s = synthetic_sample(n=120)
    idx, e, r, right = inject.variants(s.expected, s.records, 2, np.random.default_rng(1))
    x = features(s.probs[idx], C, e, r)
    v = RecordVerifier.fit(x, right, model="trees", error_rate=0.5, seed=3)
    w = np.where(right == 1, 0.5 / right.sum(), 0.5 / (1 - right).sum()) * len(right)
    gb = GradientBoostingClassifier(n_estimators=150, learning_rate=0.05, max_depth=3,
                                    min_samples_leaf=20, subsample=0.8, random_state=3)
    gb.fit(x, right, sample_weight=w)
    assert np.allclose(1 / (1 + np.exp(-v.logit(x))), gb.predict_proba(x)[:, 1], atol=1e-6)


def test_prior_logit_follows_the_error_rate():
    s = synthetic_sample(n=120)
    idx, e, r, right = inject.variants(s.expected, s.records, 2, np.random.default_rng(1))
    x = features(s.probs[idx], C, e, r)
    low = RecordVerifier.fit(x, right, model="logistic", error_rate=0.05)
    high = RecordVerifier.fit(x, right, model="logistic", error_rate=0.5)
    assert (low.logit(x) > high.logit(x)).all()


def test_fit_needs_both_labels_and_bad_dicts_are_refused():
    with pytest.raises(BinventoryError, match="both right and wrong"):
        RecordVerifier.fit(np.zeros((4, len(FEATURES))), np.ones(4))
    with pytest.raises(BinventoryError, match="unknown verifier kind"):
        verifier_from_dict({"kind": "magic"})
    with pytest.raises(BinventoryError, match="bad record verifier"):
        verifier_from_dict({"kind": "record", "model": "trees", "features": ["p_e"]})
    with pytest.raises(BinventoryError, match="unknown features"):
        RecordVerifier("logistic", ["os.system"], coef=[1.0], mean=[0.0], scale=[1.0])


# ---- error injection ----

def test_inject_error_moves_one_line_by_1_to_3_never_below_zero():
    rng = np.random.default_rng(0)
    rec = [line(1), line(2, (1, 1, 1))]
    for _ in range(300):
        wrong, e = inject.inject_error(rec, 3, rng)
        diffs = [w.quantity - r.quantity for w, r in zip(wrong, rec)]
        assert sum(d != 0 for d in diffs) == 1
        d = sum(diffs)
        assert 1 <= abs(d) <= 3 and e == 3 + d
        assert all(w.quantity >= 0 for w in wrong)
        assert [(w.length, w.weight) for w in wrong] == [(r.length, r.weight) for r in rec]


def test_inject_error_in_an_empty_bin_adds_a_phantom_line():
    rng = np.random.default_rng(0)
    wrong, e = inject.inject_error([], 0, rng, donors=[[line(1, (9, 9, 9), 3.0)]])
    assert len(wrong) == 1 and wrong[0].quantity == e and 1 <= e <= 3
    assert wrong[0].length == 9


def test_variants_and_with_errors():
    s = synthetic_sample(n=50)
    idx, e, r, right = inject.variants(s.expected, s.records, 4, np.random.default_rng(0))
    assert len(idx) == 250 and right.sum() == 50
    assert (e[right == 1] == s.expected).all() and (e[right == 0] != s.expected[idx[right == 0]]).all()
    e2, r2, right2 = inject.with_errors(s.expected, s.records, 0.2, np.random.default_rng(0))
    assert (right2 == 0).sum() == 10 and (e2[right2 == 1] == s.expected[right2 == 1]).all()


# ---- thresholds ----

def test_point_rule_is_the_lowest_threshold_whose_rate_meets_the_target():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0.3, 1, 500), rng.uniform(0, 0.9, 1000)])
    right = np.r_[np.ones(500), np.zeros(1000)]
    t = cal.pick_t_confirm(scores, right, 0.01, confidence=None)
    fcr = ((scores >= t) & (right == 0)).sum() / 1000
    assert fcr <= 0.01
    lower = np.max(scores[(scores < t)])
    assert ((scores >= lower) & (right == 0)).sum() / 1000 > 0.01
    tf = cal.pick_t_flag(scores, right, 0.05)
    assert ((scores <= tf) & (right == 1)).mean() * 1500 / 500 <= 0.05
    r = cal.rates(scores, right, t, tf)
    assert r["false_confirm_rate"] <= 0.01 and r["wrong_flagged_or_queued"] >= 0.99


@pytest.mark.parametrize("k,n", [(0, 10), (0, 5568), (3, 200), (43, 5568), (999, 1000)])
def test_upper_bound_is_clopper_pearson(k, n):
    from scipy.stats import binom

    u = cal.fcr_upper_bound(k, n, 0.95)
    # The one-sided 95% Clopper-Pearson bound: the rate at which k or fewer of n happen 5% of
    # the time (binomial tail, not the beta quantile the code uses); closed form when k = 0.
    assert binom.cdf(k, n, u) == pytest.approx(0.05, rel=1e-6)
    if k == 0:
        assert u == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    assert u > k / n
    assert cal.fcr_upper_bound(n, n) == 1.0 and cal.fcr_upper_bound(0, 0) == 1.0


def test_t_confirm_keeps_the_upper_bound_under_the_target():
    # 2,000 wrong records with scores spread evenly over [0, 1): the point rule may confirm 20
    # (1.0%), the 95% bound allows only 12 (0.6%: bound 0.99%, 13 would give 1.06%).
    wrong = (np.arange(2000) + 0.5) / 2000
    scores = np.r_[np.full(300, 0.9999), wrong]
    right = np.r_[np.ones(300), np.zeros(2000)]
    t_bound = cal.pick_t_confirm(scores, right, 0.01)
    t_point = cal.pick_t_confirm(scores, right, 0.01, confidence=None)
    confirmed = int(((wrong >= t_bound)).sum())
    assert confirmed == 12 and int((wrong >= t_point).sum()) == 20 and t_point < t_bound
    r = cal.rates(scores, right, t_bound, 0.0)
    assert r["wrong_confirmed"] == 12 and r["wrong"] == 2000
    assert r["false_confirm_upper"] <= 0.01 < cal.fcr_upper_bound(13, 2000)
    assert r["false_confirm_rate"] == pytest.approx(0.006)


def test_too_few_wrong_records_confirm_nothing(caplog):
    # 100 wrong records, none above 0.5: even 0 of 100 bounds the rate at 3%, not 1%.
    scores = np.r_[np.full(50, 0.99), np.full(100, 0.1)]
    right = np.r_[np.ones(50), np.zeros(100)]
    t = cal.pick_t_confirm(scores, right, 0.01)
    assert t > 1.0 and "cannot bound" in caplog.text
    assert cal.rates(scores, right, t, 0.0)["right_confirmed"] == 0.0


@pytest.mark.slow
def test_calibrate_stores_the_bound_behind_t_confirm():
    s = synthetic_sample(n=200)
    policy, _ = cal.calibrate(s, target_fcr=0.02, verifier="record", n_wrong=4)
    point, _ = cal.calibrate(s, target_fcr=0.02, verifier="record", n_wrong=4, confidence=None)
    fc = policy.stats["false_confirm"]
    assert fc["wrong_records"] == 800 and fc["confidence"] == 0.95
    assert fc["estimate"] == pytest.approx(fc["wrong_confirmed"] / 800)
    assert fc["upper_bound"] == pytest.approx(cal.fcr_upper_bound(fc["wrong_confirmed"], 800))
    assert fc["upper_bound"] <= 0.02 and policy.stats["threshold_rule"] == "upper bound"
    assert point.t_confirm < policy.t_confirm and point.stats["false_confirm"]["upper_bound"] > 0.02
    line = cal.describe_false_confirms(policy)
    assert f"({fc['wrong_confirmed']} of 800 wrong records)" in line and "95% upper bound" in line
    with pytest.raises(BinventoryError, match="confidence"):
        cal.calibrate(s, confidence=1.0)


def test_thresholds_keep_t_flag_below_t_confirm():
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    right = np.array([1, 1, 0, 0])
    tc, tf = cal.thresholds(scores, right, 0.01)
    assert tf < tc


# ---- calibration ----

@pytest.mark.slow
def test_calibrate_auto_picks_the_verifier_that_confirms_more():
    s = synthetic_sample(n=200)
    policy, candidates = cal.calibrate(s, target_fcr=0.02, verifier="auto", n_wrong=4)
    names = [c.name for c in candidates]
    assert names == ["blind", "record"]
    best = max(candidates, key=lambda c: c.rates["right_confirmed"])
    assert policy.verifier.kind == best.name
    assert policy.t_flag < policy.t_confirm and policy.model_version == "synthetic"
    assert set(policy.stats["measured"]) == {"blind", "record"}
    for c in candidates:
        assert c.rates["false_confirm_upper"] <= 0.02


def test_calibrate_falls_back_to_blind_on_tiny_data(caplog):
    s = synthetic_sample(n=12)
    policy, candidates = cal.calibrate(s, verifier="auto", n_wrong=2)
    assert policy.verifier.kind == "blind" and [c.name for c in candidates] == ["blind"]
    assert "using the blind one" in caplog.text
    with pytest.raises(BinventoryError, match="validation images"):
        cal.calibrate(s, verifier="record", n_wrong=2)


def test_calibrate_refuses_bad_rates():
    s = synthetic_sample(n=40)
    with pytest.raises(BinventoryError, match="strictly between"):
        cal.calibrate(s, target_fcr=0.0)
    with pytest.raises(BinventoryError, match="verifier"):
        cal.calibrate(s, verifier="psychic")


@pytest.mark.abid
def test_item_records_from_real_metadata(abid_sample):
    from binventory.data.abid import read_metadata

    ids = (abid_sample / "splits" / "dev.txt").read_text().split()[:20]
    records = [cal.item_records(read_metadata(abid_sample / "metadata" / f"{i}.json", i)) for i in ids]
    x = record_features(records)
    assert x.shape == (20, len(RECORD_FEATURES)) and np.isfinite(x).all()
    assert any(len(r) for r in records)

"""Drift watch: per-day shares, confidence and count mix against the calibration reference
(SQLite and PostgreSQL). Streams are drawn from a synthetic counter; photos are inserted directly."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import insert

from binventory.inventory import calibrate as cal
from binventory.inventory import drift
from binventory.inventory.models import Bin, Observation
from binventory.inventory.policy import Policy
from binventory.inventory.verify import BlindVerifier, class_counts
from binventory.model.classes import CountClasses
from tests.inventory.test_verify import synthetic_sample

C = CountClasses(0, 5, True)
STEADY_SHARES = {"confirm": 0.6, "flag": 0.15, "review": 0.25}
SHIFTED_SHARES = {"confirm": 0.3, "flag": 0.15, "review": 0.55}   # confirm share halves
STEADY_MIX = np.full(8, 1 / 8)                                     # true counts 0..7
SHIFTED_MIX = np.array([0.5, 0.3, 0.1, 0.1, 0, 0, 0, 0])           # mostly empty bins now
MODEL = "counter-a"


def draw(rng, n: int, sharp: float = 1.6, mix=STEADY_MIX) -> np.ndarray:
    """Probabilities of a counter about half right (sharper = more confident)."""
    counts = rng.choice(len(mix), size=n, p=mix)
    centers = np.array([C.index_of(c) for c in counts])
    k = C.num_classes
    logits = -sharp * np.abs(np.arange(k)[None, :] - (centers + rng.normal(0, 0.7, n))[:, None])
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def reference_policy(seed: int = 0, n: int = 400, model: str = MODEL) -> Policy:
    rates = {"confirm_share": STEADY_SHARES["confirm"], "flag_load": STEADY_SHARES["flag"],
             "review_load": STEADY_SHARES["review"], "error_rate": 0.2}
    ref = drift.reference(draw(np.random.default_rng(seed), n), C, rates)
    return Policy(BlindVerifier(), 0.9, 0.1, model_version=model,
                  stats={"calibrated": True, "reference": ref})


def add_photos(db, day: datetime, probs: np.ndarray, shares: dict, rng, model: str = MODEL) -> None:
    """One photo per row of ``probs`` on ``day`` (UTC), decided with ``shares``, on fresh bins."""
    predicted = class_counts(C)[probs.argmax(axis=1)].astype(int)
    decisions = rng.choice(list(shares), size=len(probs), p=list(shares.values()))
    tag = f"{model}-{day:%Y%m%d}"
    with db.session() as s:
        bins = [Bin(code=f"{tag}-{i}") for i in range(len(probs))]
        s.add_all(bins)
        s.flush()
        s.execute(insert(Observation), [
            {"bin_id": b.id, "image_uri": f"{b.code}.jpg", "image_sha256": f"{i:064d}",
             "captured_at": day + timedelta(seconds=10 * i), "model_version": model,
             "predicted_count": int(predicted[i]),
             "probabilities": {name: round(float(p), 6) for name, p in zip(C.names, probs[i])},
             "expected_quantity": int(predicted[i]), "decision": str(decisions[i]), "score": 0.5,
             "created_at": day + timedelta(seconds=10 * i)}
            for i, b in enumerate(bins)])


def days_ago(k: int) -> datetime:
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=k) + timedelta(hours=6)


def steady_days(db, rng, n: int = 150, days: int = 5, model: str = MODEL) -> None:
    for k in range(days, 0, -1):
        add_photos(db, days_ago(k), draw(rng, n), STEADY_SHARES, rng, model)


def check(db, policy) -> drift.Report:
    with db.reader() as s:
        return drift.check(s, policy)


def test_a_steady_stream_raises_no_warning(db):
    rng = np.random.default_rng(1)
    steady_days(db, rng)
    report = check(db, reference_policy())
    assert report.note is None and len(report.days) == 5
    assert all(d.checked and d.n == 150 for d in report.days)
    assert report.shifts == [], [s.describe() for s in report.shifts]
    day = report.latest
    # measured, from the stored probabilities, close to the reference's
    assert abs(day.values["mean_confidence"] - report.reference["mean_confidence"]) < 0.03
    assert abs(day.values["share_confirm"] - 0.6) < 0.1 and day.values["count_hist"] < 0.1


def test_a_shifted_stream_raises_the_right_warnings(db):
    rng = np.random.default_rng(2)
    steady_days(db, rng, days=4)
    # A new camera: blurrier photos (less confident), mostly empty bins, half the confirms.
    add_photos(db, days_ago(0) - timedelta(hours=6), draw(rng, 150, sharp=0.6, mix=SHIFTED_MIX),
               SHIFTED_SHARES, rng)
    report = check(db, reference_policy())
    today = report.days[-1]
    assert today.day == f"{datetime.now(timezone.utc):%Y-%m-%d}"
    assert {s.measure for s in today.shifts} == {"share_confirm", "share_review", "mean_confidence",
                                                 "count_hist"}
    assert all(d.shifts == [] for d in report.days[:-1])  # the steady days stay quiet
    said = {s.measure: s.describe() for s in today.shifts}
    assert "against 60.0% at calibration" in said["share_confirm"] and "points" in said["share_confirm"]
    assert today.values["share_confirm"] < 0.45 and today.values["count_hist"] >= 0.25
    assert "0 items predicted for" in said["count_hist"]
    assert today.values["mean_confidence"] < report.reference["mean_confidence"] - 0.05


def test_a_quiet_day_below_min_n_raises_none(db):
    rng = np.random.default_rng(3)
    # 20 photos, every one flagged, on a camera that sees nothing clearly: not enough to judge.
    add_photos(db, days_ago(1), draw(rng, 20, sharp=0.3, mix=SHIFTED_MIX), {"flag": 1.0}, rng)
    report = check(db, reference_policy())
    assert [(d.n, d.checked, d.shifts) for d in report.days] == [(20, False, [])]
    assert report.days[0].values["share_flag"] == 1.0  # measured all the same
    assert report.latest is None and "no day in the last 14 has 50 photos" in report.note


def test_no_reference_means_no_check(db):
    rng = np.random.default_rng(4)
    add_photos(db, days_ago(1), draw(rng, 100, sharp=0.3, mix=SHIFTED_MIX), {"flag": 1.0}, rng)
    old = Policy.from_dict({**reference_policy().to_dict(), "stats": {"calibrated": True}})
    for policy in (Policy.default(), old):
        report = check(db, policy)
        assert report.days == [] and report.shifts == [] and report.reference is None
        assert report.note.startswith("No drift check: the policy in use has no calibration reference")


def test_photos_of_another_model_are_left_out(db):
    rng = np.random.default_rng(5)
    steady_days(db, rng, days=2)
    add_photos(db, days_ago(1), draw(rng, 200, sharp=0.4, mix=SHIFTED_MIX), {"flag": 1.0}, rng,
               model="counter-b")
    report = check(db, reference_policy())
    assert [d.n for d in report.days] == [150, 150] and report.shifts == []


def test_calibrate_stores_the_reference():
    sample = synthetic_sample(n=120, seed=7)
    policy, candidates = cal.calibrate(sample, verifier="blind")
    ref = Policy.from_dict(json.loads(json.dumps(policy.to_dict()))).stats["reference"]
    chosen = candidates[0].rates
    assert ref["share"] == {"confirm": chosen["confirm_share"], "flag": chosen["flag_load"],
                            "review": chosen["review_load"]}
    assert abs(sum(ref["share"].values()) - 1) < 1e-9 and ref["n"] == 120
    assert np.isclose(ref["mean_confidence"], sample.probs.max(axis=1).mean())
    predicted = class_counts(C)[sample.probs.argmax(axis=1)].astype(int)
    assert ref["count_hist"] == {str(c): float(np.mean(predicted == c)) for c in np.unique(predicted)}
    assert ref["classes"] == C.names


def test_a_stream_like_the_calibration_sample_raises_no_warning(db):
    """The whole loop: calibrate's reference, then the same counter's photos over three days."""
    sample = synthetic_sample(n=300, seed=8)
    policy, _ = cal.calibrate(sample, verifier="blind")
    ref = policy.stats["reference"]
    rng = np.random.default_rng(9)
    for k in (3, 2, 1):
        pick = rng.choice(len(sample.probs), 120)
        add_photos(db, days_ago(k), sample.probs[pick].astype(np.float64), ref["share"], rng,
                   model="synthetic")
    report = check(db, policy)
    assert len(report.days) == 3 and report.shifts == [], [s.describe() for s in report.shifts]


def test_each_measure_warns_on_its_own_shift(db):
    """Blurrier photos move only the confidence (the nearest count stays the argmax), a new
    product mix only the count histogram, a new error pattern only the shares."""
    rng = np.random.default_rng(10)
    add_photos(db, days_ago(3), draw(rng, 200, sharp=0.9), STEADY_SHARES, rng)
    add_photos(db, days_ago(2), draw(rng, 200, mix=SHIFTED_MIX), STEADY_SHARES, rng)
    add_photos(db, days_ago(1), draw(rng, 200), SHIFTED_SHARES, rng)
    report = check(db, reference_policy())
    assert [{s.measure for s in d.shifts} for d in report.days] == [
        {"mean_confidence"}, {"count_hist"}, {"share_confirm", "share_review"}]


def test_a_busy_day_does_not_warn_on_a_small_move():
    """5,000 photos make a 6-point move 'significant'; nobody should act on it, so it stays quiet
    under the 10-point minimum shift, and warns past it."""
    ref = reference_policy().stats["reference"]
    for confirmed, warns in ((0.54, False), (0.48, True)):
        day = drift.Day("2026-12-01", {"confirm": int(5000 * confirmed), "flag": 750,
                                       "review": 5000 - 750 - int(5000 * confirmed)},
                        {k: int(5000 * v) for k, v in ref["count_hist"].items()})
        found = drift.compare(day, ref)
        assert found.checked and ("share_confirm" in {s.measure for s in found.shifts}) is warns

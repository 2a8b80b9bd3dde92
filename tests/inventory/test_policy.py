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
    cal.add_parser(sub, HelpFormatter)
    return parser


def test_calibrate_command(tmp_path, monkeypatch, capsys):
    from tests.inventory.test_verify import synthetic_sample

    args = _parser().parse_args(["calibrate", "--model", "m.pt", "--manifest", "m.parquet",
                                 "--out", str(tmp_path / "policy.json"), "--wrong-variants", "3"])
    assert (args.split, args.target_fcr, args.error_rate, args.verifier, args.seed) == \
        ("val", 0.01, 0.2, "auto", 0)
    seen = {}

    def fake_load(model, manifest, split, batch_size):
        seen.update(model=str(model), split=split)
        return synthetic_sample(n=120)

    monkeypatch.setattr(cal, "load_sample", fake_load)
    assert args.func(args) == 0
    assert seen == {"model": "m.pt", "split": "val"}
    policy = Policy.load(tmp_path / "policy.json")
    assert policy.stats["split"] == "val" and policy.stats["images"] == 120
    out = capsys.readouterr().out
    assert "blind" in out and "record" in out and "policy (" in out


def test_calibrate_command_errors(tmp_path):
    args = _parser().parse_args(["calibrate", "--model", str(tmp_path / "none.pt"), "--manifest",
                                 str(tmp_path / "none.parquet"), "--out", str(tmp_path / "p.json")])
    with pytest.raises(BinventoryError, match="manifest not found"):
        args.func(args)
    args.wrong_variants = 0
    with pytest.raises(BinventoryError, match="wrong-variants"):
        args.func(args)

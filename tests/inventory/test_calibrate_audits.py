"""calibrate --from-audits: the verifier and thresholds fitted on the inventory's resolved audits
(SQLite and PostgreSQL). Audits are made directly in the database with stored probabilities
peaked at the true count, as a counter that is usually right would store them: no training."""
import json

import numpy as np
import pytest
from sqlalchemy import select

from binventory.cli import main
from binventory.inventory import audit, registry
from binventory.inventory.audit_outcomes import audit_probabilities, load_audits
from binventory.inventory.calibrate_audits import load_sample, needed_wrong, selection_note
from binventory.inventory.models import AuditTask, Observation, utcnow
from binventory.inventory.policy import Policy
from binventory.inventory.verify import ItemRecord
from binventory.model.classes import CountClasses
from binventory.serving.predictor import Predictor
from tests.inventory.helpers import load, make_dataset
from tests.tiny import image_bytes, save_tiny_model

CLASSES = CountClasses(0, 5, True)
MODEL = "m-audits"
DELTAS = (-3, -2, -1, 1, 2, 3)


def photo_probs(count: int, rng) -> np.ndarray:
    """A usually-right counter's probabilities for a bin holding ``count`` items."""
    logits = -2.5 * np.abs(np.arange(7) - min(count, 6)) + rng.normal(0, 0.8, 7)
    p = np.exp(logits)
    return p / p.sum()


def bins(n_right: int, n_wrong: int, seed: int) -> list[tuple[int, int]]:
    """(record, true count) per bin: right records, then records off by 1-3 items."""
    rng = np.random.default_rng(seed)
    out = [(e, e) for e in rng.integers(1, 6, n_right)]
    for e in rng.integers(1, 6, n_wrong):
        d = [d for d in DELTAS if e + d >= 0]
        out.append((int(e), int(e + d[rng.integers(len(d))])))
    return [(int(e), int(c)) for e, c in out]


def audited(db, tmp_path, pairs, *, seed=0, model=MODEL, source="flag", prefix="b",
            photos=None) -> list[str]:
    """Bins with these (record, true count) pairs, each photographed once (judged by ``model``
    with stored probabilities, or none) and recounted by a person; returns the bin codes."""
    codes = {f"{prefix}{i:04d}": e for i, (e, _) in enumerate(pairs)}
    load(db, make_dataset(tmp_path / f"abid-{prefix}", codes, images=False))
    rng = np.random.default_rng(seed)
    with db.session() as s:
        for (code, e), (_, truth) in zip(codes.items(), pairs):
            b = audit.get_bin(s, code)
            p = photo_probs(truth, rng)
            obs = Observation(bin_id=b.id, image_uri=(photos or {}).get(code, f"gone/{code}.jpg"),
                              image_sha256=code.ljust(64, "0"), captured_at=utcnow(),
                              model_version=model, predicted_count=int(p.argmax()),
                              probabilities=dict(zip(CLASSES.names, p.round(6).tolist())),
                              expected_quantity=e, decision="confirm" if source == "spot" else source,
                              score=0.5, created_at=utcnow())
            s.add(obs)
            s.flush()
            if source == "spot":
                s.add(AuditTask(bin_id=b.id, observation_id=obs.id, reason="spot", priority=0.0,
                                predicted_count=obs.predicted_count, expected_quantity=e,
                                created_at=utcnow(), updated_at=utcnow()))
                s.flush()
            else:
                audit.open_tasks(s, [(b.id, obs.id, audit.Finding(source, 1.0, obs.predicted_count, e))])
            task = s.scalar(select(AuditTask.id).where(AuditTask.bin_id == b.id,
                                                       AuditTask.status == "open"))
            audit.resolve(s, task, counted_quantity=truth, actor="ana",
                          reason_code=None if truth == e else "miscount")
    return list(codes)


def calibrate(db_url, out, *extra) -> int:
    return main(["inventory", "calibrate", "--from-audits", "--db", db_url, "--out", str(out),
                 *extra])


def test_the_audits_needed_follow_from_the_target():
    # No false confirm among n wrong records: the 95% bound is 1 - 0.05^(1/n).
    assert needed_wrong(0.01) == 299
    assert 1 - 0.05 ** (1 / 299) <= 0.01 < 1 - 0.05 ** (1 / 298)
    assert needed_wrong(0.05) == 59


def test_without_spot_checks_the_rate_is_said_to_be_optimistic():
    caught = {"flag": {"right": 200, "wrong": 300, "right_confirmed": 150, "wrong_confirmed": 0}}
    assert "likely optimistic" in selection_note(caught) and "spot-check" in selection_note(caught)
    spot = {**caught, "spot": {"right": 40, "wrong": 5, "right_confirmed": 35, "wrong_confirmed": 1}}
    assert "of their 5 wrong records the new thresholds confirm 1" in selection_note(spot)


def test_too_few_audits_write_no_policy_and_say_how_many_are_needed(db, db_url, tmp_path, capsys):
    audited(db, tmp_path, bins(10, 20, seed=1))
    out = tmp_path / "policy.json"
    assert calibrate(db_url, out) == 2
    err = capsys.readouterr().err
    assert "20 of wrong records" in err and "at least 299 audits of wrong records" in err
    assert not out.exists()
    # A higher bar may be set, never one below what the target needs.
    assert calibrate(db_url, out, "--target-fcr", "0.05", "--min-audits", "150") == 2
    assert "at least 150 audits of wrong records" in capsys.readouterr().err
    assert calibrate(db_url, out, "--target-fcr", "0.05", "--min-audits", "20") == 2
    assert "below the 59 audits" in capsys.readouterr().err
    assert calibrate(db_url, out, "--since", "2100-01-01") == 2
    assert "no resolved audit task" in capsys.readouterr().err
    assert not out.exists()


def held_out(n_right: int, n_wrong: int, seed: int):
    """Audits the fit never saw, drawn the same way: probabilities, records, SKU lines, right."""
    rng = np.random.default_rng(seed)
    pairs = bins(n_right, n_wrong, seed)
    probs = np.stack([photo_probs(c, rng) for _, c in pairs])
    lines = [[ItemRecord(q, 4.0, 3.0, 2.0, 0.5) for q in (e - e // 2, e // 2) if q]
             for e, _ in pairs]  # as make_dataset splits a record over two SKUs
    return probs, [e for e, _ in pairs], lines, np.array([e == c for e, c in pairs])


@pytest.mark.slow
def test_a_policy_fitted_on_audits_confirms_right_records_at_the_target(db, db_url, tmp_path, capsys):
    audited(db, tmp_path, bins(150, 130, seed=2), seed=2)
    audited(db, tmp_path, bins(20, 10, seed=3), seed=3, source="spot", prefix="s")
    out = tmp_path / "policy.json"
    assert calibrate(db_url, out, "--target-fcr", "0.05") == 0
    printed = capsys.readouterr().out
    assert "audits used: 310 (170 right records, 140 wrong)" in printed
    assert "spot checks of confirmed bins" in printed
    policy = Policy.from_dict(json.loads(out.read_text()))
    st = policy.stats
    assert (st["source"], st["audits"], st["right"], st["wrong"]) == ("audits", 310, 170, 140)
    assert st["by_source"]["flag"]["wrong"] == 130 and st["by_source"]["spot"]["right"] == 20
    assert st["probabilities"] == {"stored": 310}  # every photo is gone: none was needed
    # The wrong records' lines were rebuilt as they stood before the recount changed them.
    assert st["lines"] == {"at_the_time": 310, "current_contents": 0}
    assert st["first_resolved"] <= st["last_resolved"]
    assert st["false_confirm"]["upper_bound"] <= 0.05 and policy.model_version == MODEL
    # Drift watch's reference is the stream the model judged, confirmed photos too.
    assert (st["reference_from"], st["reference"]["n"]) == ("observations", 310)
    probs, expected, lines, right = held_out(600, 600, seed=4)
    actions = np.array([d.action for d in policy.decide(probs, CLASSES, expected, lines)])
    confirmed = actions == "confirm"
    assert confirmed[~right].mean() <= 0.05
    assert confirmed[right].mean() > 0.5


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


def test_stored_probabilities_of_the_model_need_no_photo_and_others_are_counted_again(
        db, tmp_path, model_path):
    predictor = Predictor.load(model_path)
    store = tmp_path / "photos"
    store.mkdir()
    (store / "o0000.jpg").write_bytes(image_bytes(7))
    audited(db, tmp_path, [(3, 3)], model=predictor.model_id, prefix="m")   # photo gone
    audited(db, tmp_path, [(2, 4), (1, 1)], model="older-model", prefix="o",
            photos={"o0000": "o0000.jpg"})                                  # o0001's photo gone
    with db.reader() as s:
        audits = load_audits(s)
    assert [(a.expected, a.counted, a.right) for a in audits] == [(3, 3, True), (2, 4, False),
                                                                   (1, 1, True)]
    # The bin now holds the 4 counted; the audit keeps the 2 the photo was judged against.
    assert sum(line.quantity for line in audits[1].lines) == 2 and audits[1].lines_at_the_time
    kept, probs, how = audit_probabilities(audits, predictor.model_id, predictor.classes,
                                           predictor=predictor, image_dir=store)
    assert kept == [0, 1]
    assert how == {"stored": 1, "rerun": 1, "left out: photo gone or unreadable": 1}
    stored = [audits[0].probabilities[n] for n in predictor.classes.names]
    np.testing.assert_allclose(probs[0], stored)
    again = predictor.predict_arrays(predictor.decode(image_bytes(7))[None])[0]
    np.testing.assert_allclose(probs[1], again, rtol=1e-5)
    # Without the artifact another model's audits are left out, not guessed at.
    kept, _, how = audit_probabilities(audits, predictor.model_id, predictor.classes)
    assert kept == [0] and how["left out: judged by another model"] == 2
    # Without --model: the registry's active model, counted again with its artifact.
    with db.session() as s:
        registry.register(s, model_path)
        registry.promote(s, predictor.model_id, force=True)
    sample, _ = load_sample(db, image_dir=store)
    assert sample.model_version == predictor.model_id
    assert sample.how == {"stored": 1, "rerun": 1, "left out: photo gone or unreadable": 1}

"""``model compare`` and the promotion gate: two tiny models that really count the audits' photos
differently, scored on the warehouse's resolved audits (SQLite and PostgreSQL)."""
import pytest
from sqlalchemy import select

from binventory.cli import main
from binventory.inventory import registry
from binventory.inventory.audit import Conflict
from binventory.inventory.compare import audit_cases, compare
from binventory.inventory.models import Adjustment, AuditTask, Bin, BinContent, utcnow
from tests.inventory.audits import AUDITS, resolve_audits, save_counter, warehouse
from tests.inventory.helpers import load, make_dataset


@pytest.fixture(scope="module")
def counters(tmp_path_factory):
    """A model that counts 2 everywhere (right on 16 of the 20 audits), one that counts 4
    (right on 4)."""
    folder = tmp_path_factory.mktemp("counters")
    return save_counter(folder / "good.pt", 2, "good"), save_counter(folder / "bad.pt", 4, "bad")


@pytest.fixture
def models(db, counters):
    with db.session() as s:
        return tuple(registry.register(s, path).version for path in counters)


def test_the_record_is_the_one_the_person_counted(db, tmp_path):
    image_dir = warehouse(db, tmp_path)
    with db.reader() as s:
        cases, skipped = audit_cases(s, None, image_dir)
    # The wrong records were corrected by their recount (3 -> 2), yet each audit is scored
    # against the record as it stood when the person counted.
    assert sorted((c.expected, c.counted) for c in cases) == sorted(AUDITS.values())
    assert all(sum(r.quantity for r in c.records) == c.expected for c in cases)
    assert skipped == {}


def test_a_record_changed_outside_the_ledger_later_does_not_move_the_record_counted(db, tmp_path):
    # compare once rebuilt the record as "now less every later delta", calibrate from the
    # ledger rows' quantity_before: they part when the recounted line changes outside the
    # ledger after the recount (a re-import). The record the person counted against was 3.
    image_dir = warehouse(db, tmp_path)
    with db.reader() as s:
        task_id = s.scalar(select(AuditTask.id).join(Bin, Bin.id == AuditTask.bin_id)
                           .where(Bin.code == "w3-00"))
        before = next(c for c in audit_cases(s, None, image_dir)[0] if c.task_id == task_id)
    with db.session() as s:
        booked = s.scalars(select(Adjustment).where(Adjustment.task_id == task_id)).one()
        s.get(BinContent, (booked.bin_id, booked.sku_id)).quantity += 5
    with db.reader() as s:
        case = next(c for c in audit_cases(s, None, image_dir)[0] if c.task_id == task_id)
    assert (case.expected, case.counted, case.records) == (3, 2, before.records)


def test_a_better_candidate_is_found_better_and_promoted(db, tmp_path, models):
    good, bad = models
    image_dir = warehouse(db, tmp_path)
    with db.session() as s:
        registry.promote(s, bad)  # the first promotion: nothing to be better than
    result = compare(db, good, image_dir=image_dir)
    assert (result["audits"], result["against"], result["verdict"]) == (20, bad, "better")
    accuracy = result["figures"]["exact_accuracy"]
    assert accuracy["candidate"]["value"] == pytest.approx(16 / 20)
    assert accuracy["baseline"]["value"] == pytest.approx(4 / 20)
    assert 0 < accuracy["difference"]["low"] <= 0.6 <= accuracy["difference"]["high"]
    # The default policy confirms what each model is sure of: the good one the 12 right
    # records of 2 (and the 4 wrong records of 3 it sees as 2 are not confirmed: 3 is not 2).
    assert result["figures"]["right_confirmed"]["candidate"]["value"] == pytest.approx(12 / 16)
    assert result["figures"]["right_confirmed"]["baseline"]["value"] == pytest.approx(4 / 16)
    assert result["figures"]["false_confirm_rate"]["candidate"]["value"] == 0
    assert result["figures"]["rmse"]["candidate"]["value"] == pytest.approx((4 * 4 / 20) ** 0.5)
    with db.session() as s:
        assert registry.get(s, good).comparison["verdict"] == "better"
        assert registry.promote(s, good).state == "active"
        assert registry.get(s, bad).state == "retired"


def test_a_worse_candidate_is_refused_naming_the_figure_unless_forced(db, tmp_path, models):
    good, bad = models
    image_dir = warehouse(db, tmp_path)
    with db.session() as s:
        registry.promote(s, good)
    result = compare(db, bad, image_dir=image_dir)
    assert result["verdict"] == "not better"
    with db.session() as s, pytest.raises(Conflict) as refused:
        registry.promote(s, bad)
    message = str(refused.value)
    assert f"model {bad} is not better than {good}" in message
    assert "exact accuracy -60.0% (95% interval" in message and "is worse" in message
    assert "--force" in message
    with db.session() as s:
        assert registry.active(s).version == good
        assert registry.promote(s, bad, force=True).state == "active"


def test_a_candidate_that_only_ties_is_not_better(db, tmp_path, models, counters):
    good, _ = models
    image_dir = warehouse(db, tmp_path)
    with db.session() as s:
        twin = registry.register(s, save_counter(tmp_path / "twin.pt", 2, "twin", seed=1)).version
        registry.promote(s, good)
    result = compare(db, twin, image_dir=image_dir)
    assert result["verdict"] == "not better"
    assert result["reasons"] == ["no clear gain: exact accuracy +0.0% (95% interval +0.0% to +0.0%) "
                                 "and right records confirmed +0.0% (95% interval +0.0% to +0.0%); "
                                 "an interval must lie above 0"]


def test_only_audits_newer_than_the_candidates_data_count(db, tmp_path, models):
    good, bad = models
    root = make_dataset(tmp_path / "abid", {code: record for code, (record, _) in AUDITS.items()})
    load(db, root)
    codes = sorted(AUDITS)
    resolve_audits(db, root, tmp_path / "store", codes[:10])
    seen_until = utcnow()
    resolve_audits(db, root, tmp_path / "store", codes[10:])
    with db.session() as s:
        registry.promote(s, bad)
        registry.get(s, good).data = [{"manifest": "a.parquet", "labelled_until": None},
                                      {"manifest": "b.parquet", "labelled_until": seen_until.isoformat()}]
    result = compare(db, good, image_dir=tmp_path / "store")
    assert result["audits"] == 10 and result["since"] == seen_until.isoformat()

    with db.session() as s:  # trained on every audit there is: nothing left to judge it on
        registry.get(s, good).data = [{"manifest": "b.parquet", "labelled_until": utcnow().isoformat()}]
    result = compare(db, good, image_dir=tmp_path / "store")
    assert (result["audits"], result["verdict"]) == (0, "no audits")
    with db.session() as s, pytest.raises(Conflict, match="no resolved audit .* nothing to compare "
                                                          r"on \(--force promotes it anyway\)"):
        registry.promote(s, good)


def test_missing_photos_are_left_out_and_said(db, tmp_path, models):
    good, bad = models
    image_dir = warehouse(db, tmp_path)
    for code in ("r2-00", "r4-00"):
        (tmp_path / "abid" / "bin-images" / f"{code}.jpg").unlink()
    with db.session() as s:
        registry.promote(s, bad)
    result = compare(db, good, image_dir=image_dir)
    assert result["audits"] == 18 and result["skipped"] == {"photo missing": 2}


def test_compare_and_promote_commands(db, db_url, tmp_path, models, capsys):
    good, bad = models
    image_dir = warehouse(db, tmp_path)
    assert main(["model", "promote", good, "--db", db_url]) == 0
    assert capsys.readouterr().out.strip() == f"model {good} is active"
    assert main(["model", "compare", bad, "--db", db_url, "--image-dir", str(image_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{bad} against {good}: 20 audits" in out and "verdict: not better" in out
    assert "exact accuracy             candidate 20.0% [" in out
    assert "difference -60.0% [-" in out
    assert main(["model", "promote", bad, "--db", db_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"binventory: error: model {bad} is not better than {good}: exact accuracy")
    assert main(["model", "promote", bad, "--db", db_url, "--force"]) == 0
    assert capsys.readouterr().out.strip() == f"model {bad} is active; {good} is retired"
    assert main(["model", "compare", good, "--db", db_url, "--against", "nope"]) == 2
    assert "no model 'nope' in the registry" in capsys.readouterr().err

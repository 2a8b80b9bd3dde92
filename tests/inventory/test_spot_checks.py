"""Spot checks: recounts of bins the policy confirmed, drawn at random (SQLite and PostgreSQL)."""
from sqlalchemy import select

from binventory.cli import main
from binventory.inventory import audit
from binventory.inventory.models import AuditTask, Bin
from tests.inventory.helpers import COUNTS, load, make_dataset
from tests.inventory.test_outcome import photo


def test_spot_checks_recount_confirmed_bins_without_a_task(db, tmp_path):
    load(db, make_dataset(tmp_path / "abid", images=False))
    confirmed = [f"bin{i:03d}" for i in range(6)]
    for code in confirmed:
        photo(db, code, "confirm")
    photo(db, "bin006", "flag")        # doubted: a task of its own already
    photo(db, "bin007", "confirm")
    photo(db, "bin007", "review", 1)   # its latest photo was not confirmed
    photo(db, "bin000", "confirm", 1)  # two confirmations: still one bin
    with db.session() as s:
        first = audit.open_spot_checks(s, 4, seed=1)
    assert len(first) == 4 and {t.reason for t in first} == {audit.SPOT_CHECK}
    assert {t.bin.code for t in first} <= set(confirmed)
    assert all(t.priority == 0.0 and t.expected_quantity == COUNTS[t.bin.code] for t in first)
    with db.session() as s:  # the rest only: a bin with an open task is not drawn again
        rest = audit.open_spot_checks(s, 10, seed=1)
    assert sorted(t.bin.code for t in first + rest) == confirmed
    with db.session() as s:
        assert audit.open_spot_checks(s, 3) == []
        task, _ = audit.resolve(s, rest[0].id, counted_quantity=COUNTS[rest[0].bin.code], actor="ana")
    assert task.status == "resolved"
    with db.session() as s:  # recounted, the bin may be drawn again
        [again] = audit.open_spot_checks(s, 1)
    assert again.bin_id == rest[0].bin_id


def test_spot_check_command(db, db_url, tmp_path, capsys):
    load(db, make_dataset(tmp_path / "abid", images=False))
    photo(db, "bin001", "confirm")
    photo(db, "bin002", "confirm")
    assert main(["inventory", "spot-check", "--db", db_url, "--n", "5", "--seed", "0"]) == 0
    assert "2 spot checks opened (only 2 confirmed bins without an open task)" in capsys.readouterr().out
    with db.reader() as s:
        codes = s.scalars(select(Bin.code).join(AuditTask, AuditTask.bin_id == Bin.id)
                          .where(AuditTask.reason == audit.SPOT_CHECK))
        assert sorted(codes) == ["bin001", "bin002"]
    assert main(["inventory", "spot-check", "--db", db_url, "--n", "0"]) == 2

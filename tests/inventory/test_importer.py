"""import-abid: bulk, idempotent, and never overwriting what audits changed."""
import json

import pytest
from sqlalchemy import select

from binventory import BinventoryError
from binventory.cli import main
from binventory.inventory.models import Bin, BinContent, Sku
from binventory.inventory.importer import import_abid
from tests.inventory.helpers import COUNTS, load, make_dataset, snapshot


def test_import_loads_bins_skus_and_quantities(db, tmp_path):
    root = make_dataset(tmp_path / "abid", images=False)
    report = load(db, root)
    assert (report.bins_added, report.bins_existing, report.errors) == (len(COUNTS), 0, [])
    with db.reader() as s:
        totals = {b.code: sum(c.quantity for c in b.contents) for b in s.scalars(select(Bin))}
        sku = s.scalar(select(Sku).where(Sku.asin == "B00TEST000"))
        assert (sku.length, sku.width, sku.height, sku.weight) == (4.0, 3.0, 2.0, 0.5)
    assert totals == COUNTS


def test_import_twice_changes_nothing(db, tmp_path):
    root = make_dataset(tmp_path / "abid", images=False)
    load(db, root)
    before = snapshot(db)
    again = load(db, root)
    assert (again.bins_added, again.bins_existing, again.contents_added) == (0, len(COUNTS), 0)
    assert snapshot(db) == before


def test_reimport_keeps_quantities_that_audits_changed(db, tmp_path):
    root = make_dataset(tmp_path / "abid", images=False)
    load(db, root)
    with db.session() as s:
        line = s.scalar(select(BinContent).join(Bin).where(Bin.code == "bin005").limit(1))
        line.quantity += 4
    changed = snapshot(db)
    load(db, root)
    assert snapshot(db) == changed


def test_bad_files_are_reported_and_the_rest_imported(db, tmp_path):
    root = make_dataset(tmp_path / "abid", images=False)
    (root / "metadata" / "broken.json").write_text("{not json")
    (root / "metadata" / "negative.json").write_text(json.dumps({"EXPECTED_QUANTITY": -1}))
    report = load(db, root)
    assert report.bins_added == len(COUNTS)
    assert sorted(name for name, _ in report.errors) == ["broken.json", "negative.json"]
    assert "broken.json" in report.describe()


def test_missing_folder_is_a_clear_error(db, tmp_path):
    with pytest.raises(BinventoryError, match="metadata folder not found"):
        load(db, tmp_path / "nowhere")


def test_cli_import_with_processes(db_url, tmp_path, capsys):
    root = make_dataset(tmp_path / "abid", images=False)
    assert main(["inventory", "import-abid", str(root), "--db", db_url, "--workers", "2"]) == 0
    assert f"{len(COUNTS)} bins added" in capsys.readouterr().out


def test_injected_errors_are_known_bounded_and_reproducible(db, tmp_path):
    from binventory.inventory.db import Database

    counts = {f"bin{i:03d}": i % 6 for i in range(60)}
    root = make_dataset(tmp_path / "abid", counts, images=False)
    report = import_abid(db, root, workers=1, inject_errors=0.3, seed=7, progress=False)
    assert 8 <= len(report.injected) <= 30
    assert all(d in (-3, -2, -1, 1, 2, 3) for d in report.injected.values())
    with db.reader() as s:
        totals = {b.code: sum(c.quantity for c in b.contents) for b in s.scalars(select(Bin))}
        assert all(c.quantity >= 0 for c in s.scalars(select(BinContent)))
    assert totals == {code: n + report.injected.get(code, 0) for code, n in counts.items()}
    other = Database.open(f"sqlite:///{tmp_path / 'other.db'}", create=True)
    again = import_abid(other, root, workers=2, inject_errors=0.3, seed=7, progress=False)
    assert again.injected == report.injected  # the same bins and errors, whatever the workers


def test_inject_errors_share_must_be_a_share(db, tmp_path):
    root = make_dataset(tmp_path / "abid", images=False)
    with pytest.raises(BinventoryError, match="share of the bins"):
        import_abid(db, root, inject_errors=1.5, progress=False)


def _records():
    from binventory.data.abid import BinRecord, SkuRecord

    return [BinRecord(f"bin{i:03d}", 0 if i % 4 == 0 else 2,
                      [] if i % 4 == 0 else [SkuRecord(f"B{i:03d}", f"item {i}", 2, 1.0 + i, 2.0, 3.0)])
            for i in range(40)]


def _injected(records, share=1.0, seed=3):
    from binventory.inventory.importer import _Injector

    inject = _Injector(share, seed)
    kept = [r for r in (inject(r) for r in records) if r is not None] + inject.finish()
    return inject.injected, {r.image_id: (r.expected_quantity, r.skus) for r in kept}


def test_an_empty_bins_phantom_line_does_not_depend_on_the_file_order():
    import random

    shuffled = _records()
    random.Random(0).shuffle(shuffled)
    deltas, records = _injected(_records())
    assert len(deltas) == 40 and len(records) == 40
    for other in (_records()[::-1], shuffled):
        assert _injected(other) == (deltas, records)
    real = {f"B{i:03d}" for i in range(40) if i % 4}
    for code in (f"bin{i:03d}" for i in range(0, 40, 4)):  # the empty bins
        expected, (line,) = records[code]
        assert line.asin in real and line.quantity == expected == deltas[code] and 1 <= expected <= 3


def test_an_implausible_quantity_is_skipped_with_its_reason(db, tmp_path):
    from tests.conftest import metadata_json, write_item

    root = make_dataset(tmp_path / "abid", images=False)
    huge = metadata_json(3)
    huge["EXPECTED_QUANTITY"] = 10**12  # a PostgreSQL integer column could not even hold it
    write_item(root, "huge", meta=huge)
    report = load(db, root)
    assert report.bins_added == len(COUNTS)
    assert report.errors == [("huge.json", "EXPECTED_QUANTITY of 1,000,000,000,000 is not "
                                           "plausible: more than 10,000 items in one bin")]

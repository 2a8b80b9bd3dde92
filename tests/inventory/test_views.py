"""The numbers the CLI's status and the dashboard show, on SQLite and PostgreSQL."""
from binventory.inventory import audit
from binventory.inventory.views import overview, record_accuracy_by_day
from tests.inventory.helpers import COUNTS, load, make_dataset
from tests.inventory.test_audit import observe


def test_overview_and_record_accuracy(db, tmp_path):
    load(db, make_dataset(tmp_path / "abid", images=False))
    agreed, differed = observe(db, "bin003"), observe(db, "bin005", reason="review")
    with db.session() as s:
        audit.resolve(s, agreed, counted_quantity=3, actor="ana")
        audit.resolve(s, differed, counted_quantity=1, actor="ana", reason_code="miscount")
    with db.reader() as s:
        o = overview(s)
        days = record_accuracy_by_day(s)
    assert (o["bins"], o["bins_observed"], o["observations"]) == (len(COUNTS), 2, 2)
    assert o["decisions"] == {"confirm": 0, "flag": 1, "review": 1}
    assert o["tasks"]["resolved"] == 2 and o["adjustments"] == 2
    # Two bins verified by a recount today: one record was right.
    assert [(d["verified"], d["right"], d["accuracy"]) for d in days] == [(2, 1, 0.5)]

"""The numbers the CLI's status and the dashboard show, on SQLite and PostgreSQL."""
import pytest

from binventory.inventory import audit
from binventory.inventory.views import overview, records_by_day
from tests.inventory.helpers import COUNTS, load, make_dataset
from tests.inventory.test_audit import observe
from tests.inventory.test_outcome import photo


def test_overview_and_records_by_day(db, tmp_path):
    load(db, make_dataset(tmp_path / "abid", images=False))
    agreed, differed = observe(db, "bin003"), observe(db, "bin005", reason="review")
    observe(db, "bin002")
    with db.session() as s:
        audit.resolve(s, agreed, counted_quantity=3, actor="ana")
        audit.resolve(s, differed, counted_quantity=1, actor="ana", reason_code="miscount")
    with db.reader() as s:
        o = overview(s)
        days = records_by_day(s)
    assert (o["bins"], o["bins_observed"], o["observations"]) == (len(COUNTS), 3, 3)
    assert o["decisions"] == {"confirm": 0, "flag": 2, "review": 1}
    assert o["tasks"]["resolved"] == 2 and o["adjustments"] == 2
    # The flagged bin recounted is no longer waiting: one flag and no review left.
    assert o["waiting"] == {"flag": 1, "review": 0}
    # Two bins recounted today, one record right; no photo confirmed one; bin002 still flagged.
    assert [(d["confirmed_by_photo"], d["recounted"], d["recount_right"], d["open_discrepancies"])
            for d in days] == [(0, 2, 1, 1)]


def test_records_by_day_count_bins_not_photos(db, tmp_path):
    load(db, make_dataset(tmp_path / "abid", images=False))
    for n in range(3):  # one bin confirmed by three photos in a day is one bin confirmed
        photo(db, "bin001", "confirm", n)
    photo(db, "bin002", "confirm")
    photo(db, "bin004", "confirm")
    photo(db, "bin004", "flag", 1)  # its last word that day: a flag, not a confirmation
    with db.reader() as s:
        [today] = records_by_day(s)
    assert (today["confirmed_by_photo"], today["open_discrepancies"]) == (2, 1)


@pytest.mark.slow
def test_a_page_of_the_audit_queue_costs_the_same_few_queries_at_any_size(db, tmp_path):
    """No query per task for its bin (GET /v1/audit-tasks?limit=50 issued 52)."""
    import warnings

    from sqlalchemy import event

    from binventory.app import create_app
    from binventory.inventory.policy import Policy
    from binventory.inventory.tokens import create_token
    from binventory.serving.predictor import Predictor
    from binventory.serving.service import Settings
    from tests.tiny import save_tiny_model

    with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
        warnings.filterwarnings("ignore", message=".*httpx2")
        from fastapi.testclient import TestClient

    load(db, make_dataset(tmp_path / "abid", {f"b{i:02d}": i % 6 for i in range(60)}, images=False))
    for i in range(50):
        observe(db, f"b{i:02d}", priority=1.0 + i / 100)
    with db.session() as s:
        token = create_token(s, "ana")
    predictor = Predictor.load(save_tiny_model(tmp_path / "model.pt"))
    app = create_app(predictor, Settings(), db=db, policy=Policy.default(), image_dir=tmp_path / "photos")
    statements = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    counts = {}
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        for limit in (1, 10, 50):
            statements.clear()
            page = client.get("/v1/audit-tasks", params={"limit": limit}).json()
            assert len(page["tasks"]) == limit and page["total"] == 50
            assert {t["bin"] for t in page["tasks"]} <= {f"b{i:02d}" for i in range(50)}
            counts[limit] = len(statements)
    assert counts[1] == counts[10] == counts[50] <= 4, counts

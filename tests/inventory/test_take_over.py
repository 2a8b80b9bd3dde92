"""A task one person has claimed is theirs: another person's resolve or claim answers 409 unless
it says ``take_over``, which the task records (``taken_over_from``). The ledger's rows name their
bin. On SQLite and PostgreSQL, through the API."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from binventory.inventory.models import Adjustment
from binventory.inventory.tokens import create_token
from tests.inventory.test_api import api, predictor, upload  # noqa: F401 (fixtures)


@pytest.fixture
def carol(api, db):  # noqa: F811
    with db.session() as s:
        return {"Authorization": f"Bearer {create_token(s, 'carol')}"}


def claimed_task(api, code="bin005") -> dict:  # noqa: F811
    task = upload(api, code).json()["task"]
    r = api.post(f"/v1/audit-tasks/{task['id']}/claim", json={})
    assert (r.status_code, r.json()["assignee"]) == (200, "robot-1")
    return task


def ledger_rows(db) -> int:
    with db.reader() as s:
        return s.scalar(select(func.count(Adjustment.id)))


def test_resolving_someone_elses_claim_is_refused(api, carol, db):  # noqa: F811
    task = claimed_task(api)
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", headers=carol,
                 json={"counted_quantity": 3, "reason_code": "miscount"})
    assert (r.status_code, r.json()["status"]) == (409, "conflict")
    assert "claimed by robot-1" in r.json()["detail"] and "take_over" in r.json()["detail"]
    after = api.get(f"/v1/audit-tasks/{task['id']}").json()
    assert (after["status"], after["assignee"], after["counted_quantity"]) == ("in_progress", "robot-1", None)
    assert ledger_rows(db) == 0


def test_a_take_over_resolves_and_is_recorded(api, carol):  # noqa: F811
    task = claimed_task(api)
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", headers=carol,
                 json={"counted_quantity": 3, "reason_code": "miscount", "take_over": True})
    assert r.status_code == 200, r.text
    done = r.json()["task"]
    assert (done["status"], done["resolved_by"], done["taken_over_from"]) == ("resolved", "carol", "robot-1")
    assert api.get(f"/v1/audit-tasks/{task['id']}").json()["taken_over_from"] == "robot-1"
    rows = api.get("/v1/ledger").json()
    assert [(a["bin"], a["actor"], a["delta"]) for a in rows] == [("bin005", "carol", -2)]


def test_the_claimer_resolves_without_a_take_over(api):  # noqa: F811
    task = claimed_task(api)
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", json={"counted_quantity": 5})
    assert r.status_code == 200, r.text
    assert r.json()["task"]["taken_over_from"] is None


def test_an_unclaimed_task_needs_no_take_over(api, carol):  # noqa: F811
    task = upload(api, "bin005").json()["task"]
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", headers=carol, json={"counted_quantity": 5})
    assert r.status_code == 200 and r.json()["task"]["taken_over_from"] is None


def test_claiming_someone_elses_task_needs_a_take_over(api, carol):  # noqa: F811
    task = claimed_task(api)
    r = api.post(f"/v1/audit-tasks/{task['id']}/claim", headers=carol, json={})
    assert r.status_code == 409 and "claimed by robot-1" in r.json()["detail"]
    r = api.post(f"/v1/audit-tasks/{task['id']}/claim", headers=carol, json={"take_over": True})
    assert r.status_code == 200, r.text
    assert (r.json()["assignee"], r.json()["taken_over_from"]) == ("carol", "robot-1")
    # Now robot-1 is the one who needs the take-over.
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", json={"counted_quantity": 5})
    assert r.status_code == 409 and "claimed by carol" in r.json()["detail"]


def test_assigning_an_open_task_to_someone_else(api, carol):  # noqa: F811
    task = upload(api, "bin005").json()["task"]
    r = api.post(f"/v1/audit-tasks/{task['id']}/claim", json={"assignee": "carol"})
    assert (r.status_code, r.json()["assignee"]) == (200, "carol")
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", headers=carol, json={"counted_quantity": 5})
    assert r.status_code == 200

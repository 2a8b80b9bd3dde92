"""The audit queue as floor staff use it, through FastAPI's TestClient: read-only when signed out,
a reason that must be picked, claim and assign, take-over, the filters, the ledger page and its CSV,
and the bins page's filters."""
from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import func, select

from binventory.inventory.models import Adjustment, AuditTask
from binventory.inventory.tokens import create_token
from tests.web.conftest import N_BINS, UNSEEN_BIN, Inventory, TestClient


@pytest.fixture
def alice(client, inventory):
    client.cookies.clear()
    r = client.post("/login", data={"token": inventory.token, "next": "/audit"}, follow_redirects=False)
    assert r.status_code == 303
    yield client
    client.cookies.clear()


@pytest.fixture(scope="module")
def carol(inventory) -> dict:
    with inventory.db.session() as s:
        return {"Authorization": f"Bearer {create_token(s, 'carol')}"}


def open_tasks(inventory: Inventory) -> list[AuditTask]:
    with inventory.db.reader() as session:
        return list(session.scalars(select(AuditTask).where(AuditTask.status == "open",
                                                            AuditTask.expected_quantity > 0)
                                    .order_by(AuditTask.id)))


def task_html(text: str, task_id: int) -> str:
    return text.split(f'id="task-{task_id}"')[1].split("</li>")[0]


def test_signed_out_the_queue_is_read_only(client):
    client.cookies.clear()
    text = client.get("/audit").text
    assert text.count('class="task"') >= 2
    assert "<form method=\"post\"" not in text.split("<ol")[1]  # no claim or resolve form
    assert 'id="read-only"' in text and "sign in</a> to claim and resolve" in text


def test_the_reason_has_no_default_and_is_required(alice, inventory):
    task = open_tasks(inventory)[0]
    text = task_html(alice.get("/audit").text, task.id)
    select_html = re.search(r'<select name="reason_code" required>(.*?)</select>', text, re.S).group(1)
    assert re.search(r'<option value="" disabled selected>Pick a reason', select_html)
    assert select_html.count("selected") == 1
    r = alice.post(f"/audit/{task.id}/resolve", data={"counted_quantity": "3", "back": "/audit"})
    assert r.status_code == 422
    error = re.search(r'<p class="error" role="alert">(.*?)</p>', task_html(r.text, task.id)).group(1)
    assert error == "Pick a reason: “count agrees with the record”, or why the count differs."


def test_claim_then_resolve_from_the_page(alice, inventory):
    task = open_tasks(inventory)[0]
    r = alice.post(f"/audit/{task.id}/claim", data={"back": "/audit?kind=&bin="}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, f"/audit#task-{task.id}")
    assert "claimed by <b>you</b>" in task_html(alice.get("/audit").text, task.id)
    r = alice.post(f"/audit/{task.id}/resolve", data={"counted_quantity": str(task.expected_quantity),
                                                      "reason_code": "count_confirmed"}, follow_redirects=False)
    assert r.status_code == 303
    with inventory.db.reader() as session:
        done = session.get(AuditTask, task.id)
        assert (done.status, done.assignee, done.resolved_by) == ("resolved", "alice", "alice")


def test_assigning_a_task_to_someone(alice, inventory):
    task = open_tasks(inventory)[0]
    alice.post(f"/audit/{task.id}/claim", data={"assignee": "dave"})
    assert "claimed by <b>dave</b>" in task_html(alice.get("/audit?status=in_progress").text, task.id)


def test_someone_elses_claim_needs_a_take_over(alice, inventory, carol):
    task = open_tasks(inventory)[0]
    assert alice.post(f"/v1/audit-tasks/{task.id}/claim", json={}, headers=carol).json()["assignee"] == "carol"
    text = task_html(alice.get("/audit?status=in_progress").text, task.id)
    assert "claimed by <b>carol</b>" in text and "take over from carol" in text
    form = {"counted_quantity": str(task.expected_quantity + 1), "reason_code": "found"}
    r = alice.post(f"/audit/{task.id}/resolve", data=form)
    assert r.status_code == 409
    assert re.search(r'role="alert">carol has claimed task \d+\. Tick “take over from carol”', task_html(r.text, task.id))
    with inventory.db.reader() as session:
        assert session.get(AuditTask, task.id).status == "in_progress"
    r = alice.post(f"/audit/{task.id}/resolve", data={**form, "take_over": "1"}, follow_redirects=False)
    assert r.status_code == 303
    with inventory.db.reader() as session:
        done = session.get(AuditTask, task.id)
        assert (done.status, done.resolved_by, done.taken_over_from) == ("resolved", "alice", "carol")
    assert "taken over from carol" in task_html(alice.get("/audit?status=resolved").text, task.id)


def test_queue_filters(client, inventory):
    def shown(query: str) -> list[str]:
        return re.findall(r'<li class="task" id="task-\d+">.*?<b>Bin (\w+)</b></a> <span title="[^"]*"><span class="tag (\w+)"',
                          client.get("/audit?" + query).text, re.S)

    every = shown("status=all")
    assert {kind for _, kind in every} == {"flag", "review"}
    for kind in ("flag", "review"):
        assert shown(f"status=all&kind={kind}") == [b for b in every if b[1] == kind]
    assert shown("status=all&bin=0001") == [b for b in every if b[0].startswith("0001")]
    assert len(shown("status=all&bin=0001")) > 1  # a prefix, as the Bins page does
    priorities = [float(p) for p in re.findall(r"priority ([\d.]+)", client.get("/audit?status=all").text)]
    levels = sorted(set(priorities))  # shown rounded: cut between two of them
    cut = (levels[len(levels) // 2 - 1] + levels[len(levels) // 2]) / 2
    high = re.findall(r"priority ([\d.]+)", client.get(f"/audit?status=all&min_priority={cut}").text)
    assert len(high) == sum(p >= cut for p in priorities) and all(float(p) >= cut for p in high)
    assert "is not a priority" in client.get("/audit?min_priority=lots").text
    resolved = shown("status=resolved&code=found")
    assert len(resolved) >= 1 and shown("status=resolved&code=damaged") == []


def test_ledger_page_and_csv(client, inventory):
    with inventory.db.reader() as session:
        n = session.scalar(select(func.count(Adjustment.id)))
    text = client.get("/ledger").text
    assert n >= 1 and text.count("<tr><td>") == n
    rows = text.split('id="ledger"')[1].split("</tbody>")[0].split("</tr>")[1:-1]
    assert all(re.search(r'<td><a href="/bins/(\d+)">\1</a></td>', row) for row in rows)
    oldest = rows[-1]  # the fixture's resolution
    assert "bob" in oldest and "found" in oldest and "+1" in oldest
    r = client.get("/ledger.csv")
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="ledger.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == n and {"bin", "sku", "delta", "actor", "reason_code", "created_at"} <= set(rows[0])
    first = client.get("/v1/ledger").json()[0]
    assert (rows[0]["bin"], rows[0]["actor"], int(rows[0]["delta"])) == (first["bin"], first["actor"], first["delta"])
    assert client.get("/ledger?bin=zzz").text.count("<tr><td>") == 0
    assert list(csv.DictReader(io.StringIO(client.get("/ledger.csv?bin=zzz").text))) == []


def test_ledger_csv_keeps_formulas_as_text(client, inventory):
    from binventory.inventory import audit

    with inventory.db.session() as session:
        task = session.scalars(select(AuditTask).where(AuditTask.status == "open", AuditTask.expected_quantity > 0)).first()
        audit.resolve(session, task.id, counted_quantity=task.expected_quantity + 1, actor="=HYPERLINK(1)",
                      reason_code="found")
    rows = list(csv.DictReader(io.StringIO(client.get("/ledger.csv").text)))
    assert rows[0]["actor"] == "'=HYPERLINK(1)" and rows[0]["delta"] == "1"


def test_bins_page_filters(client: TestClient):
    def codes(query: str) -> list[str]:
        return re.findall(r'<tr><td><a href="/bins/(\w+)">', client.get("/bins?" + query).text)

    assert len(codes("")) == N_BINS + 1
    assert codes("seen=no") == [UNSEEN_BIN]
    assert len(codes("seen=yes")) == N_BINS
    with_task = codes("task=yes")
    assert with_task and set(with_task) | set(codes("task=no")) == set(codes(""))
    by_decision = {d: codes(f"decision={d}") for d in ("confirm", "flag", "review")}
    assert all(by_decision.values()) and sum(map(len, by_decision.values())) == N_BINS
    assert "No bin matches these filters" in client.get("/bins?seen=no&task=yes").text

"""The dashboard's routes through FastAPI's TestClient: pages, empty states, pagination, login,
the resolve form's errors (a clear message on the page, never a 500) and the run-folder files."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from binventory.inventory.db import Database
from binventory.inventory.models import Adjustment, AuditTask, Model, utcnow
from binventory.inventory.policy import Policy
from binventory.web import pages, routes, runs
from tests.web.conftest import N_BINS, UNSEEN_BIN, Inventory, TestClient, make_app


def open_task(inventory: Inventory, min_expected: int = 1) -> AuditTask:
    with inventory.db.reader() as session:
        return session.scalars(select(AuditTask).where(AuditTask.status == "open",
                                                       AuditTask.expected_quantity >= min_expected)
                               .order_by(AuditTask.id)).first()


def ledger_size(inventory: Inventory) -> int:
    with inventory.db.reader() as session:
        return session.scalar(select(func.count(Adjustment.id)))


def login(client, inventory) -> None:
    r = client.post("/login", data={"token": inventory.token, "next": "/audit"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/audit"


@pytest.mark.parametrize("path", ["/", "/audit", "/audit?status=all", "/audit?status=resolved", "/bins",
                                  "/bins/00003", f"/bins/{UNSEEN_BIN}", "/model", "/login"])
def test_pages_render(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<link rel="stylesheet" href="/static/app.css">' in r.text
    assert "http://" not in r.text.replace("http://testserver", "")  # nothing from elsewhere


def test_static_css_is_served(client):
    r = client.get("/static/app.css")
    assert r.status_code == 200 and "text/css" in r.headers["content-type"]


def test_overview_numbers(client, inventory, run_files):
    text = client.get("/").text
    assert re.search(r"<b>15</b><span>bins observed</span><small>of 16 in the inventory", text)
    assert "<svg" in text and run_files["name"] in text
    assert f"{run_files['test_accuracy']:.1%}" in text  # the trained artifact's own test figure


def test_audit_queue_by_priority_with_filters(client):
    text = client.get("/audit?status=all").text
    priorities = [float(p) for p in re.findall(r"priority ([\d.]+)", text)]
    assert len(priorities) >= 2 and priorities == sorted(priorities, reverse=True)
    assert 'src="/v1/observations/' in text and 'class="bars"' in text
    resolved = client.get("/audit?status=resolved").text
    assert resolved.count('class="task"') == 1 and "counted <b>" in resolved
    assert "No open or claimed audit tasks match (bins starting with nope)" in client.get("/audit?bin=nope").text
    assert "No open audit tasks match (bins starting with 99999)" in client.get(f"/audit?status=open&bin={UNSEEN_BIN}").text
    assert client.get("/audit?status=bogus&page=x").status_code == 200  # lenient: defaults


def test_pagination(client, monkeypatch):
    monkeypatch.setattr(routes, "BIN_PAGE_SIZE", 5)
    text = client.get("/bins?page=2").text
    assert f"6&ndash;10 of {N_BINS + 1} bins · page 2 of 4" in text
    assert 'href="?page=1" rel="prev"' in text and 'href="?page=3" rel="next"' in text
    assert text.count("<tr><td><a href=\"/bins/") == 5
    assert "past the last page" in client.get("/bins?page=99").text
    assert "1&ndash;1 of 1 bins" in client.get("/bins?q=00015").text
    assert "No bin code starts with" in client.get("/bins?q=zzz").text
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    text = client.get("/audit?status=all&page=2").text
    assert "3&ndash;4 of" in text and "status=all" in text and text.count('class="task"') == 2


def test_unknown_bin_is_a_404_page(client):
    r = client.get("/bins/nope")
    assert r.status_code == 404 and "unknown bin &#39;nope&#39;" in r.text


def test_resolve_needs_login(client, inventory):
    client.cookies.clear()
    task = open_task(inventory)
    before = ledger_size(inventory)
    r = client.post(f"/audit/{task.id}/resolve", data={"counted_quantity": "1", "reason_code": "found"})
    assert r.status_code == 401 and "Sign in with an API token" in r.text
    client.cookies.set(routes.COOKIE, "bvt_not-a-token")
    assert client.post(f"/audit/{task.id}/resolve", data={"counted_quantity": "1"}).status_code == 401
    client.cookies.clear()
    assert ledger_size(inventory) == before and open_task(inventory).id == task.id


def test_login_sets_a_strict_httponly_cookie(client, inventory):
    client.cookies.clear()
    r = client.post("/login", data={"token": "bvt_wrong"})
    assert r.status_code == 401 and "unknown or revoked" in r.text
    r = client.post("/login", data={"token": inventory.token, "next": "//evil.example"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{routes.COOKIE}={inventory.token};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "signed in as <b>alice</b>" in client.get("/").text
    # The API's writes take the same cookie.
    task = open_task(inventory, 0)
    r = client.post(f"/v1/audit-tasks/{task.id}/claim", json={})
    assert r.status_code == 200 and r.json()["assignee"] == "alice"
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and routes.COOKIE in r.headers["set-cookie"]
    client.cookies.clear()


@pytest.mark.parametrize("form, status, message", [
    ({"counted_quantity": "many"}, 422, "The counted quantity must be a whole number, 0 or more (got &#39;many&#39;)"),
    ({"counted_quantity": "-2"}, 422, "must be a whole number"),
    ({"counted_quantity": ""}, 422, "got &#39;nothing&#39;"),
    ({"counted_quantity": "40"}, 422, "Pick a reason"),
    ({"counted_quantity": "40", "reason_code": "bogus"}, 422, "Pick a reason"),
    ({"counted_quantity": "40", "reason_code": "count_confirmed"}, 422,
     "You counted 40 but the record says"),
])
def test_bad_form_input_is_explained(client, inventory, form, status, message):
    login(client, inventory)
    task = open_task(inventory)
    before = ledger_size(inventory)
    r = client.post(f"/audit/{task.id}/resolve", data=form)
    assert r.status_code == status and message in r.text
    assert 'role="alert"' in r.text and f'id="task-{task.id}"' in r.text
    assert ledger_size(inventory) == before
    client.cookies.clear()


def test_resolve_writes_the_ledger(client, inventory):
    login(client, inventory)
    task = open_task(inventory)
    r = client.post(f"/audit/{task.id}/resolve", data={
        "counted_quantity": str(task.expected_quantity + 3), "reason_code": "found", "note": "behind a box",
        "back": "/audit?page=1"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith(f"?resolved={task.id}")
    page = client.get(r.headers["location"]).text
    assert f"Audit task {task.id} resolved" in page and "its adjustments" in page
    ledger = page.split('id="ledger"')[1]
    assert "+3" in ledger and "found" in ledger and "alice" in ledger
    # Twice: the task is no longer open, said on the page.
    again = client.post(f"/audit/{task.id}/resolve", data={"counted_quantity": "1", "reason_code": "found"})
    assert again.status_code == 409 and "already resolved" in again.text
    missing = client.post("/audit/999999/resolve", data={"counted_quantity": "1", "reason_code": "found"})
    assert missing.status_code == 404 and "Task 999999 does not exist" in missing.text
    client.cookies.clear()


def test_model_page_and_run_files(client, predictor, run_files):
    mid = predictor.model_id
    text = client.get("/model").text
    assert text.count('class="chart"') >= 3 and 'class="confusion"' in text
    diagnostics = text.split('id="diagnostics"')[1]
    assert len(run_files["rules"]) >= 5 and all(rule in diagnostics for rule in run_files["rules"])
    assert f"/model/{mid}/report.html" in text
    assert "Decision thresholds in use" in text
    r = client.get(f"/model/{mid}/eval/eval-test/confusion_challenge.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    r = client.get(f"/model/{mid}/report.html")
    assert r.status_code == 200 and "sandbox" in r.headers["content-security-policy"]
    for bad in [f"/model/{mid}/eval/eval-test/metrics.json", f"/model/{mid}/eval/eval-test/..%2Fmodel.pt",
                f"/model/{mid}/eval/..%2F..%2Fetc/confusion_x.png", "/model/nope/eval/eval-test/confusion_challenge.png",
                "/model/nope/report.html"]:
        assert client.get(bad).status_code == 404, bad
    assert client.get("/model?version=nope").status_code == 404


def test_empty_states(empty_client):
    text = empty_client.get("/").text
    assert "The inventory is empty" in text and "No verified bins yet" in text
    assert "No model has judged this inventory yet" in text
    assert "No open audit tasks" in empty_client.get("/audit").text
    assert "No resolved audit tasks" in empty_client.get("/audit?status=resolved").text
    assert "The inventory has no bins yet" in empty_client.get("/bins").text
    assert "No model has judged this inventory yet" in empty_client.get("/model").text


def test_model_page_without_run_files(tmp_path, predictor):
    db = Database.open(f"sqlite:///{tmp_path / 'inventory.db'}", create=True)
    (tmp_path / "run").mkdir()
    with db.session() as session:
        session.add_all([Model(version="bare", path=str(tmp_path / "run" / "model.pt"), metrics={},
                               last_used_at=utcnow()),
                         Model(version="gone", path="/nonexistent/run/model.pt", registered_at=utcnow(),
                               last_used_at=utcnow().replace(year=2000))])
    with TestClient(make_app(predictor, Inventory(db, Policy.default(), "", tmp_path))) as c:
        text = c.get("/model").text
        assert "No training curves" in text and "No evaluation report" in text
        assert "No diagnostics report" in text and "carries no evaluation metrics" in text
        assert "is not on this server" in c.get("/model?version=gone").text
    db.close()


def test_run_folder_readers(tmp_path):
    assert runs.load(None) == {"folder": None, "exists": False}
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\nnot json\n{"no": "epoch"}\n')
    (tmp_path / "eval-test").mkdir()
    (tmp_path / "eval-test" / "metrics.json").write_text("{broken")
    (tmp_path / "rules.json").write_text("[]")
    run = runs.load(str(tmp_path / "model.pt"))
    assert run["epochs"] == 1 and run["evaluations"][0]["readable"] is False
    assert run["diagnostics"] == {"report": False, "rules": [], "stopped_by": []}
    assert runs.headline({"val": {"accuracy": 0.5, "n": 3}}) == {
        "split": "validation", "protocol": None, "n": 3, "values": {"accuracy": 0.5},
        "cells": [{"key": "accuracy", "label": "exact count", "value": "50.0%",
                   "tip": "accuracy: share of photos whose count is exactly right"}]}
    assert runs.headline(None) == {} and runs.headline({"test": "x"}) == {}
    assert routes.bars({"0": 0.2, "1": 0.5, "2+": 0.3}, 1, 7)[2]["expected"] is True


def test_bars_mark_classes_as_count_classes_map_counts():
    udacity = {"1": 0.1, "2": 0.2, "3": 0.3, "4": 0.2, "5": 0.2}  # no overflow class
    marked = [(b["name"], b["expected"], b["predicted"]) for b in routes.bars(udacity, 5, 7)]
    assert marked[-1] == ("5", False, True) and not any(e for _, e, _ in marked)
    assert not any(b["expected"] for b in routes.bars(udacity, 3, 0))
    assert [b["name"] for b in routes.bars({"0": 0.5, "1": 0.1, "2+": 0.4}, 9, 2) if b["predicted"]] == ["2+"]
    assert not any(b["expected"] or b["predicted"] for b in routes.bars({"x": 1.0}, 1, 1))

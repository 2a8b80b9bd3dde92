"""The API's queue and bin filters, as the dashboard has them: flag or review, the reason given,
a minimum priority and a bin-code prefix for tasks; photographed, with an open task and the last
decision for bins. On SQLite and PostgreSQL."""
from __future__ import annotations

from tests.inventory.test_api import api, predictor, upload  # noqa: F401 (fixtures)


def test_task_filters(api):  # noqa: F811
    ids = {code: upload(api, code).json()["task"]["id"] for code in ("bin004", "bin005", "bin010")}
    every = api.get("/v1/audit-tasks").json()["tasks"]
    assert {t["bin"] for t in every} == set(ids)
    prefix = api.get("/v1/audit-tasks", params={"bin_prefix": "bin00"}).json()
    assert (prefix["total"], {t["bin"] for t in prefix["tasks"]}) == (2, {"bin004", "bin005"})
    for reason in ("flag", "review"):
        got = api.get("/v1/audit-tasks", params={"reason": reason}).json()["tasks"]
        assert [t["id"] for t in got] == [t["id"] for t in every if t["reason"] == reason]
    cut = sorted(t["priority"] for t in every)[1]
    high = api.get("/v1/audit-tasks", params={"min_priority": cut}).json()["tasks"]
    assert [t["id"] for t in high] == [t["id"] for t in every if t["priority"] >= cut]
    api.post(f"/v1/audit-tasks/{ids['bin005']}/resolve", json={"counted_quantity": 3, "reason_code": "miscount"})
    done = api.get("/v1/audit-tasks", params={"status": "resolved", "reason_code": "miscount"}).json()
    assert [t["id"] for t in done["tasks"]] == [ids["bin005"]]
    r = api.get("/v1/audit-tasks", params={"reason": "confirm"})
    assert r.status_code == 422 and "reason must be one of" in r.json()["detail"]


def test_bin_filters(api):  # noqa: F811
    upload(api, "bin004")
    codes = lambda **p: [b["bin"] for b in api.get("/v1/bins", params={"limit": 500, **p}).json()["bins"]]  # noqa: E731
    assert codes(observed=True) == ["bin004"]
    assert "bin004" not in codes(observed=False) and len(codes(observed=False)) == len(codes()) - 1
    decision = api.get("/v1/bins/bin004/observations").json()[0]["decision"]
    assert codes(decision=decision) == ["bin004"]
    assert codes(open_task=True) == (["bin004"] if decision != "confirm" else [])
    r = api.get("/v1/bins", params={"decision": "maybe"})
    assert r.status_code == 422 and "decision must be one of" in r.json()["detail"]

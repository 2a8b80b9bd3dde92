"""The inventory API on the service app: reads, the robot's upload, the audit workflow, and every
error path (401, 404, 409, 413, 415, 422), on SQLite and PostgreSQL."""
import warnings

import pytest

from binventory.app import create_app
from binventory.inventory.policy import Policy
from binventory.inventory.tokens import create_token, revoke_tokens
from binventory.inventory.verify import BlindVerifier
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from tests.conftest import bomb_jpeg
from tests.inventory.helpers import COUNTS, load, make_dataset
from tests.tiny import image_bytes, save_tiny_model

with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.load(save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt"))


@pytest.fixture
def api(db, tmp_path, predictor):
    load(db, make_dataset(tmp_path / "abid", images=False))
    with db.session() as s:
        token = create_token(s, "robot-1")
        create_token(s, "old")
    # Flag everything the model is not sure of: each upload opens a task to work with.
    policy = Policy(BlindVerifier(), t_confirm=0.99, t_flag=0.5)
    app = create_app(predictor, Settings(max_body_bytes=LIMIT), db=db, policy=policy,
                     image_dir=tmp_path / "photos")
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def upload(client, code="bin004", data=None, content_type="image/jpeg", headers=None):
    return client.post(f"/v1/bins/{code}/observations", content=data or image_bytes(4),
                       headers={"Content-Type": content_type, **(headers or {})})


def test_a_robot_uploads_a_photo_and_gets_the_decision(api, tmp_path):
    r = upload(api)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["bin"], body["expected_quantity"], body["decision"], body["duplicate"]) == \
        ("bin004", 4, "flag", False)
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-3
    assert body["task"]["status"] == "open" and body["task"]["variance"] == body["predicted_count"] - 4
    assert api.get(f"/v1/observations/{body['id']}/image").content == image_bytes(4)
    again = upload(api).json()
    assert (again["id"], again["duplicate"]) == (body["id"], True)
    history = api.get("/v1/bins/bin004/history").json()
    assert [o["id"] for o in history["observations"]] == [body["id"]]
    assert [t["id"] for t in history["tasks"]] == [body["task"]["id"]]


def test_bins_and_bin_contents(api):
    page = api.get("/v1/bins", params={"limit": 5, "offset": 5}).json()
    assert page["total"] == len(COUNTS)
    assert [b["bin"] for b in page["bins"]] == sorted(COUNTS)[5:10]
    detail = api.get("/v1/bins/bin005").json()
    assert detail["expected_quantity"] == 5
    assert {c["sku"]: c["quantity"] for c in detail["contents"]} == {"B00TEST000": 3, "B00TEST001": 2}
    assert api.get("/v1/bins", params={"q": "bin01"}).json()["total"] == 2


def test_resolving_through_the_api_writes_the_ledger(api):
    task = upload(api, "bin005").json()["task"]
    r = api.post(f"/v1/audit-tasks/{task['id']}/claim", json={})
    assert (r.status_code, r.json()["status"], r.json()["assignee"]) == (200, "in_progress", "robot-1")
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", json={"counted_quantity": 3,
                                                                 "reason_code": "miscount"})
    assert r.status_code == 200, r.text
    assert [(a["sku"], a["delta"]) for a in r.json()["adjustments"]] == [("B00TEST000", -2)]
    assert api.get("/v1/bins/bin005").json()["expected_quantity"] == 3
    assert [a["delta"] for a in api.get("/v1/ledger", params={"bin": "bin005"}).json()] == [-2]
    assert api.get("/v1/audit-tasks", params={"status": "resolved"}).json()["total"] == 1
    again = api.post(f"/v1/audit-tasks/{task['id']}/resolve", json={"counted_quantity": 3,
                                                                     "reason_code": "miscount"})
    assert (again.status_code, again.json()["status"]) == (409, "conflict")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}])
def test_writes_without_a_valid_token_get_401(api, headers):
    api.headers.pop("Authorization")
    r = upload(api, headers=headers)
    assert (r.status_code, r.json()["status"]) == (401, "unauthorized")
    assert api.post("/v1/audit-tasks/1/claim", json={}, headers=headers).status_code == 401
    assert api.get("/v1/bins/bin001").status_code == 200  # reads stay open


def test_a_revoked_token_gets_401(api, db):
    with db.session() as s:
        revoke_tokens(s, "robot-1")
    assert upload(api).status_code == 401


@pytest.mark.parametrize("case, status, code", [
    ("unknown_bin", 404, "not_found"), ("not_an_image", 415, "unsupported_media_type"),
    ("corrupt", 422, "truncated"), ("bomb", 422, "decompression_bomb"), ("huge", 413, "too_large"),
    ("png_lies", 415, "not_jpeg")])
def test_bad_uploads_get_clear_4xx(api, db, case, status, code):
    r = {"unknown_bin": lambda: upload(api, "nope"),
         "not_an_image": lambda: upload(api, data=b"{}", content_type="application/json"),
         "corrupt": lambda: upload(api, data=image_bytes(1)[:300]),
         "bomb": lambda: upload(api, data=bomb_jpeg()),
         "huge": lambda: upload(api, data=b"\xff\xd8" + b"0" * LIMIT),
         "png_lies": lambda: upload(api, data=b"hello, not a jpeg", content_type="image/png")}[case]()
    assert (r.status_code, r.json()["status"]) == (status, code), r.text
    assert api.get("/v1/bins/bin004/observations").json() == []  # nothing written


@pytest.mark.parametrize("body, status", [
    ({"counted_quantity": -1, "reason_code": "miscount"}, "invalid"),
    ({"counted_quantity": 2, "reason_code": "because"}, "invalid"),
    ({"counted_quantity": 2}, "invalid"),
    ({"counted_quantity": "many"}, "invalid_request"),
    ({}, "invalid_request")])
def test_bad_resolutions_get_422(api, body, status):
    task = upload(api).json()["task"]
    r = api.post(f"/v1/audit-tasks/{task['id']}/resolve", json=body)
    assert (r.status_code, r.json()["status"]) == (422, status), r.text
    assert api.get(f"/v1/audit-tasks/{task['id']}").json()["status"] == "open"


def test_unknown_things_get_404(api):
    for method, url in [("get", "/v1/bins/nope"), ("get", "/v1/bins/nope/history"),
                        ("get", "/v1/audit-tasks/999"), ("get", "/v1/observations/999/image"),
                        ("post", "/v1/audit-tasks/999/claim"), ("get", "/v1/ledger?bin=nope")]:
        r = api.request(method, url, json={} if method == "post" else None)
        assert (r.status_code, r.json()["status"]) == (404, "not_found"), url
    r = api.get("/v1/audit-tasks", params={"status": "bogus"})
    assert (r.status_code, r.json()["status"]) == (422, "invalid")


@pytest.fixture
def locked_api(db, tmp_path, predictor):
    """The API as ``binventory serve`` builds it when it listens beyond loopback: reads need a
    token too. Yields a client without credentials, the token, and one photo's observation."""
    load(db, make_dataset(tmp_path / "abid", images=False))
    with db.session() as s:
        token = create_token(s, "reader")
    policy = Policy(BlindVerifier(), t_confirm=0.99, t_flag=0.5)  # every upload opens a task
    app = create_app(predictor, Settings(), db=db, policy=policy, image_dir=tmp_path / "photos",
                     reads_need_token=True)
    with TestClient(app) as client:
        obs = upload(client, headers={"Authorization": f"Bearer {token}"}).json()
        yield client, token, obs


def inventory_reads(client, obs) -> list[str]:
    """Every GET route of the inventory API (from its OpenAPI schema, so a new one is not
    missed), with real bin, observation and task ids."""
    ids = {"code": "bin004", "obs_id": obs["id"], "task_id": obs["task"]["id"]}
    paths = [path for path, ops in client.get("/openapi.json").json()["paths"].items()
             if "inventory" in ops.get("get", {}).get("tags", ())]
    assert len(paths) >= 8, paths
    return [p.format(**ids) for p in paths]


def test_off_loopback_every_read_needs_a_token(locked_api):
    client, token, obs = locked_api
    for path in inventory_reads(client, obs):
        for headers in ({}, {"Authorization": "Bearer bvt_nope"}, {"Authorization": f"Basic {token}"}):
            r = client.get(path, headers=headers)
            assert (r.status_code, r.json()["status"]) == (401, "unauthorized"), (path, headers)
            assert "reads need a valid" in r.json()["detail"]
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, path
        # the dashboard's sign-in cookie opens them too (its photos are API reads)
        client.cookies.set("binventory_token", token)
        assert client.get(path).status_code == 200, path
        client.cookies.clear()
    assert client.get(f"/v1/observations/{obs['id']}/image",
                      headers={"Authorization": f"Bearer {token}"}).content == image_bytes(4)


def test_off_loopback_a_revoked_token_reads_nothing(locked_api, db):
    client, token, obs = locked_api
    with db.session() as s:
        revoke_tokens(s, "reader")
    r = client.get("/v1/bins", headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()["status"]) == (401, "unauthorized")


def test_off_loopback_health_metrics_and_counting_stay_open(locked_api):
    client, _, _ = locked_api
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"
    assert "binventory" in client.get("/metrics").text
    # Counting stores and reveals nothing of the inventory: it needs no token.
    r = client.post("/v1/count", content=image_bytes(2), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and "count" in r.json()


def test_on_loopback_every_read_stays_open(api):
    obs = upload(api).json()
    api.headers.pop("Authorization")
    for path in inventory_reads(api, obs):
        assert api.get(path).status_code == 200, path


@pytest.mark.parametrize("data, content_type", [
    (image_bytes(1)[:300], "image/jpeg"), (bomb_jpeg(), "image/jpeg"),
    (b"hello, not a jpeg", "image/png"), (b"{}", "text/plain; charset=utf-8")])
def test_the_upload_routes_answer_a_bad_photo_alike(api, data, content_type):
    # One mapping of image faults and media types serves /v1/count and the robot's upload.
    headers = {"Content-Type": content_type}
    count = api.post("/v1/count", content=data, headers=headers)
    observe = api.post("/v1/bins/bin004/observations", content=data, headers=headers)
    assert count.status_code == observe.status_code and count.status_code in (415, 422)
    assert count.json()["status"] == observe.json()["status"]
    if count.json()["status"] == "unsupported_media_type":  # /v1/count also takes JSON, and says so
        assert count.json()["detail"] == observe.json()["detail"].replace(
            "image/jpeg or image/png", "image/jpeg, image/png or application/json")
    else:
        assert count.json()["detail"] == observe.json()["detail"]


def test_claim_and_cancel_take_an_empty_body(api):
    task = upload(api, "bin003").json()["task"]
    r = api.post(f"/v1/audit-tasks/{task['id']}/claim")
    assert (r.status_code, r.json()["status"], r.json()["assignee"]) == (200, "in_progress", "robot-1")
    r = api.post(f"/v1/audit-tasks/{task['id']}/cancel")
    assert (r.status_code, r.json()["status"], r.json()["resolved_by"]) == (200, "cancelled", "robot-1")
    for action in ("claim", "cancel"):
        r = api.post(f"/v1/audit-tasks/999/{action}")
        assert (r.status_code, r.json()["status"]) == (404, "not_found"), r.text
        assert r.json()["detail"] == "unknown audit task 999"


def test_photo_uris_are_relative_to_the_image_store(db, tmp_path, predictor, monkeypatch):
    """A reconciled photo and an uploaded one are stored by the same rule, so a server started
    in another folder than reconcile (the dashboard later, a replica) shows both."""
    from sqlalchemy import select

    from binventory.inventory.models import Observation
    from binventory.inventory.reconcile import reconcile

    load(db, make_dataset(tmp_path / "data" / "abid"))
    policy = Policy(BlindVerifier(), t_confirm=0.99, t_flag=0.5)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "data" / "observations"
    reconcile(db, predictor, policy, "data/abid", workers=1, progress=False, image_dir="data/observations")
    monkeypatch.chdir(tmp_path / "data" / "abid")  # the server runs elsewhere
    app = create_app(predictor, Settings(), db=db, policy=policy, image_dir=store)
    with db.session() as s:
        token = create_token(s, "robot-1")
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        uploaded = upload(client, "bin007", image_bytes(70)).json()
        with db.reader() as s:
            uris = dict(s.execute(select(Observation.id, Observation.image_uri)).all())
        reconciled = min(uris)
        assert uris[reconciled] == "../abid/bin-images/bin000.jpg"
        sha = uploaded["image_sha256"]
        assert uris[uploaded["id"]] == f"{sha[:2]}/{sha}.jpg"
        assert client.get(f"/v1/observations/{reconciled}/image").content == image_bytes(0)
        assert client.get(f"/v1/observations/{uploaded['id']}/image").content == image_bytes(70)


def test_the_readme_documents_every_endpoint_with_its_body_and_query(api):
    """README's API reference has a row per route, naming each query parameter and body field
    the route takes (as FastAPI's own schema lists them)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### API reference"):]
    rows = {}
    for line in section[:section.index("\n## ")].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 4:
            continue
        method = cells[0].strip("`").split()[0]
        for path in re.findall(r"(/[\w/{}-]+)", cells[0]):
            rows[method, re.sub(r"\{\w+\}", "{}", path)] = cells
    spec = api.get("/openapi.json").json()
    missing = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if not {"inventory", "counting", "ops"} & set(op.get("tags", ())):
                continue
            cells = rows.get((method.upper(), re.sub(r"\{\w+\}", "{}", path)))
            if cells is None:
                missing.append(f"{method.upper()} {path}")
                continue
            query = [p["name"] for p in op.get("parameters", ()) if p["in"] == "query"]
            missing += [f"{path} ?{q}" for q in query if f"`{q}`" not in cells[2]]
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in schema or "anyOf" in schema:
                ref = schema.get("$ref") or next(s["$ref"] for s in schema["anyOf"] if "$ref" in s)
                fields = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
                missing += [f"{path} body {f}" for f in fields if f'"{f}"' not in cells[1]]
    assert not missing, missing

"""The model page's registry and its promote/rollback forms, and the registry's API: three tiny
counters really compared on a warehouse's resolved audits (SQLite and PostgreSQL)."""
from __future__ import annotations

import html
import re

import pytest

from binventory.app import create_app
from binventory.inventory import registry
from bench.pgtools import fresh_database
from binventory.inventory.compare import compare
from binventory.inventory.db import Database
from binventory.inventory.policy import Policy
from binventory.inventory.tokens import create_token
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from tests.inventory.audits import save_counter, warehouse
from tests.inventory.conftest import pg_admin_url  # noqa: F401 (a fixture)
from tests.web.conftest import TestClient

AUDIT_DATA = {"manifest": "/data/audits-w2/manifest.parquet", "hash": "ab" * 32, "images": 412,
              "labelled_until": "2026-11-30T10:00:00+00:00"}


@pytest.fixture(scope="module")
def counters(tmp_path_factory):
    """Counters that see 4 (right on 4 of the 20 audits), 2 (right on 16) and 5 (on none)."""
    folder = tmp_path_factory.mktemp("counters")
    return {name: save_counter(folder / f"{name}.pt", count, name)
            for name, count in (("served", 4), ("good", 2), ("worse", 5))}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world_db(request, tmp_path_factory):
    """One migrated inventory per backend for the module: the audits and comparisons take a
    while, so each test starts from the same registry states instead (``world``)."""
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'inventory.db'}", None
    else:
        url, drop = fresh_database(request.getfixturevalue("pg_admin_url"))
    database = Database.open(url, create=True)
    yield database
    database.close()
    if drop is not None:
        drop()


@pytest.fixture(scope="module")
def setup(world_db, tmp_path_factory, counters):
    """'served' active and serving; 'good' (fine-tuned from it on audits) compared better,
    'worse' compared not better; a token."""
    db = world_db
    image_dir = warehouse(db, tmp_path_factory.mktemp("warehouse"))
    with db.session() as s:
        ids = {name: registry.register(s, path).version for name, path in counters.items()}
        registry.promote(s, ids["served"])
        good = registry.get(s, ids["good"])
        good.parent, good.data = ids["served"], [AUDIT_DATA]
        token = create_token(s, "manager")
    for name in ("good", "worse"):
        compare(db, ids[name], image_dir=image_dir, resamples=500)
    app = create_app(Predictor.load(counters["served"]), Settings(max_wait_ms=1), db=db,
                     policy=Policy.default(), image_dir=image_dir)
    with TestClient(app) as client:
        yield client, db, ids, token


@pytest.fixture
def world(setup):
    """The module's app, signed out, with 'served' the only model ever active."""
    client, db, ids, token = setup
    client.cookies.clear()
    with db.session() as s:
        for m in registry.list_models(s):
            m.state = "candidate"
        s.flush()
        registry.get(s, ids["served"]).state = "active"
    return setup


def states(db) -> dict[str, str]:
    with db.reader() as s:
        return {m.version: m.state for m in registry.list_models(s)}


def sign_in(client, token: str) -> None:
    r = client.post("/login", data={"token": token, "next": "/model"}, follow_redirects=False)
    assert r.status_code == 303


def row(page: str, version: str) -> str:
    """A model's two table rows (the model, its comparison), as plain text."""
    part = page.split(f'id="model-{version}"', 1)[1].split('<tr class="model', 1)[0]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", part)))


def test_the_page_lists_the_registry_with_lineage_data_and_comparisons(world):
    client, db, ids, _ = world
    page = client.get("/model").text
    served, good, worse = (row(page, ids[n]) for n in ("served", "good", "worse"))
    assert "active serving" in served and "candidate" in good and "candidate" in worse
    assert f'<a href="/model?version={ids["served"]}">{ids["served"]}</a>' in page  # good's parent
    assert "audits-w2/manifest.parquet: 412 images, labelled until 2026-11-30 10:00" in good
    # 16 of 20 right against 4 of 20: 60 points better, on the 20 audits.
    assert re.search(rf"better than {ids['served']} on exact accuracy by 60\.0 points \[\d+\.\d, \d+\.\d\]"
                     r"( and right records confirmed by [\d.]+ points \[[\d., ]+\])? on 20 audits: "
                     "safe to promote", good), good
    assert "exact accuracy 80.0% vs 20.0%: +60.0 points" in good
    assert "RMSE 0.894 vs 1.789: -0.894" in good and "(lower is better)" in good
    assert f"not better than {ids['served']} on 20 audits: exact accuracy -20.0%" in worse
    assert "promoting it needs 'force'" in worse
    # Signed out, the registry is read-only.
    assert 'id="registry-read-only"' in page and "/promote" not in page and "/model/rollback" not in page


def test_promote_and_rollback_need_a_token(world):
    client, db, ids, _ = world
    before = states(db)
    for url in (f"/model/{ids['good']}/promote", "/model/rollback"):
        r = client.post(url, follow_redirects=False)
        assert r.status_code == 401 and 'action="/login"' in r.text and "Sign in with an API token" in r.text
        assert client.get(url).status_code == 401
    assert client.post(f"/v1/models/{ids['good']}/promote").status_code == 401
    assert client.post("/v1/models/rollback").status_code == 401
    assert client.post(f"/v1/models/{ids['good']}/promote",
                       headers={"Authorization": "Bearer bvt_wrong"}).status_code == 401
    assert states(db) == before


def test_a_signed_in_user_promotes_after_confirming_and_rolls_back(world):
    client, db, ids, token = world
    sign_in(client, token)
    page = client.get("/model").text
    assert f'href="/model/{ids["good"]}/promote">Promote…' in page
    confirm = client.get(f"/model/{ids['good']}/promote")
    assert confirm.status_code == 200 and "Promote model good?" in confirm.text
    assert 'name="force"' not in confirm.text  # its comparison found it better: no force needed
    assert states(db)[ids["good"]] == "candidate"  # opening the confirm page changes nothing
    r = client.post(f"/model/{ids['good']}/promote", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, f"/model?promoted={ids['good']}#registry")
    assert states(db) == {ids["good"]: "active", ids["served"]: "retired", ids["worse"]: "candidate"}
    page = client.get(r.headers["location"]).text
    notice = html.unescape(page.split('id="registry-notice">', 1)[1].split("</p>", 1)[0])
    assert notice == (f"Model {ids['good']} is now active. This service keeps serving model "
                      f"{ids['served']} until it restarts: restart 'binventory serve' with this "
                      "model's artifact, or run it with --follow-registry to follow the registry "
                      "without restarts.")
    assert 'id="not-served"' in page
    # The query string cannot make the page claim a promotion that did not happen.
    assert 'id="registry-notice"' not in client.get(f"/model?promoted={ids['worse']}").text

    assert "Roll back to model served?" in client.get("/model/rollback").text
    r = client.post("/model/rollback", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, f"/model?rolled_back={ids['served']}#registry")
    assert states(db) == {ids["good"]: "candidate", ids["served"]: "active", ids["worse"]: "candidate"}
    assert f"Model {ids['served']} is now active again. This service already serves" in \
        client.get(r.headers["location"]).text


def test_a_refused_promotion_says_why_and_force_promotes(world):
    client, db, ids, token = world
    sign_in(client, token)
    confirm = client.get(f"/model/{ids['worse']}/promote").text
    gate = html.unescape(confirm.split('id="gate">', 1)[1].split("</p>", 1)[0])
    assert gate.startswith(f"The promotion gate refuses it: model {ids['worse']} is not better than "
                           f"{ids['served']}: exact accuracy -20.0%")
    assert 'name="force"' in confirm
    r = client.post(f"/model/{ids['worse']}/promote", follow_redirects=False)
    assert r.status_code == 409 and 'id="refused"' in r.text
    assert "is not better than" in r.text and "tick 'force' to promote it anyway" in html.unescape(r.text)
    assert states(db)[ids["worse"]] == "candidate"
    r = client.post(f"/model/{ids['worse']}/promote", data={"force": "yes"}, follow_redirects=False)
    assert r.status_code == 303
    assert states(db)[ids["worse"]] == "active" and states(db)[ids["served"]] == "retired"


def test_unknown_models_and_nothing_to_roll_back_are_messages(world):
    client, db, ids, token = world
    sign_in(client, token)
    for r in (client.post("/model/nope/promote"), client.get("/model/nope/promote")):
        assert r.status_code == 404 and "No model &#39;nope&#39; in the registry" in r.text
    r = client.post(f"/model/{ids['served']}/promote")
    assert r.status_code == 409 and "is already the active model" in r.text
    r = client.post("/model/rollback")  # 'served' was the first active model: none before it
    assert r.status_code == 409 and "there is nothing to roll back to" in r.text


def test_the_api_lists_promotes_and_rolls_back(world):
    client, db, ids, token = world
    auth = {"Authorization": f"Bearer {token}"}
    listed = client.get("/v1/models").json()
    assert [(m["id"], m["state"]) for m in listed][0] == (ids["served"], "active")
    good = next(m for m in listed if m["id"] == ids["good"])
    assert (good["parent"], good["data"], good["comparison"]["verdict"]) == (ids["served"], [AUDIT_DATA], "better")

    r = client.post("/v1/models/nope/promote", headers=auth)
    assert r.status_code == 404 and "no model 'nope' in the registry" in r.json()["detail"]
    r = client.post(f"/v1/models/{ids['worse']}/promote", headers=auth, json={"force": False})
    assert r.status_code == 409 and f"is not better than {ids['served']}" in r.json()["detail"]
    r = client.post(f"/v1/models/{ids['worse']}/promote", headers=auth, json={"force": True})
    assert r.status_code == 200
    assert (r.json()["active"]["id"], r.json()["active"]["state"], r.json()["retired"]) == \
        (ids["worse"], "active", ids["served"])
    r = client.post("/v1/models/rollback", headers=auth)
    assert r.status_code == 200 and (r.json()["active"]["id"], r.json()["candidate"]) == (ids["served"], ids["worse"])
    r = client.post("/v1/models/rollback", headers=auth)
    assert r.status_code == 409 and "none to roll back to" in r.json()["detail"]
    assert states(db)[ids["served"]] == "active"

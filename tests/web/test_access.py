"""Who may read: beyond loopback, ``binventory serve`` answers the dashboard's pages and the API's
reads only with a token (the sign-in cookie or a bearer header), unless ``--public-read``;
health, readiness, metrics, counting and the sign-in page stay open."""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from binventory.app import create_app, is_loopback, serve_app
from binventory.cli import build_parser, main
from binventory.inventory.models import Adjustment, AuditTask
from binventory.serving.service import Settings
from binventory.web import routes
from tests.web.conftest import Inventory, TestClient

PAGES = ["/", "/audit", "/audit?status=all&page=1", "/bins?q=0", "/bins/00003?obs=1", "/model",
         "/model/{model_id}/report.html", "/model/{model_id}/eval/eval-test/confusion_challenge.png"]


@pytest.fixture(scope="module")
def locked(predictor, inventory):
    app = create_app(predictor, Settings(max_wait_ms=1), db=inventory.db, policy=inventory.policy,
                     image_dir=inventory.folder / "observations", reads_need_token=True)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def signed_out(locked):
    locked.cookies.clear()
    yield locked
    locked.cookies.clear()


def pages(predictor) -> list[str]:
    return [p.format(model_id=quote(predictor.model_id, safe="")) for p in PAGES]


def test_signed_out_pages_send_the_browser_to_sign_in(signed_out, predictor):
    for path in pages(predictor):
        r = signed_out.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/login?next=" + quote(path, safe=""), path
    r = signed_out.get("/bins/00003?obs=1")  # followed: the sign-in page, which says why
    assert r.status_code == 200 and "<h1>Sign in</h1>" in r.text and "every page needs" in r.text
    assert 'name="next" value="/bins/00003?obs=1"' in r.text


def test_signed_out_the_api_answers_401_json(signed_out):
    for path in ("/v1/bins", "/v1/bins/00003", "/v1/ledger", "/v1/observations/1/image"):
        r = signed_out.get(path, follow_redirects=False)
        assert (r.status_code, r.json()["status"]) == (401, "unauthorized"), path


def test_sign_in_page_css_and_operations_stay_open(signed_out):
    for path in ("/login", "/static/app.css", "/healthz", "/readyz", "/metrics"):
        assert signed_out.get(path, follow_redirects=False).status_code == 200, path


def test_signing_in_opens_every_page_and_its_photos(signed_out, inventory, predictor):
    r = signed_out.post("/login", data={"token": inventory.token, "next": "/bins/00003?obs=1"},
                        follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/bins/00003?obs=1")
    page = signed_out.get("/bins/00003?obs=1")
    assert page.status_code == 200 and "Bin 00003" in page.text and "signed in as <b>alice</b>" in page.text
    photos = re.findall(r'src="(/v1/observations/\d+/image)"', page.text)
    assert photos
    for src in photos:  # the photos are API reads: the same cookie opens them
        assert signed_out.get(src).headers["content-type"] == "image/jpeg"
    for path in pages(predictor):
        assert signed_out.get(path, follow_redirects=False).status_code == 200, path
    signed_out.post("/logout")
    signed_out.cookies.clear()  # what the browser does with the deleted cookie
    assert signed_out.get("/", follow_redirects=False).status_code == 303


def test_a_bad_token_stays_signed_out(signed_out):
    r = signed_out.post("/login", data={"token": "bvt_wrong", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "unknown or revoked" in r.text
    signed_out.cookies.set(routes.COOKIE, "bvt_wrong")
    assert signed_out.get("/bins", follow_redirects=False).status_code == 303


def test_a_bearer_header_opens_the_pages_too(signed_out, inventory):
    r = signed_out.get("/audit", headers={"Authorization": f"Bearer {inventory.token}"})
    assert r.status_code == 200 and "Audit queue" in r.text


def test_a_signed_out_form_post_writes_nothing(signed_out, inventory):
    with inventory.db.reader() as session:
        task = session.scalars(select(AuditTask).where(AuditTask.status == "open")).first()
        before = session.scalar(select(func.count(Adjustment.id)))
    r = signed_out.post(f"/audit/{task.id}/resolve", data={"counted_quantity": "0", "reason_code": "lost"},
                        follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=%2Faudit")
    with inventory.db.reader() as session:
        assert session.get(AuditTask, task.id).status == "open"
        assert session.scalar(select(func.count(Adjustment.id))) == before


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False),
    ("10.0.0.1", False), ("warehouse-7.example.com", False)])
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.fixture(scope="module")
def served_db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('served') / 'inventory.db'}"
    assert main(["inventory", "migrate", "--db", url]) == 0
    return url


@pytest.mark.parametrize("options, reads", [
    ([], 200), (["--host", "127.0.0.1"], 200), (["--host", "localhost"], 200), (["--host", "::1"], 200),
    (["--host", "0.0.0.0"], 401), (["--host", "10.1.2.3"], 401), (["--host", "0.0.0.0", "--public-read"], 200)])
def test_serve_asks_for_tokens_on_reads_beyond_loopback(model_path, served_db, tmp_path, options, reads):
    args = build_parser().parse_args(["serve", "--model", str(model_path), "--backend", "torch",
                                      "--db", served_db, "--image-dir", str(tmp_path), *options])
    with TestClient(serve_app(args)) as c:
        assert c.get("/v1/bins").status_code == reads
        assert c.get("/", follow_redirects=False).status_code == (200 if reads == 200 else 303)
        assert c.get("/readyz").status_code == 200


def test_reads_stay_open_by_default_in_the_app(client: TestClient, inventory: Inventory):
    client.cookies.clear()
    assert client.get("/bins/00003").status_code == 200
    assert client.get("/v1/bins/00003").status_code == 200
    assert "Reading needs no sign-in" in client.get("/login").text

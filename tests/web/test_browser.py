"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (never a
downloaded browser). Opens each page, resolves an audit task through the form and finds the ledger
entry, checks the empty states, and takes the README's screenshots."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from binventory.app import create_app
from binventory.serving.service import Settings
from tests.web.conftest import UNSEEN_BIN, LiveServer, make_app

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the browser tests: apt-get install chromium")
        pytest.skip("browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def server(predictor, inventory):
    with LiveServer(make_app(predictor, inventory)) as live:
        live.token = inventory.token
        yield live


@pytest.fixture(scope="module")
def empty_server(predictor, empty_inventory):
    with LiveServer(make_app(predictor, empty_inventory)) as live:
        yield live


def screenshot(pg, name: str) -> None:
    """The README's screenshots, quantized to 128 colours to keep the repository small. They are
    taken on every run; BINVENTORY_SCREENSHOTS=1 also writes them into docs/ (the pages carry
    timestamps, so rewriting them on every run would dirty the checkout)."""
    image = Image.open(io.BytesIO(pg.screenshot())).convert("RGB")
    assert image.size[0] > 0 and image.getextrema() != ((255, 255),) * 3, "blank page"
    if os.environ.get("BINVENTORY_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        image.quantize(128, method=Image.Quantize.MEDIANCUT).save(SCREENSHOTS / name, optimize=True)


def offline_only(pg, base: str) -> list[str]:
    """Every request the page makes, to check that nothing leaves the server."""
    seen = []
    pg.on("request", lambda r: seen.append(r.url))
    return seen


def test_overview(page, server, run_files):
    requests = offline_only(page, server.url)
    page.goto(server.url + "/")
    assert page.title() == "Overview · binventory"
    stats = page.locator(".stats")
    for label in ("bins observed", "confirmed", "flagged", "in review"):
        assert stats.get_by_text(label, exact=True).is_visible()
    assert page.locator("svg.chart").count() == 1  # record accuracy over time
    assert page.get_by_text(run_files["name"]).first.is_visible()  # the active model
    assert page.locator("link[rel=stylesheet]").evaluate("l => l.sheet.cssRules.length") > 10
    screenshot(page, "overview.png")
    assert all(u.startswith(server.url) for u in requests), requests


def test_audit_queue_sorted_with_photos_and_bars(page, server):
    page.goto(server.url + "/audit")
    tasks = page.locator("li.task")
    assert tasks.count() >= 2
    priorities = [float(re.search(r"priority ([\d.]+)", t).group(1)) for t in tasks.all_inner_texts()]
    assert priorities == sorted(priorities, reverse=True)
    first = tasks.first
    assert first.locator(".bars .bar").count() == 7  # classes 0..5 and 6+
    assert first.locator(".bar.predicted").count() == 1
    first.locator("a.zoom img").scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=first.locator("a.zoom img").element_handle())
    # Filters: the resolved task of the fixture, then one bin.
    page.select_option("select[name=status]", "resolved")
    page.click("form.filters button")
    assert page.locator("li.task").count() == 1
    assert "counted" in page.locator("li.task").inner_text()
    page.goto(server.url + "/audit?status=all&bin=nope")
    assert "No audit tasks match (bins starting with nope)." in page.locator("main").inner_text()


def test_resolve_through_the_form_writes_the_ledger(page, server):
    page.goto(server.url + "/audit")
    # A task whose bin holds SKUs (a surplus is booked against one of them).
    task = next(t for t in page.locator("li.task").all() if int(t.locator(".counts b").first.inner_text()))
    task_id = int(task.get_attribute("id").split("-")[1])
    expected = int(task.locator(".counts b").first.inner_text())
    # Not signed in: no form to fill, a way to sign in instead.
    assert task.locator("form").count() == 0
    page.click("#read-only a")
    page.fill("input[name=token]", "bvt_wrong")
    page.click("form.card button")
    assert "unknown or revoked" in page.locator(".error").inner_text()
    page.fill("input[name=token]", server.token)
    page.click("form.card button")
    assert "signed in as alice" in page.locator("header").inner_text()
    cookie = [c for c in page.context.cookies() if c["name"] == "binventory_token"][0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.goto(server.url + "/audit")
    task = page.locator(f"#task-{task_id}")
    # A bad quantity is explained on the page; a good one resolves the task.
    task.locator("input[name=counted_quantity]").fill("many")
    task.locator("select[name=reason_code]").select_option("found")
    task.locator("form.resolve button").click()
    assert "must be a whole number" in page.locator(f"#task-{task_id} .error").inner_text()
    task = page.locator(f"#task-{task_id}")
    task.locator("input[name=counted_quantity]").fill(str(expected + 2))
    task.locator("form.resolve button").click()
    page.wait_for_url(re.compile(r"/bins/\d+\?resolved="))
    assert f"Audit task {task_id} resolved" in page.locator(".notice").inner_text()
    row = page.locator("#ledger tbody tr").first.inner_text()
    assert "+2" in row and "found" in row and "alice" in row and str(task_id) in row


def test_bin_page(page, server):
    page.goto(server.url + "/bins")
    assert "16 bins" in page.locator(".pager").first.inner_text()
    page.click("table.list a >> text=00003")
    assert page.locator("h1").inner_text() == "Bin 00003"
    assert page.locator("h2", has_text="Contents").is_visible()
    assert page.locator("text=B00TEST000").count() >= 1
    assert page.locator("li.obs").count() == 1 and page.locator("li.obs a.zoom img").count() == 1
    page.goto(server.url + f"/bins/{UNSEEN_BIN}")
    assert "No photo of this bin has been judged yet." in page.locator("#observations").inner_text()
    assert "No adjustments" in page.locator("#ledger").inner_text()


def test_model_page(page, server, predictor, run_files):
    page.goto(server.url + "/model")
    assert page.locator("h2", has_text=run_files["name"]).is_visible()
    assert page.locator("#curves svg.chart").count() == 3
    assert page.locator("table.confusion tr").count() == len(run_files["classes"]) + 1
    assert page.locator("#evaluation svg.chart title", has_text="Reliability").count() == 1
    for img in ("confusion_challenge.png", "reliability_challenge.png"):
        src = page.locator(f"img[alt='{img}']").get_attribute("src")
        assert page.request.get(server.url + src).headers["content-type"] == "image/png"
    diagnostics = page.locator("#diagnostics").inner_text()
    assert all(rule in diagnostics for rule in run_files["rules"])
    frame = page.frame_locator("iframe.report")
    assert frame.locator("h1").inner_text() == "Training report"
    thresholds = page.locator("#thresholds").inner_text()
    assert "review" in thresholds and "blind" in thresholds
    assert page.request.get(f"{server.url}/model/{predictor.model_id}/eval/eval-test/..%2Fmodel.pt").status == 404


def test_empty_states(page, empty_server):
    page.goto(empty_server.url + "/")
    assert "The inventory is empty" in page.locator("main").inner_text()
    assert "No verified bins yet" in page.locator("main").inner_text()
    assert "No model has judged this inventory yet" in page.locator("main").inner_text()
    page.click("nav >> text=Audit queue")
    assert "No open audit tasks" in page.locator("main .empty").inner_text()
    page.click("nav >> text=Bins")
    assert "The inventory has no bins yet" in page.locator("main .empty").inner_text()
    page.click("nav >> text=Model")
    assert "No model has judged this inventory yet" in page.locator("main .empty").first.inner_text()


def test_beyond_loopback_sign_in_comes_back_to_the_page(page, predictor, inventory):
    # What 'binventory serve --host 0.0.0.0' builds: every page needs the sign-in.
    app = create_app(predictor, Settings(max_wait_ms=1), db=inventory.db, policy=inventory.policy,
                     image_dir=inventory.folder / "observations", reads_need_token=True)
    with LiveServer(app) as live:
        page.goto(live.url + "/bins/00003?obs=1")
        assert page.locator("h1").inner_text() == "Sign in"
        assert "every page needs" in page.locator("main").inner_text()
        assert page.request.get(live.url + "/v1/bins").status == 401
        page.fill("input[name=token]", inventory.token)
        page.click("form.card button")
        page.wait_for_url(live.url + "/bins/00003?obs=1")
        assert page.locator("h1").inner_text() == "Bin 00003"
        # The photo is an API read: the browser's sign-in cookie brings it.
        img = page.locator("li.obs img").first
        img.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        page.click("header button.link")  # sign out
        page.goto(live.url + "/audit")
        assert page.locator("h1").inner_text() == "Sign in"


def test_api_docs_render_offline(page, server):
    """Swagger UI renders the whole API from scripts the server ships (the floor may have no
    internet): no request leaves the server."""
    requests = offline_only(page, server.url)
    page.goto(server.url + "/docs")
    page.locator(".swagger-ui .info .title").get_by_text("binventory").wait_for()
    claim = page.locator(".opblock-summary-path", has_text="/v1/audit-tasks/{task_id}/claim")
    assert claim.count() == 1 and claim.is_visible()
    assert page.get_by_text("Unable to render this definition").count() == 0
    assert page.locator("link[rel=stylesheet]").evaluate("l => l.sheet.cssRules.length") > 10
    assert all(u.startswith(server.url) for u in requests), requests

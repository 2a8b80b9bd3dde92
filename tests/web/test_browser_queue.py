"""The audit queue and the ledger in a real browser (headless Chromium, as test_browser): what a
signed-out visitor sees, the reason a resolution needs, claim then resolve, a refused take-over,
a photo opened full size, the filters, the ledger page and its CSV, the compact list, and the
header on a 390 px phone."""
from __future__ import annotations

import csv
import io
import re

import pytest

from binventory.inventory.tokens import create_token
from tests.web.conftest import LiveServer, make_app
from tests.web.test_browser import browser, screenshot  # noqa: F401 (a fixture)

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def server(predictor, inventory):
    with LiveServer(make_app(predictor, inventory)) as live:
        live.token = inventory.token
        with inventory.db.session() as s:
            live.carol = create_token(s, "carol")
        yield live


def new_page(browser, viewport=None):  # noqa: F811
    context = browser.new_context(viewport=viewport or {"width": 1100, "height": 760})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    return pg


@pytest.fixture
def page(browser):  # noqa: F811
    pg = new_page(browser)
    yield pg
    pg.context.close()
    assert not pg.errors, pg.errors


def sign_in(pg, server, token=None) -> None:
    pg.goto(server.url + "/login?next=/audit")
    pg.fill("input[name=token]", token or server.token)
    pg.click("form.card button")
    pg.wait_for_url(server.url + "/audit")


def task_with_skus(pg):
    """The first listed active task whose bin holds items (a different count books against them)."""
    return next(t for t in pg.locator("li.task").all()
                if int(t.locator(".counts b").first.inner_text()) and t.locator("form.resolve").count())


def test_signed_out_the_queue_is_read_only(page, server):
    page.goto(server.url + "/audit")
    assert page.locator("li.task").count() >= 2
    assert page.locator("li.task form").count() == 0
    assert page.locator("#read-only").is_visible()
    page.click("#read-only a")
    assert page.locator("h1").inner_text() == "Sign in"


def test_the_reason_is_required_and_explained(page, server):
    sign_in(page, server)
    task = task_with_skus(page)
    task_id = task.get_attribute("id")
    expected = int(task.locator(".counts b").first.inner_text())
    assert task.locator("select[name=reason_code]").input_value() == ""  # nothing chosen for you
    task.locator("input[name=counted_quantity]").fill(str(expected + 1))
    task.locator("form.resolve button").click()
    # The browser itself refuses the empty reason, and says so at the field.
    assert page.url.endswith("/audit")
    assert task.locator("select[name=reason_code]").evaluate("s => s.validity.valueMissing")
    # A browser that does not check: the server answers in plain words on the task.
    task.locator("select[name=reason_code]").evaluate("s => s.removeAttribute('required')")
    task.locator("form.resolve button").click()
    error = page.locator(f"#{task_id} .error")
    assert error.inner_text() == "Pick a reason: “count agrees with the record”, or why the count differs."
    # The counted quantity stays as typed.
    assert page.locator(f"#{task_id} input[name=counted_quantity]").input_value() == str(expected + 1)
    page.locator(f"#{task_id} select[name=reason_code]").select_option("count_confirmed")
    page.locator(f"#{task_id} form.resolve button").click()
    assert f"You counted {expected + 1} but the record says {expected}" in page.locator(f"#{task_id} .error").inner_text()


def test_claim_then_resolve(page, server):
    sign_in(page, server)
    task = task_with_skus(page)
    task_id = task.get_attribute("id")
    expected = int(task.locator(".counts b").first.inner_text())
    task.locator("form.claim button").click()
    task = page.locator(f"#{task_id}")
    assert "claimed by you" in task.locator(".claimed").inner_text()
    assert task.locator("form.claim").count() == 0  # nothing left to claim
    task.locator("input[name=counted_quantity]").fill(str(expected - 1))
    task.locator("select[name=reason_code]").select_option("damaged")
    task.locator("input[name=note]").fill("one crushed")
    task.locator("form.resolve button").click()
    page.wait_for_url(re.compile(r"/bins/\d+\?resolved="))
    row = page.locator("#ledger tbody tr").first.inner_text()
    assert "-1" in row and "damaged" in row and "alice" in row


def test_someone_elses_task_needs_a_take_over(page, server):
    # Carol claims a task through the API; Alice sees it is hers and cannot resolve it by accident.
    sign_in(page, server)
    task = task_with_skus(page)
    number = int(task.get_attribute("id").split("-")[1])
    r = page.request.post(f"{server.url}/v1/audit-tasks/{number}/claim", data="{}",
                          headers={"Authorization": f"Bearer {server.carol}", "Content-Type": "application/json"})
    assert r.status == 200
    page.reload()
    task = page.locator(f"#task-{number}")
    assert "claimed by carol" in task.locator(".claimed").inner_text()
    expected = int(task.locator(".counts b").first.inner_text())
    task.locator("input[name=counted_quantity]").fill(str(expected + 1))
    task.locator("select[name=reason_code]").select_option("found")
    task.locator("form.resolve button").click()
    error = page.locator(f"#task-{number} .error").inner_text()
    assert error == f"carol has claimed task {number}. Tick “take over from carol” to resolve it yourself."
    assert page.request.get(f"{server.url}/v1/audit-tasks/{number}").json()["status"] == "in_progress"
    task = page.locator(f"#task-{number}")
    task.locator("label.check input[name=take_over]").check()
    task.locator("form.resolve button").click()
    page.wait_for_url(re.compile(r"/bins/\d+\?resolved="))
    done = page.request.get(f"{server.url}/v1/audit-tasks/{number}").json()
    assert (done["resolved_by"], done["taken_over_from"]) == ("alice", "carol")


def test_a_photo_opens_full_size(page, server):
    page.goto(server.url + "/audit")
    first = page.locator("li.task").first
    thumb = first.locator("a.zoom img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    small = thumb.bounding_box()["width"]
    assert small <= 90
    first.locator("a.zoom").click()
    big = page.locator(".lightbox:target img")
    big.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=big.element_handle())
    box = big.bounding_box()
    assert box["width"] > 5 * small and box["height"] <= 0.9 * 760 + 1  # fills the screen, fits it
    big.click()  # closes again
    assert page.locator(".lightbox:target").count() == 0


def test_filters_narrow_the_queue(page, server):
    page.goto(server.url + "/audit?status=all")
    every = page.locator("li.task").count()
    page.select_option("select[name=kind]", "flag")
    page.click("form.filters button")
    kinds = page.locator("li.task .head .tag.flag, li.task .head .tag.review").all_inner_texts()
    assert kinds and set(kinds) == {"flag"} and len(kinds) < every
    page.fill("input[name=bin]", "0001")
    page.click("form.filters button")
    bins = [re.search(r"Bin (\w+)", t).group(1) for t in page.locator("li.task .head").all_inner_texts()]
    assert bins and all(b.startswith("0001") for b in bins)
    assert "kind=flag" in page.url and "bin=0001" in page.url
    page.click("form.filters >> text=clear")
    assert page.url.endswith("/audit")


def test_the_list_is_compact(page, server):
    sign_in(page, server)  # the forms make a row taller: measure with them
    tasks = page.locator("li.task")
    heights = [t.bounding_box()["height"] for t in tasks.all()]
    assert len(heights) >= 2
    # 20 tasks were a 6,700 px page: now well under half of that.
    assert max(heights) < 150, heights
    screenshot(page, "audit-queue.png")


def test_ledger_page_and_csv(page, server):
    page.goto(server.url + "/")
    page.click("nav >> text=Ledger")
    assert page.locator("h1").inner_text() == "Ledger"
    first = page.locator("#ledger tbody tr").first.locator("td")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", first.nth(0).inner_text())
    code = first.nth(1).inner_text()
    assert first.nth(1).locator("a").get_attribute("href") == f"/bins/{code}"
    with page.expect_download() as download:
        page.click("text=Download CSV")
    rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert len(rows) == page.locator("#ledger tbody tr").count()
    assert rows[0]["bin"] == code and rows[0]["actor"] == first.nth(8).inner_text()
    screenshot(page, "ledger.png")


def test_bins_page_filters(page, server):
    page.goto(server.url + "/bins")
    every = page.locator("table.list tbody tr").count()
    page.select_option("select[name=seen]", "yes")
    page.click("form.filters button")
    seen = page.locator("table.list tbody tr").count()
    assert 0 < seen < every and page.get_by_text("not observed").count() == 0
    page.select_option("select[name=task]", "yes")
    page.click("form.filters button")
    assert all("task" in t for t in page.locator("table.list tbody tr td:last-child").all_inner_texts())


def test_the_header_wraps_on_a_phone(browser, server):  # noqa: F811
    pg = new_page(browser, PHONE)
    try:
        for path in ("/", "/audit", "/ledger"):
            pg.goto(server.url + path)
            sign_in_link = pg.locator("header .who a")
            box = sign_in_link.bounding_box()
            assert sign_in_link.is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], path
            assert pg.locator("header.top").evaluate("h => h.scrollWidth") <= PHONE["width"], path
        pg.locator("header .who a").click()
        assert pg.locator("h1").inner_text() == "Sign in"
        pg.goto(server.url + "/audit")
        screenshot(pg, "audit-phone.png")
    finally:
        pg.context.close()
    assert not pg.errors, pg.errors

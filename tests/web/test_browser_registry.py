"""The model registry in a real browser (headless Chromium, as test_browser): signed out it is
read-only; signed in, a candidate the comparison found better is promoted after the confirm
page, and one it found worse only with 'force' ticked."""
from __future__ import annotations

import pytest

from binventory.app import create_app
from binventory.inventory import registry
from binventory.inventory.compare import compare
from binventory.inventory.db import Database
from binventory.inventory.policy import Policy
from binventory.inventory.tokens import create_token
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from tests.inventory.audits import save_counter, warehouse
from tests.web.conftest import LiveServer
from tests.web.test_browser import browser, page  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry-browser")
    db = Database.open(f"sqlite:///{folder / 'inventory.db'}", create=True)
    image_dir = warehouse(db, folder)
    paths = {name: save_counter(folder / f"{name}.pt", count, name)
             for name, count in (("served", 4), ("good", 2), ("worse", 5))}
    with db.session() as s:
        ids = {name: registry.register(s, path).version for name, path in paths.items()}
        registry.promote(s, ids["served"])
        token = create_token(s, "manager")
    for name in ("good", "worse"):
        compare(db, ids[name], image_dir=image_dir, resamples=500)
    app = create_app(Predictor.load(paths["served"]), Settings(max_wait_ms=1), db=db,
                     policy=Policy.default(), image_dir=image_dir)
    with LiveServer(app) as live:
        live.token, live.ids = token, ids
        yield live
    db.close()


def state(pg, version: str) -> str:
    return pg.locator(f'[id="model-{version}"] .tag.state').inner_text()


def test_sign_in_and_promote_a_candidate(page, server):  # noqa: F811
    good, worse = server.ids["good"], server.ids["worse"]
    page.goto(server.url + "/model")
    assert state(page, good) == "candidate" and page.locator("a.button").count() == 0
    assert "safe to promote" in page.locator("#registry").inner_text()
    page.click("#registry-read-only a")
    page.fill("input[name=token]", server.token)
    page.click("form.card button")
    page.wait_for_url(server.url + "/model")

    page.click(f'[id="model-{good}"] a.button')
    assert page.locator("h1").inner_text() == "Promote model good?"
    page.click("form.confirm button")
    page.wait_for_url(f"{server.url}/model?promoted={good}#registry")
    assert state(page, good) == "active" and state(page, server.ids["served"]) == "retired"
    assert f"Model {good} is now active." in page.locator("#registry-notice").inner_text()

    # The worse one was compared with the model before: the confirm page says so; submitted
    # without 'force' it is refused again, with the box ticked it is promoted.
    page.click(f'[id="model-{worse}"] a.button')
    assert f"not with the active model {good}" in page.locator("#gate").inner_text()
    page.click("form.confirm button")
    assert "tick 'force' to promote it anyway" in page.locator("#refused").inner_text()
    page.check("input[name=force]")
    page.click("form.confirm button")
    page.wait_for_url(f"{server.url}/model?promoted={worse}#registry")
    assert state(page, worse) == "active" and state(page, good) == "retired"

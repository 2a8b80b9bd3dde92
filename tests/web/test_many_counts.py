"""What the dashboard shows of a head over 0..15 plus "16+": 17 bars, the record's class and the
photo's marked, and a photo of "16 or more" named so, never as exactly 16 items."""
from __future__ import annotations

import re

import pytest

from binventory.app import create_app
from binventory.inventory.db import Database
from binventory.inventory.importer import import_abid
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import reconcile
from binventory.inventory.verify import BlindVerifier
from binventory.model.classes import CountClasses
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from binventory.web.pages import bars
from tests.conftest import write_item
from tests.tiny import image_bytes, save_tiny_model
from tests.web.conftest import TestClient

K15 = CountClasses(0, 15, True)
NAMES = [str(c) for c in range(16)] + ["16+"]


def marked(page: str) -> list[tuple[str, str]]:
    """(classes, name) of every bar the page marks as predicted or expected."""
    return re.findall(r'<div class="bar ([a-z ]+)" title="P\(count = ([0-9+]+)\)', page)


def test_bars_mark_counts_past_5_by_their_own_class():
    probs = dict(zip(NAMES, [0.01] * 16 + [0.84]))
    out = bars(probs, 16, 12)
    assert [b["name"] for b in out] == NAMES
    assert [b["name"] for b in out if b["predicted"]] == ["16+"]
    assert [b["name"] for b in out if b["expected"]] == ["12"]
    assert [b["name"] for b in bars(probs, 9, 40) if b["expected"] or b["predicted"]] == ["9", "16+"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Bins of 12 and 20 items, judged by a 17-class model that sees "16+" in every photo."""
    folder = tmp_path_factory.mktemp("k15-web")
    model = save_tiny_model(folder / "model.pt", name="k15", classes=K15, favour=16)
    predictor = Predictor.load(model)
    root = folder / "abid"
    for i, (code, count) in enumerate({"00012": 12, "00020": 20}.items()):
        write_item(root, code, count=count, image=image_bytes(i))
    db = Database.open(f"sqlite:///{folder / 'inventory.db'}", create=True)
    import_abid(db, root, workers=1, progress=False)
    policy = Policy(BlindVerifier(), t_confirm=0.7, t_flag=0.1)
    reconcile(db, predictor, policy, root / "bin-images", model_path=str(model), workers=1,
              progress=False)
    app = create_app(predictor, Settings(max_wait_ms=1), db=db, policy=policy,
                     image_dir=folder / "observations")
    with TestClient(app) as c:
        yield c
    db.close()


def test_bin_page_names_the_overflow_class(client):
    page = client.get("/bins/00012").text
    assert len(re.findall(r'<div class="bar[ "]', page)) == 17
    assert marked(page) == [("expected", "12"), ("predicted", "16+")]
    assert "predicted <b>16+</b>" in page and "predicted <b>16</b>" not in page
    page = client.get("/bins/00020").text  # "16+" backs a record of 20: one bar, both marks
    assert marked(page) == [("expected predicted", "16+")]
    assert "expected <b>20</b> · predicted <b>16+</b>" in page


def test_audit_queue_names_the_overflow_class(client):
    page = client.get("/audit").text
    assert "expected <b>12</b></span> <span>predicted <b>16+</b>" in page

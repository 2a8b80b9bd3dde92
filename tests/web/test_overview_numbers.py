"""The overview's numbers mean what they say: tiles count bins still waiting for a person (a
recount takes its bin off), and record accuracy is per day and per bin, with the calibrated
false-confirm rate beside the photo confirmations."""
from __future__ import annotations

import re

from binventory.inventory import audit
from binventory.inventory.db import Database
from binventory.inventory.models import Model, utcnow
from binventory.inventory.policy import Policy
from binventory.inventory.verify import BlindVerifier
from tests.inventory.helpers import load, make_dataset
from tests.inventory.test_outcome import photo
from tests.web.conftest import Inventory, TestClient, make_app

FALSE_CONFIRM = {"estimate": 0.004, "upper_bound": 0.0087, "confidence": 0.95, "wrong_confirmed": 2,
                 "wrong_records": 480}


def tile(text: str, label: str) -> int:
    return int(re.search(rf"<b>([\d,]+)</b><span>{label}</span>", text).group(1).replace(",", ""))


def test_tiles_and_records_per_bin(predictor, tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'inventory.db'}", create=True)
    load(db, make_dataset(tmp_path / "abid", {f"b{i}": i % 4 + 1 for i in range(6)}, images=False))
    policy = Policy(BlindVerifier(), 0.9, 0.1, stats={"calibrated": True, "false_confirm": FALSE_CONFIRM})
    with db.session() as s:
        s.add(Model(version="m", path="", metrics={}, policy=policy.to_dict(), last_used_at=utcnow()))
    for n in range(3):  # three photos of one bin confirm one bin
        photo(db, "b0", "confirm", n)
    photo(db, "b1", "confirm")
    photo(db, "b2", "flag")
    photo(db, "b3", "flag")
    photo(db, "b4", "review")
    with TestClient(make_app(predictor, Inventory(db, policy, "", tmp_path))) as client:
        text = client.get("/").text
        assert (tile(text, "confirmed"), tile(text, "flagged"), tile(text, "in review")) == (2, 2, 1)
        records = text.split('id="records"')[1].split("</section>")[0]
        # today: 2 bins confirmed by photo (not 4 photos), none recounted, 2 discrepancies open
        assert re.search(r"<td>\d{4}-\d\d-\d\d</td><td>2</td><td>0</td><td>0</td><td>2</td>", records)
        assert "confirm 0.4% of wrong records on\nvalidation" in records and "upper bound 0.9%" in records
        assert "neither figure is the accuracy of the whole stock" in records

        with db.session() as s:  # a person recounts a flagged bin: the record was right after all
            task = audit.list_tasks(s, status="open", bin_code="b2")[0][0]
            audit.resolve(s, task.id, counted_quantity=task.expected_quantity, actor="ana")
        text = client.get("/").text
        assert (tile(text, "flagged"), tile(text, "in review")) == (1, 1)
        records = text.split('id="records"')[1].split("</section>")[0]
        assert re.search(r"<td>2</td><td>1</td><td>1 \(100.0%\)</td><td>1</td>", records)
    db.close()


def shown_metrics(text: str) -> list[dict]:
    """Each metrics table of a page as {header: value}."""
    out = []
    for table in re.findall(r'<table class="kv[^"]*">(.*?)</table>', text, re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
        heads = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th>(.*?)</th>", rows[0], re.S)]
        values = re.findall(r"<td>(.*?)</td>", rows[1], re.S) if len(rows) > 1 else []
        out.append(dict(zip(heads, values)))
    return out


def test_one_calibration_figure_in_plain_words(client):
    overview, model = client.get("/").text, client.get("/model").text
    gaps = {t["confidence gap"] for page in (overview, model) for t in shown_metrics(page)
            if "confidence gap" in t}
    # The overview's headline, the model page's and its evaluation report: one figure.
    assert len(gaps) == 1, gaps
    assert "protocol challenge" in overview and "protocol challenge" in model
    for page in (overview, model):
        assert '<abbr title="ECE: expected calibration error' in page
        assert '<abbr title="MAE: mean absolute error, in items">average miss, items</abbr>' in page
        assert not re.search(r"<th>(mae|rmse|ece|nll|within1)</th>", page)
    assert "validation average miss" in model  # the training curves name their lines so too

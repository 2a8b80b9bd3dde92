"""The overview's drift banner and /metrics' drift gauges, on a steady and on a shifted stream of
photos (inserted directly: tests/inventory/test_drift.py draws them)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from binventory.inventory.db import Database
from binventory.inventory.policy import Policy
from binventory.serving.predictor import Predictor
from tests.inventory.test_drift import (SHIFTED_MIX, SHIFTED_SHARES, add_photos, days_ago, draw,
                                        reference_policy, steady_days)
from tests.tiny import save_tiny_model
from tests.web.conftest import Inventory, TestClient, make_app


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    """Any model will do: the photos are inserted, not counted (no training needed)."""
    return Predictor.load(save_tiny_model(tmp_path_factory.mktemp("drift-model") / "model.pt"))


@pytest.fixture
def stream(predictor, tmp_path):
    """An app whose policy has a reference, over four steady days; the test adds today."""
    db = Database.open(f"sqlite:///{tmp_path / 'inventory.db'}", create=True)
    policy = reference_policy(model=predictor.model_id)
    rng = np.random.default_rng(0)
    steady_days(db, rng, days=4, model=predictor.model_id)
    yield db, rng, lambda: TestClient(make_app(predictor, Inventory(db, policy, "", tmp_path)))
    db.close()


def gauge(text: str, name: str, measure: str | None = None) -> float | None:
    label = rf'\{{measure="{measure}"\}}' if measure else ""
    found = re.search(rf"^{name}{label} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def test_a_steady_stream_shows_no_banner(stream, predictor):
    db, rng, client = stream
    add_photos(db, days_ago(0) - timedelta(hours=6), draw(rng, 150), reference_policy().stats
               ["reference"]["share"], rng, predictor.model_id)
    with client() as c:
        page = c.get("/").text
        assert 'id="drift"' not in page and 'id="drift-watch"' in page
        assert "Nothing moved past its bounds in the last 14 days" in page
        metrics = c.get("/metrics").text
    assert gauge(metrics, "binventory_drift_reference") == 1.0
    assert gauge(metrics, "binventory_drift_observations") == 150.0
    for m in ("share_confirm", "share_flag", "share_review", "mean_confidence", "count_hist"):
        assert gauge(metrics, "binventory_drift_warning", m) == 0.0, m
    assert gauge(metrics, "binventory_drift_reference_value", "share_confirm") == 0.6
    assert 0.45 < gauge(metrics, "binventory_drift_value", "share_confirm") < 0.75


def test_a_shifted_stream_shows_the_banner_and_raises_the_gauges(stream, predictor):
    db, rng, client = stream
    add_photos(db, days_ago(0) - timedelta(hours=6), draw(rng, 150, sharp=0.6, mix=SHIFTED_MIX),
               SHIFTED_SHARES, rng, predictor.model_id)
    today = f"{datetime.now(timezone.utc):%Y-%m-%d}"
    with client() as c:
        page = c.get("/").text
        metrics = c.get("/metrics").text
    banner = page.split('id="drift"', 1)[1].split("</section>", 1)[0]
    assert f"<li>{today}: share confirmed by photo" in banner
    assert "against 60.0% at calibration" in banner and "points); 150 photos" in banner
    assert "mean confidence" in banner and "predicted-count mix (PSI)" in banner
    assert "check the cameras" in banner and "binventory inventory calibrate" in banner
    assert banner.count("<li>") == 4  # confirm and review shares, confidence, count mix; not flag
    assert [gauge(metrics, "binventory_drift_warning", m) for m in
            ("share_confirm", "share_flag", "share_review", "mean_confidence", "count_hist")] == \
        [1.0, 0.0, 1.0, 1.0, 1.0]
    assert gauge(metrics, "binventory_drift_value", "count_hist") >= 0.25
    start = datetime.strptime(today, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    assert gauge(metrics, "binventory_drift_day_timestamp_seconds") == start


def test_no_reference_says_so(predictor, tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'inventory.db'}", create=True)
    rng = np.random.default_rng(1)
    add_photos(db, days_ago(1), draw(rng, 100, sharp=0.3, mix=SHIFTED_MIX), {"flag": 1.0}, rng,
               predictor.model_id)
    with TestClient(make_app(predictor, Inventory(db, Policy.default(), "", tmp_path))) as c:
        page, metrics = c.get("/").text, c.get("/metrics").text
    db.close()
    assert "No drift check: the policy in use has no calibration reference" in page
    assert 'id="drift"' not in page
    assert gauge(metrics, "binventory_drift_reference") == 0.0
    assert "binventory_drift_warning" not in metrics

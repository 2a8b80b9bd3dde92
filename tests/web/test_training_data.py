"""The model page and /readyz say plainly what the model learned from, and warn when a model
trained on synthetic bins only is judging photos."""
from __future__ import annotations

import copy

from binventory.app import create_app
from binventory.inventory.db import Database
from binventory.inventory.models import Model, utcnow
from binventory.inventory.policy import Policy
from binventory.model.artifact import load_artifact
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from tests.web.conftest import TestClient

SYNTHETIC = {"kind": "synthetic", "images": 1200, "synthetic_images": 1200,
             "splits": {"train": 960, "val": 120, "test": 120}, "root": "data/demo/synth"}


def test_training_records_what_the_model_learned_from(model_path):
    # The session's tiny run trained on 42 photo files with no generator's marker beside them.
    summary = load_artifact(model_path).metrics["training_data"]
    assert (summary["kind"], summary["images"], summary["synthetic_images"]) == ("real", 42, 0)
    assert sum(summary["splits"].values()) == 42


def test_readyz_and_model_page_warn_of_a_synthetic_model(model_path, tmp_path):
    predictor = Predictor.load(model_path)
    predictor.counting.metrics = {**copy.deepcopy(predictor.counting.metrics), "training_data": SYNTHETIC}
    db = Database.open(f"sqlite:///{tmp_path / 'inventory.db'}", create=True)
    with db.session() as session:
        session.add(Model(version=predictor.model_id, path=str(model_path),
                          metrics=predictor.counting.metrics, last_used_at=utcnow()))
    app = create_app(predictor, Settings(max_wait_ms=1), db=db, policy=Policy.default(),
                     image_dir=tmp_path / "photos")
    with TestClient(app) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["training_data"]["kind"] == "synthetic"
        assert "trained on synthetic bins only (1,200 drawn images" in ready["training_data_warning"]
        text = client.get("/model").text
        assert "Trained on synthetic bins only: 1,200 drawn images (train 960, val 120, test 120)." in text
        assert '<p class="error" role="alert">This model was trained on synthetic bins only' in text
    db.close()


def test_a_real_model_carries_no_warning(predictor, client):
    ready = client.get("/readyz").json()
    assert ready["training_data"]["kind"] == "real" and ready["training_data_warning"] is None
    text = client.get("/model").text
    assert "Trained on real photos: 42 images" in text and 'role="alert"' not in text

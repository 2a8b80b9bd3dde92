"""A small real inventory for the dashboard's tests: ABID-style bins imported into SQLite, photos
judged by the tiny model with thresholds that give a mix of confirm, flag and review, one task
already resolved (a ledger entry), and an API token."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import uvicorn
from PIL import Image
from sqlalchemy import select

from binventory.app import create_app
from binventory.inventory import audit
from binventory.inventory.db import Database
from binventory.inventory.importer import import_abid
from binventory.inventory.models import AuditTask, Model
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import reconcile
from binventory.inventory.tokens import create_token
from binventory.inventory.verify import BlindVerifier
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from tests.conftest import write_item
from tests.tiny import image_bytes, save_tiny_model

with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

N_BINS = 15
UNSEEN_BIN = "99999"  # in the inventory, never photographed
HEADLINE = {"n": 1200, "accuracy": 0.71, "within1": 0.93, "mae": 0.38, "rmse": 0.74, "ece": 0.031}


@dataclass
class Inventory:
    db: Database
    policy: Policy
    token: str
    folder: Path


def write_run_files(folder: Path) -> None:
    """What training, ``binventory evaluate`` and diagnostics leave beside a model.pt."""
    with (folder / "metrics.jsonl").open("w") as f:
        for epoch in range(1, 6):
            f.write(json.dumps({"epoch": epoch, "train_loss": 2.0 / epoch, "train_accuracy": 0.3 + 0.1 * epoch,
                                "val_accuracy": 0.25 + 0.08 * epoch, "val_nll": 1.8 / epoch ** 0.5,
                                "val_mae": 1.2 / epoch, "val_rmse": 1.6 / epoch}) + "\n")
    (folder / "eval-test").mkdir()
    names = ["0", "1", "2"]
    (folder / "eval-test" / "metrics.json").write_text(json.dumps({
        "split": "test", "protocols": {"challenge": {
            "n": 30, "accuracy": 0.7, "within1": 0.9, "mae": 0.4, "rmse": 0.7, "nll": 0.8, "ece": 0.05,
            "confusion": [[9, 1, 0], [2, 7, 1], [0, 3, 7]], "class_names": names,
            "reliability": {"confidence": [None, 0.45, 0.7, 0.93], "accuracy": [None, 0.4, 0.75, 0.9]}}}}))
    Image.new("RGB", (60, 40), (200, 220, 255)).save(folder / "eval-test" / "confusion_challenge.png")
    Image.new("RGB", (60, 40), (255, 230, 200)).save(folder / "eval-test" / "reliability_challenge.png")
    (folder / "rules.json").write_text(json.dumps({"rules": [
        {"rule": "loss_plateau", "status": "ok", "evidence": "loss fell 80% over the run", "advice": ""},
        {"rule": "dead_layers", "status": "issue_found", "evidence": "2 layers never updated",
         "advice": "check the learning rate"}], "stopped_by": []}))
    (folder / "report.html").write_text("<!doctype html><title>Training report</title>"
                                         "<h1>Training report</h1><p>diagnostics for the test run</p>")


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("web-model")
    write_run_files(folder)
    return save_tiny_model(folder / "model.pt")


@pytest.fixture(scope="session")
def predictor(model_path) -> Predictor:
    return Predictor.load(model_path)


def mixed_policy(predictor: Predictor, photos: list[bytes], expected: list[int]) -> Policy:
    """Thresholds between the scores' thirds: about a third each of confirm, review and flag."""
    scores = sorted(p.probabilities.get(str(e), 0.0) for p, e in zip(predictor.predict(photos), expected))
    k, j = len(scores) // 3, 2 * len(scores) // 3
    return Policy(BlindVerifier(), t_confirm=(scores[j - 1] + scores[j]) / 2,
                  t_flag=(scores[k - 1] + scores[k]) / 2, stats={"calibrated": False})


def build_inventory(folder: Path, predictor: Predictor, model_path: Path) -> Inventory:
    root = folder / "abid"
    photos, expected = [], []
    now = datetime.now(timezone.utc)
    for i in range(N_BINS):
        code, count, photo = f"{i + 1:05d}", i % 6, image_bytes(i)
        write_item(root, code, count=count, image=photo)
        day = (now - timedelta(days=i % 4)).timestamp()  # photos over four days
        os.utime(root / "bin-images" / f"{code}.jpg", (day, day))
        photos.append(photo)
        expected.append(count)
    write_item(root, UNSEEN_BIN, count=3)
    db = Database.open(f"sqlite:///{folder / 'inventory.db'}", create=True)
    import_abid(db, root, workers=1, progress=False)
    policy = mixed_policy(predictor, photos, expected)
    reconcile(db, predictor, policy, root / "bin-images", model_path=str(model_path), workers=1,
              progress=False)
    with db.session() as session:
        # What a trained artifact carries (the tiny model has no evaluation of its own).
        session.get(Model, predictor.model_id).metrics = {"test": {"all": HEADLINE}}
        token = create_token(session, "alice")
        first = session.scalars(select(AuditTask).where(AuditTask.status == "open")
                                .order_by(AuditTask.priority)).first()
        audit.resolve(session, first.id, counted_quantity=first.expected_quantity + 1, actor="bob",
                      reason_code="found")
    return Inventory(db, policy, token, folder)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory, predictor, model_path) -> Inventory:
    inv = build_inventory(tmp_path_factory.mktemp("inventory"), predictor, model_path)
    yield inv
    inv.db.close()


@pytest.fixture(scope="module")
def empty_inventory(tmp_path_factory) -> Inventory:
    folder = tmp_path_factory.mktemp("empty")
    db = Database.open(f"sqlite:///{folder / 'inventory.db'}", create=True)
    with db.session() as session:
        token = create_token(session, "alice")
    yield Inventory(db, Policy.default(), token, folder)
    db.close()


def make_app(predictor: Predictor, inv: Inventory):
    return create_app(predictor, Settings(max_wait_ms=1), db=inv.db, policy=inv.policy,
                      image_dir=inv.folder / "observations")


@pytest.fixture(scope="module")
def client(predictor, inventory):
    with TestClient(make_app(predictor, inventory)) as c:
        yield c


@pytest.fixture(scope="module")
def empty_client(predictor, empty_inventory):
    with TestClient(make_app(predictor, empty_inventory)) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app under real uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "the server stopped while starting"
            assert time.monotonic() < deadline, "server not started within 60 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

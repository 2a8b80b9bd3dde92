"""A small real inventory for the dashboard's tests: ABID-style bins imported into SQLite, photos
judged by a tiny model trained for the session (so its run files are the ones training really
writes) with thresholds that give a mix of confirm, flag and review, one task already resolved (a
ledger entry), and an API token."""
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
from sqlalchemy import select

from binventory.app import create_app
from binventory.inventory import audit
from binventory.inventory.db import Database
from binventory.inventory.importer import import_abid
from binventory.inventory.models import AuditTask
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import reconcile
from binventory.inventory.tokens import create_token
from binventory.inventory.verify import BlindVerifier
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from tests.conftest import write_item
from tests.tiny import image_bytes

with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

N_BINS = 15
UNSEEN_BIN = "99999"  # in the inventory, never photographed


@dataclass
class Inventory:
    db: Database
    policy: Policy
    token: str
    folder: Path


def train_run(folder: Path) -> Path:
    """A real tiny training run and its evaluation: model.pt with the metrics.jsonl, rules.json,
    report.html and eval-test/ that ``binventory train`` and ``binventory evaluate`` leave."""
    from binventory.cli import main
    from binventory.data.manifest import build_manifest, write_manifest
    from binventory.data.split import assign_splits
    from tests.training.conftest import TINY

    data = folder / "data"
    for i in range(42):
        write_item(data, f"{i + 1:05d}", count=i % 6, image=image_bytes(500 + i))
    manifest = data / "manifest.parquet"
    df = build_manifest(data, workers=1, progress=False)
    write_manifest(assign_splits(df, protocol="challenge", seed=0, ratios=(0.6, 0.2, 0.2)),
                   manifest, data)
    run = folder / "run"
    assert main(["train", "--manifest", str(manifest), "--output", str(run), "--epochs", "3",
                 *TINY, "--diagnostics-every", "1"]) == 0
    assert main(["evaluate", "--model", str(run / "model.pt"), "--manifest", str(manifest),
                 "--split", "test", "--protocols", "challenge", "--workers", "0",
                 "--out", str(run / "eval-test")]) == 0
    return run / "model.pt"


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("web-model"))


@pytest.fixture(scope="session")
def run_files(model_path) -> dict:
    """What the dashboard should show of the run: the artifact's name and test accuracy, the
    rules diagnostics evaluated and the evaluated classes."""
    from binventory.model.artifact import load_artifact

    artifact = load_artifact(model_path)
    folder = model_path.parent
    rules = json.loads((folder / "rules.json").read_text())["rules"]
    evaluation = json.loads((folder / "eval-test" / "metrics.json").read_text())
    # The pages' headline is the first evaluation protocol's, as the evaluation report's is.
    return {"name": artifact.name, "test_accuracy": artifact.metrics["test"]["challenge"]["accuracy"],
            "rules": [r["rule"] for r in rules],
            "classes": evaluation["protocols"]["challenge"]["class_names"]}


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
    # The same photo store as the app's (make_app): photos are recorded relative to it.
    reconcile(db, predictor, policy, root / "bin-images", model_path=str(model_path), workers=1,
              image_dir=folder / "observations", progress=False)
    with db.session() as session:
        token = create_token(session, "alice")
        # A bin with SKUs: a surplus in an empty bin would need per-SKU counts.
        first = session.scalars(select(AuditTask).where(AuditTask.status == "open",
                                                        AuditTask.expected_quantity > 0)
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

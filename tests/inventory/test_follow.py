"""``serve --follow-registry``: a promotion in the registry changes the served model (and the
policy that judges its photos) within a poll, without a restart; every replica on the database
follows on its own; an active model that cannot load leaves the one before serving and says so
on /readyz, and is tried again at the next poll. On SQLite and PostgreSQL."""
from __future__ import annotations

import itertools
import time
import warnings
from pathlib import Path

import pytest

from binventory import BinventoryError
from binventory.app import create_app, serve_app
from binventory.cli import build_parser
from binventory.inventory import registry
from binventory.inventory.policy import Policy
from binventory.inventory.tokens import create_token
from binventory.inventory.verify import BlindVerifier
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from tests.inventory.helpers import load, make_dataset
from tests.tiny import image_bytes, save_tiny_model

with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

POLL_S = 0.2


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """Two models that differ in weights, id and image size."""
    folder = tmp_path_factory.mktemp("models")
    return {"a": save_tiny_model(folder / "a" / "model.pt", name="model-a", seed=0),
            "b": save_tiny_model(folder / "b" / "model.pt", name="model-b", seed=1, image_size=48)}


def model_id(path: Path) -> str:
    return Predictor.load(path).model_id


def confirm_all(model_id: str) -> Policy:
    return Policy(BlindVerifier(), t_confirm=1e-9, t_flag=0.0, model_version=model_id)


def confirm_none(model_id: str) -> Policy:
    return Policy(BlindVerifier(), t_confirm=1.5, t_flag=1.0, model_version=model_id)


def promote(db, path: Path, policy: Policy | None = None) -> str:
    with db.session() as s:
        version = registry.register(s, path, policy=policy).version
        registry.promote(s, version, force=True)
    return version


def follow_app(db, path: Path, image_dir: Path):
    return create_app(Predictor.load(path), Settings(max_wait_ms=1), db=db, image_dir=image_dir,
                      follow_registry=POLL_S)


def wait_for_model(client, version: str, timeout: float = 20.0) -> float:
    """Seconds until /readyz says ``version`` is serving."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if client.get("/readyz").json()["model_version"] == version:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"still serving {client.get('/readyz').json()} after {timeout} s")


def upload(client, token: str, seed: int = 4) -> dict:
    r = client.post("/v1/bins/bin004/observations", content=image_bytes(seed),
                    headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    return r.json()


def test_replicas_follow_a_promotion_with_its_policy_without_a_restart(db, tmp_path, artifacts):
    load(db, make_dataset(tmp_path / "abid", images=False))
    with db.session() as s:
        token = create_token(s, "robot")
    a = promote(db, artifacts["a"], confirm_all(model_id(artifacts["a"])))
    replicas = [follow_app(db, artifacts["a"], tmp_path / "photos") for _ in range(2)]
    with TestClient(replicas[0]) as one, TestClient(replicas[1]) as two:
        for c in (one, two):
            ready = c.get("/readyz").json()
            assert ready["model_version"] == a and ready["registry"]["error"] is None
        assert upload(one, token)["decision"] == "confirm"

        b = promote(db, artifacts["b"], confirm_none(model_id(artifacts["b"])))
        for c in (one, two):  # each replica on its own, within a poll (and the load of b)
            assert wait_for_model(c, b) < POLL_S + 10
            assert c.post("/v1/count", content=image_bytes(5),
                          headers={"Content-Type": "image/jpeg"}).json()["model_version"] == b
        # The new model's photos are judged by the new model's policy, not the old one's.
        seen = upload(two, token, seed=6)
        assert (seen["model_version"], seen["decision"]) != (a, "confirm")
        assert seen["model_version"] == b and seen["decision"] in ("flag", "review")
        assert 'binventory_model_info{model_version="%s"} 1.0' % b in one.get("/metrics").text


def test_a_broken_active_model_keeps_the_old_one_serving_until_it_loads(db, tmp_path, artifacts):
    a = promote(db, artifacts["a"])
    broken = tmp_path / "b" / "model.pt"
    broken.parent.mkdir()
    broken.write_bytes(artifacts["b"].read_bytes())
    with db.session() as s:
        b = registry.register(s, broken).version
    broken.write_bytes(b"not a model at all")
    with TestClient(follow_app(db, artifacts["a"], tmp_path / "photos")) as c:
        with db.session() as s:
            registry.promote(s, b, force=True)
        deadline = time.monotonic() + 10
        while (ready := c.get("/readyz").json())["registry"]["error"] is None:
            assert time.monotonic() < deadline, ready
            time.sleep(0.05)
        assert ready["status"] == "ready" and ready["model_version"] == a
        assert ready["registry"]["active"] == b and str(broken) in ready["registry"]["error"]
        r = c.post("/v1/count", content=image_bytes(5), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200 and r.json()["model_version"] == a

        broken.write_bytes(artifacts["b"].read_bytes())  # fixed: the next poll loads it
        wait_for_model(c, b)
        assert c.get("/readyz").json()["registry"]["error"] is None


def test_a_new_policy_for_the_active_model_is_followed(db, tmp_path, artifacts):
    load(db, make_dataset(tmp_path / "abid", images=False))
    with db.session() as s:
        token = create_token(s, "robot")
    a = promote(db, artifacts["a"], confirm_all(model_id(artifacts["a"])))
    with TestClient(follow_app(db, artifacts["a"], tmp_path / "photos")) as c:
        assert upload(c, token, seed=1)["decision"] == "confirm"
        with db.session() as s:  # calibrated again: same model, new thresholds
            registry.register(s, artifacts["a"], policy=confirm_none(a))
        deadline = time.monotonic() + 10
        for seed in itertools.count(2):  # a new photo each time: a repeat is answered as before
            seen = upload(c, token, seed)
            if seen["decision"] != "confirm":
                break
            assert time.monotonic() < deadline, seen
            time.sleep(POLL_S / 2)
        assert seen["model_version"] == a and seen["decision"] == "flag"


def serve_args(db, tmp_path, *options):
    return build_parser().parse_args(["serve", "--backend", "torch", "--db", str(db.engine.url.render_as_string(
        hide_password=False)), "--image-dir", str(tmp_path), "--follow-registry", *options])


def test_serve_follow_registry_starts_on_the_active_model(db, tmp_path, artifacts):
    with pytest.raises(BinventoryError, match="no active model"):
        serve_app(serve_args(db, tmp_path))
    b = promote(db, artifacts["b"], confirm_none(model_id(artifacts["b"])))
    with TestClient(serve_app(serve_args(db, tmp_path, "--registry-poll", "30"))) as c:
        ready = c.get("/readyz").json()
        assert ready["model_version"] == b and ready["registry"]["poll_s"] == 30
    with pytest.raises(BinventoryError, match="drop --no-inventory"):
        serve_app(serve_args(db, tmp_path, "--no-inventory"))

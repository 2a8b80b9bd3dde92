"""``binventory serve --policy`` checks, as ``reconcile`` does, that the policy was calibrated for
the served model: it refuses another model's policy, or serves it with --allow-policy-mismatch
and says so on /readyz and on every dashboard page."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from binventory.app import create_app, serve_app
from binventory.cli import build_parser, main
from binventory.inventory.policy import Policy
from binventory.inventory.verify import BlindVerifier
from binventory.serving.service import Settings
from tests.web.conftest import TestClient, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served_db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('served') / 'inventory.db'}"
    assert main(["inventory", "migrate", "--db", url]) == 0
    return url


def policy_file(folder: Path, model_id: str | None) -> Path:
    return Policy(BlindVerifier(), 0.9, 0.1, model_version=model_id).save(folder / "policy.json")


def serve_args(model_path, db_url, policy, folder, *options):
    return build_parser().parse_args(["serve", "--model", str(model_path), "--backend", "torch",
                                      "--db", db_url, "--policy", str(policy), "--image-dir",
                                      str(folder), *options])


def test_serve_refuses_a_policy_for_another_model(model_path, served_db, tmp_path):
    policy = policy_file(tmp_path, "someone-else")
    # The real command line: it must exit with the reason, not start listening.
    done = subprocess.run([sys.executable, "-m", "binventory", "serve", "--model", str(model_path),
                           "--backend", "torch", "--db", served_db, "--policy", str(policy),
                           "--port", str(free_port()), "--image-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "calibrated for model 'someone-else'" in done.stderr
    assert "--allow-policy-mismatch" in done.stderr and "Traceback" not in done.stderr


def test_the_override_is_reported_by_readyz_and_the_dashboard(model_path, predictor, served_db, tmp_path):
    args = serve_args(model_path, served_db, policy_file(tmp_path, "someone-else"), tmp_path,
                      "--allow-policy-mismatch")
    with TestClient(serve_app(args)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert "'someone-else'" in ready.json()["policy_mismatch"]
        assert repr(predictor.model_id) in ready.json()["policy_mismatch"]
        for path in ("/", "/model", "/audit"):
            text = c.get(path).text
            assert 'id="policy-mismatch"' in text and "--allow-policy-mismatch" in text, path
            assert "calibrated for model &#39;someone-else&#39;" in text, path


@pytest.mark.parametrize("calibrated_for", ["this model", None])
def test_a_fitting_policy_serves_without_a_warning(model_path, predictor, served_db, tmp_path, calibrated_for):
    model_id = predictor.model_id if calibrated_for else None
    with TestClient(serve_app(serve_args(model_path, served_db, policy_file(tmp_path, model_id), tmp_path))) as c:
        assert c.get("/readyz").json()["policy_mismatch"] is None
        assert 'id="policy-mismatch"' not in c.get("/").text


def test_the_app_itself_refuses_another_models_policy(predictor, inventory):
    from binventory import BinventoryError

    policy = Policy(BlindVerifier(), 0.9, 0.1, model_version="someone-else")
    with pytest.raises(BinventoryError, match="calibrated for model 'someone-else'"):
        create_app(predictor, Settings(), db=inventory.db, policy=policy)


def test_the_model_page_says_when_the_policy_is_for_another_model(predictor, inventory):
    # The page of a model that judged this inventory, viewed while another model is served.
    policy = Policy(BlindVerifier(), 0.9, 0.1, model_version="someone-else")
    app = create_app(predictor, Settings(), db=inventory.db, policy=policy, allow_policy_mismatch=True)
    with TestClient(app) as c:
        text = c.get("/model").text
    assert "These thresholds were calibrated for model someone-else" in text

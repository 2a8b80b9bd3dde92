"""reconcile: photos in, observations and audit tasks out; idempotent, and a crash mid-way then a
rerun ends where one clean run does."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sqlalchemy import func, select

from binventory.cli import main
from binventory.inventory import reconcile as reconcile_mod
from binventory.inventory.db import Database
from binventory.inventory.models import Model, Observation
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import reconcile
from binventory.inventory.verify import BlindVerifier, p_expected
from binventory.serving.predictor import Predictor
from tests.conftest import jpeg_bytes
from tests.inventory.helpers import COUNTS, load, make_dataset, snapshot
from tests.tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def predictor(model_path):
    return Predictor.load(model_path)


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "abid")


@pytest.fixture
def policy(predictor, dataset):
    """Thresholds at the tiny model's score terciles, so every decision occurs."""
    from PIL import Image
    pixels = np.stack([predictor.preprocess.from_image(Image.open(p).convert("RGB"))
                       for p in sorted((dataset / "bin-images").glob("*.jpg"))])
    scores = p_expected(predictor.predict_arrays(pixels), predictor.classes, list(COUNTS.values()))
    low, high = np.quantile(scores, [0.3, 0.7])
    return Policy(BlindVerifier(), t_confirm=float(high), t_flag=float(low))


def run(db, predictor, policy, dataset, **kw):
    size = kw.pop("batch_size", 4)
    return reconcile(db, predictor, policy, dataset, batch_size=size, commit_every=size, workers=2,
                     progress=False, **kw)


def test_reconcile_judges_every_photo_once(db, predictor, policy, dataset):
    load(db, dataset)
    report = run(db, predictor, policy, dataset)
    assert (report.images, report.observed, report.already_seen) == (len(COUNTS), len(COUNTS), 0)
    assert set(report.decisions) == {"confirm", "flag", "review"}
    state = snapshot(db)
    decided = {code: decision for code, _, _, _, _, decision, _ in state["observations"]}
    # Every flagged or reviewed bin, and no confirmed one, has an open task.
    assert {t[0] for t in state["tasks"]} == {c for c, d in decided.items() if d != "confirm"}
    assert all(e == COUNTS[c] for c, _, _, _, e, _, _ in state["observations"])
    again = run(db, predictor, policy, dataset)
    assert (again.observed, again.already_seen) == (0, len(COUNTS))
    assert snapshot(db) == state


@pytest.mark.slow
def test_a_retrained_model_judges_the_photos_again(db, predictor, policy, dataset, tmp_path):
    # Same name, backbone and data as the first model (what a rerun of `train` gives): only
    # the weights differ, and its judgements must not be taken for the old model's.
    retrained = Predictor.load(save_tiny_model(tmp_path / "retrained.pt", seed=1))
    assert retrained.model_name == predictor.model_name
    load(db, dataset)
    run(db, predictor, policy, dataset)
    policy.model_version = None  # the thresholds are the test's, not either model's
    report = run(db, retrained, policy, dataset)
    assert (report.observed, report.already_seen) == (len(COUNTS), 0)
    with db.session() as session:
        models = session.execute(select(Model.version, Model.name)).all()
        per_model = dict(session.execute(select(Observation.model_version, func.count())
                                         .group_by(Observation.model_version)).all())
    assert sorted(models) == sorted([(predictor.model_id, "test-v1"), (retrained.model_id, "test-v1")])
    assert per_model == {predictor.model_id: len(COUNTS), retrained.model_id: len(COUNTS)}


@pytest.mark.slow
def test_unknown_bins_and_bad_photos_are_reported_not_fatal(db, predictor, policy, dataset):
    load(db, dataset)
    (dataset / "bin-images" / "stranger.jpg").write_bytes(jpeg_bytes())
    (dataset / "bin-images" / "bin003.jpg").write_bytes(b"not a jpeg at all")
    report = run(db, predictor, policy, dataset)
    assert report.unknown_bins == ["stranger"]
    assert [src.rsplit("/", 1)[-1] for src, _ in report.errors] == ["bin003.jpg"]
    assert report.observed == len(COUNTS) - 1
    assert "stranger" in report.describe()


class Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between_batches", "inside_a_batch"])
def test_a_crash_then_a_rerun_ends_like_one_clean_run(db_url, tmp_path, predictor, policy, dataset,
                                                      monkeypatch, where):
    clean = Database.open(f"sqlite:///{tmp_path / 'clean.db'}", create=True)
    load(clean, dataset)
    run(clean, predictor, policy, dataset)

    db = Database.open(db_url, create=True)
    load(db, dataset)
    batches = {"n": 0}
    real_judge, real_open_tasks = reconcile_mod.judge, reconcile_mod.open_tasks

    def judge(*args, **kw):  # the third batch dies before it writes, or half-way through
        batches["n"] += 1
        if batches["n"] == 3 and where == "between_batches":
            raise Crash
        return real_judge(*args, **kw)

    def open_tasks(*args, **kw):  # runs after the batch's observations are inserted
        if batches["n"] == 3:
            raise Crash
        return real_open_tasks(*args, **kw)

    monkeypatch.setattr(reconcile_mod, "judge", judge)
    monkeypatch.setattr(reconcile_mod, "open_tasks", open_tasks)
    with pytest.raises(Crash):
        run(db, predictor, policy, dataset)
    with db.reader() as s:
        partial = s.scalar(select(func.count(Observation.id)))
    assert 0 < partial < len(COUNTS)
    monkeypatch.undo()
    run(db, predictor, policy, dataset)
    assert snapshot(db) == snapshot(clean)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_a_clean_run(tmp_path, model_path, predictor, policy):
    counts = {f"bin{i:03d}": i % 6 for i in range(150)}
    dataset = make_dataset(tmp_path / "abid", counts)
    policy_path = policy.save(tmp_path / "policy.json")
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("clean", "killed")}
    for url in urls.values():
        load(Database.open(url, create=True), dataset)
    args = ["reconcile", "--model", str(model_path), "--input", str(dataset), "--policy",
            str(policy_path), "--batch-size", "1", "--commit-every", "1", "--workers", "1"]
    assert main([*args, "--db", urls["clean"]]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "binventory.cli", *args, "--db", urls["killed"]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = Database.open(urls["killed"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        with killed.reader() as s:
            if s.scalar(select(func.count(Observation.id))):
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with killed.reader() as s:
        assert s.scalar(select(func.count(Observation.id))) < len(counts), "finished before the kill"
    assert main([*args, "--db", urls["killed"]]) == 0
    assert snapshot(killed) == snapshot(Database.open(urls["clean"]))


def test_a_policy_for_another_model_is_refused(tmp_path, model_path, dataset, capsys):
    path = Policy(BlindVerifier(), 0.9, 0.1, model_version="someone-else").save(tmp_path / "p.json")
    code = main(["reconcile", "--model", str(model_path), "--input", str(dataset), "--policy", str(path),
                 "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert code == 2
    assert "calibrated for model 'someone-else'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_policy_for_the_model_before_a_retrain_is_refused(tmp_path, predictor, dataset, capsys):
    retrained = save_tiny_model(tmp_path / "retrained.pt", seed=1)  # same name, new weights
    path = Policy(BlindVerifier(), 0.9, 0.1, model_version=predictor.model_id).save(tmp_path / "p.json")
    code = main(["reconcile", "--model", str(retrained), "--input", str(dataset), "--policy", str(path),
                 "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert code == 2
    assert f"calibrated for model {predictor.model_id!r}" in capsys.readouterr().err


def test_reconcile_one_split_of_a_manifest(db, predictor, policy, dataset):
    from binventory.data.manifest import build_manifest, write_manifest

    df = build_manifest(dataset, progress=False)
    df["split"] = ["test" if i % 3 == 0 else "train" for i in range(len(df))]
    manifest = dataset / "manifest.parquet"
    write_manifest(df, manifest, dataset)
    load(db, dataset)
    report = run(db, predictor, policy, manifest, split="test")
    assert report.observed == len(df[df.split == "test"]) == 4
    with db.reader() as s:
        observed = {o.bin.code for o in s.scalars(select(Observation))}
    assert observed == set(df[df.split == "test"].image_id)

"""Two writers at once, as two service replicas on one database are: the second writer of a model
row or of a bin's active audit task waits for the first and joins what it made (no error)."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text

from binventory.inventory import audit
from binventory.inventory.models import ACTIVE_STATUSES, AuditTask, Model, Observation, utcnow
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import register_model
from binventory.serving.predictor import Predictor
from tests.inventory.helpers import load, make_dataset
from tests.tiny import save_tiny_model


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.load(save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt"))


class Second:
    """Runs ``fn(session)`` in its own transaction on another thread, as a second replica would."""

    def __init__(self, db, fn):
        self.error: BaseException | None = None

        def run():
            try:
                with db.session() as session:
                    fn(session)
            except BaseException as e:  # noqa: BLE001 -- the error is what the test looks at
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_blocked(self, db) -> None:
        """Until the second writer waits on the first one's uncommitted rows."""
        if db.dialect != "postgresql":
            time.sleep(0.5)  # SQLite shows no waiters; half a second is ample to reach its write lock
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.thread.is_alive():
            with db.reader() as s:
                if s.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                    return
            time.sleep(0.05)

    def join(self) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the second writer hung"
        if self.error is not None:
            raise self.error


def test_two_replicas_register_the_same_model_at_once(db, predictor):
    policy = Policy.default()
    first = db.reader()
    register_model(first, predictor, policy)
    first.flush()  # the first replica's row exists, uncommitted
    second = Second(db, lambda s: register_model(s, predictor, policy))
    second.wait_blocked(db)
    first.commit()
    first.close()
    second.join()  # before: IntegrityError, duplicate key on model_pkey (HTTP 500 in the API)
    with db.reader() as s:
        assert s.scalars(select(Model.version)).all() == [predictor.model_id]


def _observe(session, code: str, reason: str, priority: float) -> None:
    found = audit.get_bin(session, code)
    obs = Observation(bin_id=found.id, image_uri=f"/x/{code}-{priority}.jpg",
                      image_sha256=f"{code}{priority}".ljust(64, "0"), captured_at=utcnow(),
                      model_version="m", predicted_count=1, probabilities={}, expected_quantity=5,
                      decision=reason, score=0.1, created_at=utcnow())
    session.add(obs)
    session.flush()
    audit.open_tasks(session, [(found.id, obs.id, audit.Finding(reason, priority, 1, 5))])


def test_two_uploads_for_one_bin_open_one_task(db, tmp_path):
    load(db, make_dataset(tmp_path / "abid", {"b5": 5, "b3": 3}, images=False))
    first = db.reader()
    _observe(first, "b5", "flag", 2.0)  # the first upload's task, uncommitted
    second = Second(db, lambda s: _observe(s, "b5", "review", 0.5))
    second.wait_blocked(db)
    first.commit()
    first.close()
    second.join()  # before: IntegrityError on uq_audit_task_active
    with db.reader() as s:
        tasks = s.scalars(select(AuditTask).where(AuditTask.status.in_(ACTIVE_STATUSES))).all()
        assert len(tasks) == 1
        newest = s.scalar(select(func.max(Observation.id)))
        # The second upload joined the first's task: its evidence, but a flag is never demoted.
        assert (tasks[0].observation_id, tasks[0].reason, tasks[0].priority) == (newest, "flag", 2.0)


def test_a_stale_read_never_demotes_a_flag(db, tmp_path):
    """The second writer read the task as a review before the first made it a flag."""
    load(db, make_dataset(tmp_path / "abid", {"b5": 5}, images=False))
    with db.session() as s:
        _observe(s, "b5", "review", 0.5)
    first = db.reader()
    _observe(first, "b5", "flag", 2.0)  # holds the task's row, uncommitted
    second = Second(db, lambda s: _observe(s, "b5", "review", 0.7))
    second.wait_blocked(db)
    first.commit()
    first.close()
    second.join()
    with db.reader() as s:
        task = s.scalar(select(AuditTask).where(AuditTask.status.in_(ACTIVE_STATUSES)))
        assert (task.reason, task.priority) == ("flag", 2.0)


def test_evidence_for_a_task_closed_meanwhile_opens_a_new_one(db, tmp_path):
    load(db, make_dataset(tmp_path / "abid", {"b5": 5}, images=False))
    with db.session() as s:
        _observe(s, "b5", "flag", 2.0)
        task_id = s.scalar(select(AuditTask.id))
    first = db.reader()
    audit.resolve(first, task_id, counted_quantity=5, actor="ana")  # a person closes it, uncommitted
    second = Second(db, lambda s: _observe(s, "b5", "review", 0.7))
    second.wait_blocked(db)
    first.commit()
    first.close()
    second.join()
    with db.reader() as s:
        tasks = {t.id: t for t in s.scalars(select(AuditTask))}
        newest = s.scalar(select(func.max(Observation.id)))
    assert tasks[task_id].status == "resolved" and tasks[task_id].observation_id != newest
    [fresh] = [t for t in tasks.values() if t.status == "open"]
    assert (fresh.observation_id, fresh.reason) == (newest, "review")

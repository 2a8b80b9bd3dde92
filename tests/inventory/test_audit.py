"""The audit workflow and the ledger: claim, resolve, adjustments, one active task per bin."""
import pytest
from sqlalchemy import select

from binventory.inventory import audit
from binventory.inventory.models import ACTIVE_STATUSES, Adjustment, AuditTask, Bin, Observation, utcnow
from tests.inventory.helpers import load, make_dataset


@pytest.fixture
def inventory(db, tmp_path):
    load(db, make_dataset(tmp_path / "abid", {"b3": 3, "b5": 5, "b0": 0}, images=False))
    return db


def observe(db, code: str, reason: str = "flag", priority: float = 1.5, predicted: int = 1) -> int:
    """An observation of ``code`` and the task it opens; returns the task id."""
    with db.session() as s:
        found = audit.get_bin(s, code)
        expected = audit.expected_quantity(s, found.id)
        obs = Observation(bin_id=found.id, image_uri=f"/x/{code}-{priority}.jpg",
                          image_sha256=f"{code}{priority}".ljust(64, "0"), captured_at=utcnow(),
                          model_version="m", predicted_count=predicted, probabilities={},
                          expected_quantity=expected, decision=reason, score=0.1, created_at=utcnow())
        s.add(obs)
        s.flush()
        audit.open_tasks(s, [(found.id, obs.id, audit.Finding(reason, priority, predicted, expected))])
        return s.scalar(select(AuditTask.id).where(AuditTask.bin_id == found.id,
                                                   AuditTask.status.in_(ACTIVE_STATUSES)))


def contents(db, code: str) -> dict[str, int]:
    with db.reader() as s:
        found = s.scalar(select(Bin).where(Bin.code == code))
        return {c.sku.asin: c.quantity for c in found.contents}


def test_a_count_that_agrees_closes_the_task_without_adjustment(inventory):
    task_id = observe(inventory, "b3")
    with inventory.session() as s:
        task, adjustments = audit.resolve(s, task_id, counted_quantity=3, actor="ana")
    assert (task.status, task.reason_code, task.resolved_by, adjustments) == \
        ("resolved", "count_confirmed", "ana", [])
    with inventory.reader() as s:
        assert audit.ledger(s) == []


def test_a_count_that_differs_writes_the_ledger_and_updates_the_record(inventory):
    task_id = observe(inventory, "b5")
    assert contents(inventory, "b5") == {"B00TEST000": 3, "B00TEST001": 2}
    with inventory.session() as s:
        with pytest.raises(audit.Invalid, match="reason_code must be one of"):
            audit.resolve(s, task_id, counted_quantity=1, actor="ana")
    with inventory.session() as s:
        task, adjustments = audit.resolve(s, task_id, counted_quantity=1, actor="ana",
                                          reason_code="miscount")
    # A shortfall of 4 comes off the largest line first and never goes below zero.
    assert contents(inventory, "b5") == {"B00TEST000": 0, "B00TEST001": 1}
    with inventory.reader() as s:
        rows = sorted((a.sku.asin, a.delta, a.quantity_before, a.quantity_after, a.reason_code, a.task_id)
                      for a in audit.ledger(s))
        assert audit.expected_quantity(s, audit.get_bin(s, "b5").id) == 1
    assert rows == [("B00TEST000", -3, 3, 0, "miscount", task_id),
                    ("B00TEST001", -1, 2, 1, "miscount", task_id)]


def test_a_surplus_goes_to_the_largest_line_and_per_sku_counts_are_exact(inventory):
    with inventory.session() as s:
        audit.resolve(s, observe(inventory, "b3"), counted_quantity=5, actor="ana", reason_code="found")
    assert contents(inventory, "b3") == {"B00TEST000": 4, "B00TEST001": 1}
    with inventory.session() as s:
        audit.resolve(s, observe(inventory, "b3", priority=2.0), counted_quantity=2, actor="ana",
                      reason_code="damaged", sku_counts={"B00TEST000": 0, "B00TEST001": 2})
    assert contents(inventory, "b3") == {"B00TEST000": 0, "B00TEST001": 2}


def test_per_sku_counts_must_add_up_and_name_known_skus(inventory):
    task_id = observe(inventory, "b3")
    with inventory.session() as s:
        with pytest.raises(audit.Invalid, match="add up to"):
            audit.resolve(s, task_id, counted_quantity=9, actor="a", reason_code="found",
                          sku_counts={"B00TEST000": 1})
    with inventory.session() as s:
        with pytest.raises(audit.NotFound, match="unknown SKU"):
            audit.resolve(s, task_id, counted_quantity=4, actor="a", reason_code="found",
                          sku_counts={"NOPE": 1})


@pytest.mark.parametrize("bad", [-1, True, "3", 2.5])
def test_bad_quantities_are_refused(inventory, bad):
    task_id = observe(inventory, "b3")
    with inventory.session() as s:
        with pytest.raises(audit.Invalid, match="non-negative integer"):
            audit.resolve(s, task_id, counted_quantity=bad, actor="a", reason_code="miscount")


def test_an_empty_bin_needs_per_sku_counts(inventory):
    task_id = observe(inventory, "b0")
    with inventory.session() as s:
        with pytest.raises(audit.Invalid, match="holds no SKUs"):
            audit.resolve(s, task_id, counted_quantity=1, actor="a", reason_code="found")
    with inventory.session() as s:
        audit.resolve(s, task_id, counted_quantity=1, actor="a", reason_code="found",
                      sku_counts={"B00TEST001": 1})
    assert contents(inventory, "b0") == {"B00TEST001": 1}


def test_claim_and_resolve_follow_the_task_states(inventory):
    task_id = observe(inventory, "b3")
    with inventory.session() as s:
        assert audit.claim(s, task_id, "ana").status == "in_progress"
        assert audit.claim(s, task_id, "ana").assignee == "ana"  # twice by the same person: fine
    with inventory.session() as s:
        with pytest.raises(audit.Conflict, match="claimed by ana"):
            audit.claim(s, task_id, "bo")
    with inventory.session() as s:
        audit.resolve(s, task_id, counted_quantity=3, actor="ana")
    for action in (lambda s: audit.resolve(s, task_id, counted_quantity=3, actor="bo"),
                   lambda s: audit.claim(s, task_id, "bo"),
                   lambda s: audit.cancel(s, task_id, "bo")):
        with inventory.session() as s:
            with pytest.raises(audit.Conflict):
                action(s)
    with inventory.session() as s:
        with pytest.raises(audit.NotFound):
            audit.claim(s, 9999, "bo")


def test_one_active_task_per_bin_keeps_the_strongest_evidence(inventory):
    first = observe(inventory, "b5", reason="flag", priority=1.8)
    second = observe(inventory, "b5", reason="review", priority=0.4, predicted=4)
    assert first == second
    with inventory.reader() as s:
        task = audit.get_task(s, first)
        assert (task.reason, task.priority, task.predicted_count) == ("flag", 1.8, 4)
        tasks, total = audit.list_tasks(s, status="open")
        assert total == 1
    with inventory.session() as s:
        audit.cancel(s, first, "ana", "bin emptied")
    assert observe(inventory, "b5", priority=0.9) != first  # a closed task is history


def test_queue_is_sorted_by_priority_and_filters(inventory):
    low, high = observe(inventory, "b3", "review", 0.2), observe(inventory, "b5", "flag", 1.7)
    with inventory.reader() as s:
        assert [t.id for t in audit.list_tasks(s, status="open")[0]] == [high, low]
        assert [t.id for t in audit.list_tasks(s, bin_code="b3")[0]] == [low]
        with pytest.raises(audit.Invalid):
            audit.list_tasks(s, status="bogus")
        with pytest.raises(audit.NotFound):
            audit.list_tasks(s, bin_code="nope")
    with inventory.reader() as s:
        assert s.scalar(select(Adjustment)) is None

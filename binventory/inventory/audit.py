"""The audit queue and the ledger: open tasks from doubtful observations, claim them, resolve them
with a counted quantity.

A resolution that agrees with the record closes the task and changes nothing. One that differs
writes one ``adjustment`` row per SKU it changes (the append-only ledger) and updates the bin's
expected quantities, in the same transaction. A counted total is booked against the bin's SKUs
like this: a surplus goes to the SKU the bin holds most of; a shortfall is taken from the SKUs it
holds most of first, never below zero. Give per-SKU counts instead where the counter knows them.

State changes are conditional UPDATEs (``... WHERE status IN (...)``), so two people resolving the
same task at once cannot both succeed, on SQLite or PostgreSQL.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Float, Integer, String, bindparam, case, func, or_, select, text, update
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory.db import dialect_insert
from binventory.inventory.models import (ACTIVE_STATUSES, AGREED_REASON, REASON_CODES, TASK_STATUSES,
                                         Adjustment, AuditTask, Bin, BinContent, Observation, Sku, utcnow)


TASK_REASONS = ("flag", "review")  # the decisions that open a task
SPOT_CHECK = "spot"  # the reason of a recount drawn at random among bins the policy confirmed


class NotFound(BinventoryError):
    """An unknown bin, task or SKU (HTTP 404)."""


class Conflict(BinventoryError):
    """The request does not fit the task's state (HTTP 409)."""


class Invalid(BinventoryError):
    """A bad quantity, reason code or status (HTTP 422)."""


def get_bin(session: Session, code: str) -> Bin:
    found = session.scalar(select(Bin).where(Bin.code == code))
    if found is None:
        raise NotFound(f"unknown bin {code!r}")
    return found


def get_task(session: Session, task_id: int) -> AuditTask:
    task = session.get(AuditTask, task_id)
    if task is None:
        raise NotFound(f"unknown audit task {task_id}")
    return task


def expected_quantity(session: Session, bin_id: int) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(BinContent.quantity), 0))
                              .where(BinContent.bin_id == bin_id)))


def list_tasks(session: Session, *, status: str | tuple[str, ...] | None = None, bin_code: str | None = None,
               bin_prefix: str | None = None, reason: str | None = None, reason_code: str | None = None,
               min_priority: float | None = None, limit: int = 50, offset: int = 0,
               options=()) -> tuple[list[AuditTask], int]:
    """Tasks by priority (highest first), then age; and how many match in all. ``bin_code`` is
    one bin (unknown: NotFound), ``bin_prefix`` any bin whose code starts so; ``reason`` flag or
    review; ``reason_code`` what a resolution gave; ``options``: loader options for the page's
    query (e.g. its photos)."""
    statuses = (status,) if isinstance(status, str) else status
    if statuses is not None and not set(statuses) <= set(TASK_STATUSES):
        raise Invalid(f"status must be one of {TASK_STATUSES}, got {status!r}")
    if reason is not None and reason not in TASK_REASONS:
        raise Invalid(f"reason must be one of {TASK_REASONS}, got {reason!r}")
    query = select(AuditTask)
    if statuses is not None:
        query = query.where(AuditTask.status.in_(statuses))
    if reason is not None:
        query = query.where(AuditTask.reason == reason)
    if reason_code is not None:
        query = query.where(AuditTask.reason_code == reason_code)
    if min_priority is not None:
        query = query.where(AuditTask.priority >= min_priority)
    if bin_code is not None:
        query = query.where(AuditTask.bin_id == get_bin(session, bin_code).id)
    if bin_prefix:
        bins = select(Bin.id).where(Bin.code.startswith(bin_prefix, autoescape=True))
        query = query.where(AuditTask.bin_id.in_(bins))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.options(*options)
                           .order_by(AuditTask.priority.desc(), AuditTask.id).limit(limit).offset(offset)).all()
    return list(rows), int(total)


@dataclass
class Finding:
    """What a doubtful observation tells the audit queue."""
    reason: str          # "flag" or "review"
    priority: float
    predicted_count: int
    expected_quantity: int


# The predicate of the one-active-task-per-bin index (uq_audit_task_active).
ACTIVE_PREDICATE = text("status IN ('open', 'in_progress')")
# New evidence for an active task, merged in SQL rather than from what was read before: another
# writer may have changed the task since, and a flag must never be demoted to a review. A task
# closed since is left alone (the evidence then opens a new one). The status test is the index's
# predicate as plain SQL: an executemany cannot expand an IN (...) list.
_JOIN_TASK = (
    update(AuditTask)
    .where(AuditTask.id == bindparam("task_id", type_=Integer), ACTIVE_PREDICATE)
    .values(reason=case((AuditTask.reason == "flag", "flag"), else_=bindparam("new_reason", type_=String)),
            priority=case((AuditTask.priority > bindparam("new_priority", type_=Float), AuditTask.priority),
                          else_=bindparam("new_priority", type_=Float)),
            observation_id=bindparam("new_observation"), predicted_count=bindparam("new_predicted"),
            expected_quantity=bindparam("new_expected"), variance=bindparam("new_variance"),
            updated_at=bindparam("now")))


def open_tasks(session: Session, findings: list[tuple[int, int, Finding]]) -> None:
    """For each (bin id, observation id, finding), in order: update the bin's active task with
    the newest evidence, or open one. Two statements per batch, however many findings.

    Other writers (service replicas, a reconcile run) may do the same for the same bins at once:
    an insert that meets the task another writer opened meanwhile (ON CONFLICT on the
    one-active-task index: PostgreSQL waits for that writer's commit) joins that task instead;
    evidence for a task someone closed meanwhile opens a new one."""
    merged: dict[int, dict] = {}
    # Filter the status here, not in SQL: given "status IN (?, ?)", SQLite's planner picks the
    # queue's (status, priority) index and scans every open task of the inventory per batch.
    active = {t.bin_id: t for t in session.execute(
        select(AuditTask.bin_id, AuditTask.id, AuditTask.reason, AuditTask.priority, AuditTask.status)
        .where(AuditTask.bin_id.in_({b for b, _, _ in findings}))) if t.status in ACTIVE_STATUSES}
    for bin_id, observation_id, f in findings:
        old = merged.get(bin_id)
        if old is None and bin_id in active:
            old = {"id": active[bin_id].id, "reason": active[bin_id].reason,
                   "priority": active[bin_id].priority}
        # A flag outranks a review: a later doubtful photo must not demote a clear discrepancy.
        merged[bin_id] = {**(old or {"status": "open"}), "bin_id": bin_id,
                          "reason": "flag" if old and old["reason"] == "flag" else f.reason,
                          "priority": max(old["priority"] if old else 0.0, f.priority),
                          "observation_id": observation_id, "predicted_count": f.predicted_count,
                          "expected_quantity": f.expected_quantity,
                          "variance": f.predicted_count - f.expected_quantity}
    now = utcnow()
    rows = sorted(merged.values(), key=lambda row: row["bin_id"])  # one lock order for all writers
    updates = [{"task_id": r["id"], "new_reason": r["reason"], "new_priority": r["priority"],
                "new_observation": r["observation_id"], "new_predicted": r["predicted_count"],
                "new_expected": r["expected_quantity"], "new_variance": r["variance"], "now": now}
               for r in rows if "id" in r]
    inserts = [{**r, "created_at": now, "updated_at": now} for r in rows if "id" not in r]
    retry: set[int] = set()
    connection = session.connection()
    if updates and connection.execute(_JOIN_TASK, updates).rowcount != len(updates):
        still = set(session.scalars(select(AuditTask.id).where(
            AuditTask.id.in_([u["task_id"] for u in updates]), AuditTask.status.in_(ACTIVE_STATUSES))))
        retry |= {r["bin_id"] for r in rows if "id" in r and r["id"] not in still}
    if inserts:
        stmt = (dialect_insert(session)(AuditTask)
                .on_conflict_do_nothing(index_elements=[AuditTask.bin_id], index_where=ACTIVE_PREDICATE)
                .returning(AuditTask.bin_id))
        retry |= {r["bin_id"] for r in inserts} - set(connection.execute(stmt, inserts).scalars())
    if retry:  # each retry follows another writer's commit on these bins, so it ends
        open_tasks(session, [f for f in findings if f[0] in retry])


def open_spot_checks(session: Session, n: int, *, seed: int | None = None) -> list[AuditTask]:
    """Open up to ``n`` spot checks: recounts of bins drawn at random among those whose latest
    photo was confirmed and that have no active task. Flags and reviews recount only what the
    policy doubted; these are what measure the wrong records it confirmed (calibrate
    --from-audits counts them apart). Priority 0: below every flag and review."""
    import numpy as np

    if n < 1:
        raise Invalid(f"the number of spot checks must be at least 1, got {n}")
    latest = select(func.max(Observation.id).label("id")).group_by(Observation.bin_id).subquery()
    busy = select(AuditTask.bin_id).where(AuditTask.status.in_(ACTIVE_STATUSES))
    ids = list(session.scalars(select(Observation.id).join(latest, latest.c.id == Observation.id)
                               .where(Observation.decision == "confirm",
                                      Observation.bin_id.not_in(busy)).order_by(Observation.id)))
    picked = np.random.default_rng(seed).permutation(len(ids))[:n]
    now = utcnow()
    rows = [{"bin_id": o.bin_id, "observation_id": o.id, "status": "open", "priority": 0.0,
             "reason": SPOT_CHECK, "predicted_count": o.predicted_count,
             "expected_quantity": o.expected_quantity,
             "variance": o.predicted_count - o.expected_quantity, "created_at": now, "updated_at": now}
            for o in session.scalars(select(Observation).where(
                Observation.id.in_([ids[i] for i in picked])).order_by(Observation.bin_id))]
    if not rows:
        return []
    # A bin whose task another writer opened meanwhile keeps that task: no spot check for it.
    stmt = (dialect_insert(session)(AuditTask)
            .on_conflict_do_nothing(index_elements=[AuditTask.bin_id], index_where=ACTIVE_PREDICATE)
            .returning(AuditTask.id))
    opened = list(session.connection().execute(stmt, rows).scalars())
    return list(session.scalars(select(AuditTask).where(AuditTask.id.in_(opened))
                                .order_by(AuditTask.id)))


def _transition(session: Session, task_id: int, allowed: tuple[str, ...], *, holder: str | None = None,
                **values) -> AuditTask:
    """Move a task that is in one of the ``allowed`` states; with ``holder``, only while nobody
    else has claimed it (checked in the same UPDATE, so a claim made meanwhile wins)."""
    query = update(AuditTask).where(AuditTask.id == task_id, AuditTask.status.in_(allowed))
    if holder is not None:
        query = query.where(or_(AuditTask.status == "open", AuditTask.assignee.is_(None),
                                AuditTask.assignee == holder))
    result = session.execute(query.values(updated_at=utcnow(), **values))
    task = get_task(session, task_id)
    if result.rowcount != 1:
        session.refresh(task)
        if task.status in allowed:  # the holder test failed
            raise _claimed(task)
        raise Conflict(f"audit task {task_id} is {task.status}; this needs it "
                       f"{' or '.join(allowed)}")
    session.refresh(task)
    return task


def _claimed(task: AuditTask) -> Conflict:
    return Conflict(f"audit task {task.id} is claimed by {task.assignee}: take it over "
                    f"(take_over) to work on it instead")


def _claimed_by_other(task: AuditTask, name: str) -> bool:
    return task.status == "in_progress" and task.assignee not in (None, name)


def claim(session: Session, task_id: int, assignee: str, *, take_over: bool = False) -> AuditTask:
    """Give an open task to ``assignee``. A task someone else has claimed moves only with
    ``take_over``, which records whom it was taken from."""
    if not assignee.strip():
        raise Invalid("assignee must not be empty")
    task = get_task(session, task_id)
    if task.status == "in_progress" and task.assignee == assignee:
        return task  # claiming twice is harmless
    if not take_over:
        if _claimed_by_other(task, assignee):
            raise _claimed(task)
        return _transition(session, task_id, ("open",), status="in_progress", assignee=assignee)
    previous = task.assignee if _claimed_by_other(task, assignee) else None
    return _transition(session, task_id, ACTIVE_STATUSES, status="in_progress", assignee=assignee,
                       taken_over_from=previous)


def cancel(session: Session, task_id: int, actor: str, note: str | None = None) -> AuditTask:
    return _transition(session, task_id, ACTIVE_STATUSES, status="cancelled", resolved_by=actor,
                       resolved_at=utcnow(), note=note)


def _book_total(lines: list[BinContent], delta: int) -> dict[int, int]:
    """Per-SKU changes that add up to ``delta`` (see the module docstring)."""
    if not lines:
        raise Invalid("the bin holds no SKUs, so a count cannot be booked against one: "
                      "give per-SKU counts (sku_counts) instead")
    order = sorted(lines, key=lambda c: (-c.quantity, c.sku_id))
    if delta > 0:
        return {order[0].sku_id: delta}
    changes, left = {}, -delta
    for line in order:
        take = min(left, line.quantity)
        if take:
            changes[line.sku_id] = -take
            left -= take
    return changes


def _per_sku_changes(session: Session, lines: list[BinContent], sku_counts: dict[str, int]) -> dict[int, int]:
    held = {c.sku.asin: c for c in lines}
    changes = {}
    for asin, count in sku_counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise Invalid(f"count of SKU {asin!r} must be a non-negative integer, got {count!r}")
        line = held.get(asin)
        if line is not None:
            sku_id, before = line.sku_id, line.quantity
        else:  # found in the bin, though the record did not list it
            sku_id = session.scalar(select(Sku.id).where(Sku.asin == asin))
            if sku_id is None:
                raise NotFound(f"unknown SKU {asin!r}")
            before = 0
        if count != before:
            changes[sku_id] = count - before
    return changes


def resolve(session: Session, task_id: int, *, counted_quantity: int, actor: str,
            reason_code: str | None = None, sku_counts: dict[str, int] | None = None,
            note: str | None = None, take_over: bool = False) -> tuple[AuditTask, list[Adjustment]]:
    """Close a task with what a person counted; returns the task and the ledger rows written.
    A task another person has claimed needs ``take_over`` (recorded as ``taken_over_from``)."""
    if isinstance(counted_quantity, bool) or not isinstance(counted_quantity, int) or counted_quantity < 0:
        raise Invalid(f"counted_quantity must be a non-negative integer, got {counted_quantity!r}")
    if not actor.strip():
        raise Invalid("the person resolving the task must be named")
    task = get_task(session, task_id)
    if task.status not in ACTIVE_STATUSES:
        raise Conflict(f"audit task {task_id} is already {task.status}")
    if _claimed_by_other(task, actor) and not take_over:
        raise _claimed(task)
    taken = {"taken_over_from": task.assignee} if _claimed_by_other(task, actor) else {"holder": actor}
    lines = list(session.scalars(select(BinContent).where(BinContent.bin_id == task.bin_id)))
    expected = sum(c.quantity for c in lines)
    if sku_counts:
        changes = _per_sku_changes(session, lines, sku_counts)
        if expected + sum(changes.values()) != counted_quantity:
            raise Invalid(f"the per-SKU counts add up to {expected + sum(changes.values())}, "
                          f"not to counted_quantity {counted_quantity}")
    else:
        changes = _book_total(lines, counted_quantity - expected) if counted_quantity != expected else {}
    if changes and reason_code not in REASON_CODES:
        raise Invalid(f"the count differs from the record ({counted_quantity} vs {expected}): "
                      f"reason_code must be one of {REASON_CODES}, got {reason_code!r}")
    if not changes and reason_code not in (None, AGREED_REASON, *REASON_CODES):
        raise Invalid(f"unknown reason_code {reason_code!r}")
    task = _transition(session, task_id, ACTIVE_STATUSES, status="resolved",
                       counted_quantity=counted_quantity, reason_code=reason_code or AGREED_REASON,
                       resolved_by=actor, resolved_at=utcnow(), note=note, **taken)
    held = {c.sku_id: c for c in lines}
    adjustments = []
    for sku_id, delta in sorted(changes.items()):
        line = held.get(sku_id)
        before = line.quantity if line else 0
        if line is None:
            session.add(BinContent(bin_id=task.bin_id, sku_id=sku_id, quantity=before + delta))
        else:
            line.quantity = before + delta
        adjustments.append(Adjustment(bin_id=task.bin_id, sku_id=sku_id, delta=delta,
                                      quantity_before=before, quantity_after=before + delta,
                                      reason_code=reason_code, task_id=task.id, actor=actor,
                                      created_at=utcnow()))
    session.add_all(adjustments)
    session.flush()
    return task, adjustments


def ledger(session: Session, bin_id: int | None = None, limit: int = 100, offset: int = 0) -> list[Adjustment]:
    query = select(Adjustment).order_by(Adjustment.id.desc()).limit(limit).offset(offset)
    if bin_id is not None:
        query = query.where(Adjustment.bin_id == bin_id)
    return list(session.scalars(query))


def observations(session: Session, bin_id: int, limit: int = 50, offset: int = 0) -> list[Observation]:
    return list(session.scalars(select(Observation).where(Observation.bin_id == bin_id)
                                .order_by(Observation.captured_at.desc(), Observation.id.desc())
                                .limit(limit).offset(offset)))

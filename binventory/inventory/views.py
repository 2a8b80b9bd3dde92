"""Read models for the API, the CLI and the dashboard: pages of bins, a bin's detail, the queue's
and the inventory's state in numbers. Each is a few SQL queries, whatever the number of bins."""
from __future__ import annotations

from collections import defaultdict

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, joinedload

from binventory.inventory import audit
from binventory.inventory.models import (ACTIVE_STATUSES, DECISIONS, TASK_STATUSES, Adjustment, AuditTask,
                                         Bin, BinContent, Model, Observation)


def observation_dict(o: Observation) -> dict:
    return {"id": o.id, "bin": o.bin.code, "image_uri": o.image_uri, "image_sha256": o.image_sha256,
            "captured_at": o.captured_at.isoformat(), "model_version": o.model_version,
            "predicted_count": o.predicted_count, "probabilities": o.probabilities,
            "expected_quantity": o.expected_quantity, "decision": o.decision,
            "score": round(o.score, 6)}


def task_dict(t: AuditTask) -> dict:
    return {"id": t.id, "bin": t.bin.code, "status": t.status, "priority": round(t.priority, 6),
            "reason": t.reason, "observation_id": t.observation_id,
            "predicted_count": t.predicted_count, "expected_quantity": t.expected_quantity,
            "variance": t.variance, "assignee": t.assignee, "taken_over_from": t.taken_over_from,
            "counted_quantity": t.counted_quantity,
            "reason_code": t.reason_code, "note": t.note, "resolved_by": t.resolved_by,
            "resolved_at": t.resolved_at.isoformat() if t.resolved_at else None,
            "created_at": t.created_at.isoformat()}


def adjustment_dict(a: Adjustment) -> dict:
    return {"id": a.id, "bin": a.bin.code, "sku": a.sku.asin, "delta": a.delta,
            "quantity_before": a.quantity_before, "quantity_after": a.quantity_after,
            "reason_code": a.reason_code, "task_id": a.task_id, "actor": a.actor,
            "created_at": a.created_at.isoformat()}


def _expected():
    return (select(BinContent.bin_id, func.sum(BinContent.quantity).label("expected"))
            .group_by(BinContent.bin_id).subquery())


def _latest():
    return (select(Observation.bin_id, func.max(Observation.id).label("obs_id"))
            .group_by(Observation.bin_id).subquery())


def bin_page(session: Session, q: str | None = None, limit: int = 50, offset: int = 0, *,
             observed: bool | None = None, open_task: bool | None = None, decision: str | None = None) -> dict:
    """Bins by code (``q``: code prefix), with expected quantity, last decision and active task;
    only those photographed or not (``observed``), with an active task or not (``open_task``),
    whose last photo was decided so (``decision``)."""
    if decision is not None and decision not in DECISIONS:
        raise audit.Invalid(f"decision must be one of {DECISIONS}, got {decision!r}")
    expected, latest = _expected(), _latest()
    active = (select(AuditTask.bin_id, AuditTask.id.label("task_id"), AuditTask.status)
              .where(AuditTask.status.in_(ACTIVE_STATUSES)).subquery())
    query = (select(Bin.code, func.coalesce(expected.c.expected, 0), Observation.decision,
                    Observation.predicted_count, Observation.captured_at, active.c.task_id,
                    active.c.status)
             .outerjoin(expected, expected.c.bin_id == Bin.id)
             .outerjoin(latest, latest.c.bin_id == Bin.id)
             .outerjoin(Observation, Observation.id == latest.c.obs_id)
             .outerjoin(active, active.c.bin_id == Bin.id))
    if q:
        query = query.where(Bin.code.startswith(q, autoescape=True))
    if observed is not None:
        query = query.where(latest.c.obs_id.is_not(None) if observed else latest.c.obs_id.is_(None))
    if open_task is not None:
        query = query.where(active.c.task_id.is_not(None) if open_task else active.c.task_id.is_(None))
    if decision is not None:
        query = query.where(Observation.decision == decision)
    rows = session.execute(query.order_by(Bin.code).limit(limit).offset(offset))
    return {"total": session.scalar(select(func.count()).select_from(query.subquery())), "bins": [
        {"bin": code, "expected_quantity": int(exp), "last_decision": decision,
         "last_predicted_count": predicted,
         "last_observed_at": seen.isoformat() if seen else None, "active_task_id": task_id,
         "active_task_status": status}
        for code, exp, decision, predicted, seen, task_id, status in rows]}


def bin_detail(session: Session, code: str) -> dict:
    found = audit.get_bin(session, code)
    active = session.scalar(select(AuditTask).where(AuditTask.bin_id == found.id,
                                                    AuditTask.status.in_(ACTIVE_STATUSES)))
    contents = [{"sku": c.sku.asin, "name": c.sku.name, "quantity": c.quantity,
                 "length": c.sku.length, "width": c.sku.width, "height": c.sku.height,
                 "weight": c.sku.weight} for c in found.contents]
    return {"bin": found.code, "expected_quantity": sum(c["quantity"] for c in contents),
            "contents": contents, "active_task": task_dict(active) if active else None}


def queue(session: Session, limit: int = 50, offset: int = 0, **filters) -> dict:
    """A page of the audit queue (``filters`` as audit.list_tasks takes them) with each task's
    photo: its score, when it was taken and the model's count distribution."""
    tasks, total = audit.list_tasks(session, limit=limit, offset=offset,
                                    options=[joinedload(AuditTask.observation)], **filters)
    rows = []
    for t in tasks:
        obs = t.observation
        rows.append({**task_dict(t), "score": obs.score if obs else None,
                     "captured_at": obs.captured_at if obs else None,
                     "probabilities": obs.probabilities if obs else None})
    return {"total": total, "tasks": rows}


def bin_history(session: Session, code: str, *, observations: tuple[int, int] = (50, 0),
                ledger: tuple[int, int] = (50, 0), tasks: int = 10) -> dict:
    """A bin's page: its detail, a page of observations and of ledger entries (each ``(limit,
    offset)``) with their totals, and its latest audit tasks."""
    detail = bin_detail(session, code)
    bin_id = session.scalar(select(Bin.id).where(Bin.code == code))
    return {
        "bin": detail,
        "observations": [observation_dict(o)
                         for o in audit.observations(session, bin_id, *observations)],
        "n_observations": session.scalar(select(func.count(Observation.id)).where(Observation.bin_id == bin_id)),
        "ledger": [adjustment_dict(a) for a in audit.ledger(session, bin_id, *ledger)],
        "n_ledger": session.scalar(select(func.count(Adjustment.id)).where(Adjustment.bin_id == bin_id)),
        "tasks": [task_dict(t) for t in session.scalars(
            select(AuditTask).where(AuditTask.bin_id == bin_id).order_by(AuditTask.id.desc()).limit(tasks))],
    }


def ledger_page(session: Session, bin_prefix: str | None = None, limit: int = 50, offset: int = 0, *,
                before_id: int | None = None) -> dict:
    """Every adjustment, newest first (``bin_prefix``: bins whose code starts so; ``before_id``:
    older than that row, to read the whole ledger in chunks), and how many match."""
    query = select(Adjustment)
    if bin_prefix:
        bins = select(Bin.id).where(Bin.code.startswith(bin_prefix, autoescape=True))
        query = query.where(Adjustment.bin_id.in_(bins))
    total = None
    if before_id is None:
        total = int(session.scalar(select(func.count()).select_from(query.subquery())))
    else:
        query = query.where(Adjustment.id < before_id)
    rows = session.scalars(query.order_by(Adjustment.id.desc()).limit(limit).offset(offset))
    return {"total": total, "ledger": [adjustment_dict(a) for a in rows]}


def find_model(session: Session, version: str | None = None) -> Model | None:
    """The model of that version, or the one that judged a photo last."""
    if version:
        return session.get(Model, version)
    return session.scalar(select(Model).order_by(Model.last_used_at.desc()).limit(1))


def model_versions(session: Session, limit: int = 50) -> list[str]:
    return list(session.scalars(select(Model.version).order_by(Model.last_used_at.desc()).limit(limit)))


def overview(session: Session) -> dict:
    """The inventory in numbers: bins, their latest decisions, the queue, the ledger, the model."""
    latest = _latest()
    decisions = dict(session.execute(
        select(Observation.decision, func.count()).join(latest, latest.c.obs_id == Observation.id)
        .group_by(Observation.decision)).all())
    tasks = dict(session.execute(select(AuditTask.status, func.count()).group_by(AuditTask.status)).all())
    # One active task per bin: these are bins, and a recount takes its bin off at once.
    waiting = dict(session.execute(select(AuditTask.reason, func.count())
                                   .where(AuditTask.status.in_(ACTIVE_STATUSES)).group_by(AuditTask.reason)).all())
    model = session.scalar(select(Model).order_by(Model.last_used_at.desc()).limit(1))
    return {
        "bins": session.scalar(select(func.count(Bin.id))),
        "bins_observed": session.scalar(select(func.count()).select_from(latest)),
        "observations": session.scalar(select(func.count(Observation.id))),
        "decisions": {d: int(decisions.get(d, 0)) for d in DECISIONS},
        "tasks": {s: int(tasks.get(s, 0)) for s in TASK_STATUSES},
        "waiting": {r: int(waiting.get(r, 0)) for r in ("flag", "review")},
        "adjustments": session.scalar(select(func.count(Adjustment.id))),
        "model": None if model is None else {"version": model.version, "name": model.name,
                                             "path": model.path, "metrics": model.metrics,
                                             "policy": model.policy},
    }


def records_by_day(session: Session, days: int = 30) -> list[dict]:
    """What is known of the records, per day and per bin (a bin photographed or recounted twice
    in a day counts once, by its last word that day): bins whose photo confirmed the record, bins
    a person recounted and how many of those records were right, and discrepancies (flagged
    bins) still open at the day's end. A photo's confirmation is the model agreeing with the
    record, not a check of it; only a recount tells whether a record was right."""
    per_day: dict[str, dict] = defaultdict(lambda: {"confirmed_by_photo": 0, "recounted": 0, "recount_right": 0})
    seen = func.date(Observation.captured_at)
    last_photo = select(func.max(Observation.id).label("id")).group_by(Observation.bin_id, seen).subquery()
    for day, decision, n in session.execute(select(seen, Observation.decision, func.count())
                                            .join(last_photo, last_photo.c.id == Observation.id)
                                            .group_by(seen, Observation.decision)):
        counts = per_day[str(day)]  # a day of flags only is a day to show too
        if decision == "confirm":
            counts["confirmed_by_photo"] = int(n)
    done = func.date(AuditTask.resolved_at)
    last_count = (select(func.max(AuditTask.id).label("id")).where(AuditTask.status == "resolved")
                  .group_by(AuditTask.bin_id, done).subquery())
    right = func.sum(case((AuditTask.counted_quantity == AuditTask.expected_quantity, 1), else_=0))
    for day, n, r in session.execute(select(done, func.count(), right)
                                     .join(last_count, last_count.c.id == AuditTask.id).group_by(done)):
        per_day[str(day)].update(recounted=int(n), recount_right=int(r or 0))
    spans = session.execute(select(func.date(AuditTask.created_at), func.date(AuditTask.resolved_at), func.count())
                            .where(AuditTask.reason == "flag")
                            .group_by(func.date(AuditTask.created_at), func.date(AuditTask.resolved_at))).all()
    out = []
    for day in sorted(per_day)[-days:]:
        still_open = sum(n for opened, closed, n in spans
                         if str(opened) <= day and (closed is None or str(closed) > day))
        out.append({"day": day, **per_day[day], "open_discrepancies": int(still_open)})
    return out

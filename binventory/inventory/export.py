"""``binventory data from-inventory``: the warehouse's resolved audits as a labelled dataset.

Every resolved audit is a photo a person recounted: its label is the counted quantity, its record
the bin's contents right after the recount (today's contents with every later recount's ledger
lines undone). Photos the model confirmed (no audit) may join as weak labels: the record they
were confirmed against. What is read from the database is turned into rows here; where the rows
go (ABID layout, manifest, splits) is ``binventory.inventory.export_layout``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory.db import Database
from binventory.inventory.audit_outcomes import Moment, records_at, skus_of, utc
from binventory.inventory.models import AuditTask, Observation, Sku

AUDIT, CONFIRMED = "audit", "confirmed"


@dataclass
class Candidate:
    """One photo with its label, before it is copied: what a manifest row is made from."""

    key: tuple[str, int]          # (source, task id or observation id): what a rerun skips on
    bin_id: int
    bin_code: str
    labelled_at: datetime         # resolved_at of the audit; created_at of a confirmed photo
    label: int
    image_uri: str
    image_sha256: str
    observation_id: int
    task_id: int | None
    expected_before: int          # the record the model judged
    predicted_count: int
    model_version: str
    decision: str
    skus: list[dict] = field(default_factory=list)  # the record: ABID-style SKU lines

    @property
    def source(self) -> str:
        return self.key[0]

    @property
    def weak(self) -> bool:
        return self.source == CONFIRMED


def parse_since(text: str | None) -> datetime | None:
    """--since: an ISO-8601 date or time; one without a zone is UTC."""
    if text is None:
        return None
    try:
        return utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise BinventoryError(f"--since wants an ISO-8601 date or time (e.g. 2026-11-30 or "
                              f"2026-11-30T08:00:00Z), got {text!r}") from None


def _sku_lines(state: dict[int, int], skus: dict[int, Sku]) -> list[dict]:
    # Lines at zero are SKUs the bin no longer holds: ABID records never list those.
    lines = []
    for sku_id, quantity in sorted(state.items(), key=lambda kv: skus[kv[0]].asin):
        if quantity > 0:
            sku = skus[sku_id]
            lines.append({"asin": sku.asin, "name": sku.name, "quantity": quantity,
                          "length": sku.length, "width": sku.width, "height": sku.height,
                          "weight": sku.weight})
    return lines


def _audits(session: Session, since: datetime | None, done: set[int]) -> list[tuple[AuditTask, Observation]]:
    query = (select(AuditTask, Observation).join(Observation, Observation.id == AuditTask.observation_id)
             .where(AuditTask.status == "resolved", AuditTask.counted_quantity.is_not(None),
                    AuditTask.resolved_at.is_not(None))
             .order_by(AuditTask.resolved_at, AuditTask.id))
    if since is not None:
        query = query.where(AuditTask.resolved_at >= since)
    return [(t, o) for t, o in session.execute(query) if t.id not in done]


def _confirmed(session: Session, since: datetime | None, done: set[int]) -> list[Observation]:
    audited = select(AuditTask.id).where(AuditTask.observation_id == Observation.id).exists()
    query = (select(Observation).where(Observation.decision == "confirm", ~audited)
             .order_by(Observation.created_at, Observation.id))
    if since is not None:
        query = query.where(Observation.created_at >= since)
    return [o for o in session.scalars(query) if o.id not in done]


def find_candidates(session: Session, *, since: datetime | None = None,
                    done: set[tuple[str, int]] = frozenset(),
                    include_confirmed: bool = False) -> tuple[list[Candidate], int]:
    """The audits (and confirmed photos) not in ``done``, oldest first, and how many resolved
    audits had no photo to export."""
    done_tasks = {i for s, i in done if s == AUDIT}
    audits = _audits(session, since, done_tasks)
    confirmed = _confirmed(session, since, {i for s, i in done if s == CONFIRMED}) \
        if include_confirmed else []
    no_photo = select(func.count()).select_from(AuditTask).where(
        AuditTask.status == "resolved", AuditTask.observation_id.is_(None))
    if since is not None:
        no_photo = no_photo.where(AuditTask.resolved_at >= since)
    no_photo = session.scalar(no_photo)
    # An audit's record is the one its recount left; a confirmed photo's, the one it was
    # confirmed against (its label is the observation's stored expected quantity).
    moments = [Moment(t.bin_id, utc(t.resolved_at), t.id, after=True) for t, _ in audits]
    moments += [Moment(o.bin_id, utc(o.created_at)) for o in confirmed]
    records = records_at(session, moments)
    skus = skus_of(session, records.values())
    out = []
    for (task, obs), moment in zip(audits, moments):
        out.append(_candidate(obs, (AUDIT, task.id), utc(task.resolved_at), task.counted_quantity,
                              _sku_lines(records[moment], skus), task))
    for obs, moment in zip(confirmed, moments[len(audits):]):
        out.append(_candidate(obs, (CONFIRMED, obs.id), utc(obs.created_at), obs.expected_quantity,
                              _sku_lines(records[moment], skus), None))
    return out, no_photo


def _candidate(obs: Observation, key: tuple[str, int], labelled_at: datetime, label: int,
               skus: list[dict], task: AuditTask | None) -> Candidate:
    return Candidate(key=key, bin_id=obs.bin_id, bin_code=obs.bin.code, labelled_at=labelled_at,
                     label=label, image_uri=obs.image_uri, image_sha256=obs.image_sha256,
                     observation_id=obs.id, task_id=task.id if task else None,
                     expected_before=task.expected_quantity if task and task.expected_quantity is not None
                     else obs.expected_quantity,
                     predicted_count=obs.predicted_count, model_version=obs.model_version,
                     decision=obs.decision, skus=skus)


def export(db: Database, out: str | Path, *, since: datetime | None = None,
           include_confirmed: bool = False, val_fraction: float = 0.1,
           image_dir: str | Path | None = None, endpoint_url: str | None = None,
           progress: bool = True):
    """Export the resolved audits not yet in ``out`` (see ``export_layout.write_export``)."""
    from binventory.inventory import export_layout
    from binventory.inventory.photos import default_image_dir

    if not 0 <= val_fraction < 1:
        raise BinventoryError(f"--val-fraction must be at least 0 and below 1, got {val_fraction}")
    out = Path(out)
    existing = export_layout.read_existing(out)
    with db.reader() as session:
        candidates, no_photo = find_candidates(session, since=since, done=export_layout.keys(existing),
                                               include_confirmed=include_confirmed)
    return export_layout.write_export(out, existing, candidates, val_fraction=val_fraction,
                                      image_dir=image_dir or default_image_dir(),
                                      endpoint_url=endpoint_url, no_photo=no_photo, progress=progress)

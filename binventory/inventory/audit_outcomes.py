"""The warehouse's resolved audits as labelled outcomes: what the model saw, what the record
said, what a person counted (``inventory calibrate --from-audits`` fits on them).

- Probabilities: an audit judged by the model in question keeps its stored probabilities (no
  photo needed); one judged by another model is counted again on its stored photo with that
  model's predictor, or left out without one (the counts of each say which).
- SKU lines: the record features need the bin's lines as they stood when the photo was judged.
  They are rebuilt from the bin's current contents by undoing every ledger change made after the
  observation (audits change contents only through the ledger). Where the rebuilt lines do not
  add up to the quantity the observation was judged against (the record was changed outside the
  ledger), the bin's current contents stand in, and ``Audit.lines_at_the_time`` says so.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory.models import Adjustment, AuditTask, BinContent, Observation, Sku
from binventory.inventory.verify import ItemRecord
from binventory.model.classes import CountClasses

log = logging.getLogger(__name__)

CHUNK = 500  # ids per IN (...) list: well under SQLite's and psycopg's parameter limits


@dataclass
class Audit:
    """One resolved audit task with the observation it judged."""
    task_id: int
    bin_id: int
    source: str               # the task's reason: flag, review, or a spot check's
    model_version: str
    probabilities: dict
    image_uri: str
    expected: int             # the record the photo was judged against
    counted: int              # what a person counted: the truth
    observed_at: datetime
    resolved_at: datetime
    lines: list[ItemRecord]
    lines_at_the_time: bool   # False: the bin's current contents (the ledger did not add up)

    @property
    def right(self) -> bool:
        return self.counted == self.expected


def utc(t: datetime) -> datetime:
    # SQLite hands back naive datetimes; every one the inventory writes is UTC.
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _chunks(ids):
    ids = sorted(ids)
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


NOW = datetime.max.replace(tzinfo=timezone.utc)  # a moment no ledger row comes after


class Moment(NamedTuple):
    """A point in a bin's history: ``at`` a time or, with ``task_id``, at that recount: just
    before its own ledger rows (``after`` False: the record the person counted against) or
    right after them (the record the recount left)."""
    bin_id: int
    at: datetime
    task_id: int | None = None
    after: bool = False


def records_at(session: Session, moments: Iterable[Moment]) -> dict[Moment, dict[int, int]]:
    """Each moment's record {sku id: quantity}: the bin's contents now, each SKU changed since
    taken back to its quantity before the first ledger row booked after the moment. Two queries
    a chunk of bins, however many moments.

    The rules, where the callers' own versions once differed:
    - quantity_before of the first later row, not "now less every later delta": the two agree
      while every change goes through the ledger, but after a change outside it (a re-import)
      the deltas carry that change back to every earlier moment; quantity_before does not.
    - a recount's moment is placed by booking order (row ids) around its own rows (its task id),
      not by comparing its resolved_at with the rows' created_at, two clocks read microseconds
      apart. A plain time, or a recount that booked nothing, goes by the rows' created_at.
    - every ledger row counts, whether or not it names a task.
    """
    moments = list(moments)
    current: dict[int, dict[int, int]] = defaultdict(dict)
    ledger: dict[int, list] = defaultdict(list)
    for chunk in _chunks({m.bin_id for m in moments}):
        for b, s, q in session.execute(select(BinContent.bin_id, BinContent.sku_id,
                                              BinContent.quantity).where(BinContent.bin_id.in_(chunk))):
            current[b][s] = q
        for b, *row in session.execute(
                select(Adjustment.bin_id, Adjustment.id, Adjustment.task_id, Adjustment.sku_id,
                       Adjustment.quantity_before, Adjustment.created_at)
                .where(Adjustment.bin_id.in_(chunk)).order_by(Adjustment.id)):
            ledger[b].append(row)
    out = {}
    for m in moments:
        rows = ledger.get(m.bin_id, [])
        own = [i for i, task, *_ in rows if m.task_id is not None and task == m.task_id]
        state, undone = dict(current.get(m.bin_id, {})), set()
        for i, _, sku, before, created in rows:
            later = (i > own[-1] if m.after else i >= own[0]) if own else utc(created) > utc(m.at)
            if later and sku not in undone:
                state[sku] = before
                undone.add(sku)
        out[m] = state
    return out


def skus_of(session: Session, records: Iterable[dict[int, int]]) -> dict[int, Sku]:
    """The SKUs the records name, by id."""
    ids = {s for r in records for s in r}
    return {sku.id: sku for chunk in _chunks(ids)
            for sku in session.scalars(select(Sku).where(Sku.id.in_(chunk)))}


def item_records(record: dict[int, int], skus: dict[int, Sku]) -> list[ItemRecord]:
    """A record's lines as the verifier reads them (lines at zero are SKUs no longer held)."""
    return [ItemRecord(q, skus[s].length, skus[s].width, skus[s].height, skus[s].weight)
            for s, q in sorted(record.items()) if q > 0]


def load_audits(session: Session, since: datetime | None = None) -> list[Audit]:
    """Every resolved audit task with a counted quantity and an observation, oldest first."""
    query = (select(AuditTask, Observation).join(Observation, Observation.id == AuditTask.observation_id)
             .where(AuditTask.status == "resolved", AuditTask.counted_quantity.is_not(None))
             .order_by(AuditTask.resolved_at, AuditTask.id))
    if since is not None:
        query = query.where(AuditTask.resolved_at >= since)
    rows = session.execute(query).all()
    then = records_at(session, [Moment(t.bin_id, utc(o.created_at)) for t, o in rows])
    now = records_at(session, [Moment(b, NOW) for b in {t.bin_id for t, _ in rows}])
    skus = skus_of(session, [*then.values(), *now.values()])
    out = []
    for task, obs in rows:
        observed = utc(obs.created_at)
        record = then[Moment(task.bin_id, observed)]
        at_the_time = sum(record.values()) == obs.expected_quantity
        lines = item_records(record if at_the_time else now[Moment(task.bin_id, NOW)], skus)
        out.append(Audit(task.id, task.bin_id, task.reason, obs.model_version,
                         dict(obs.probabilities or {}), obs.image_uri, obs.expected_quantity,
                         task.counted_quantity, observed, utc(task.resolved_at or observed),
                         lines, at_the_time))
    return out


def observation_mix(session: Session, start: datetime, end: datetime) -> dict:
    """Every model's decisions over the audits' period: what each source of audits stands for."""
    rows = session.execute(select(Observation.decision, func.count()).where(
        Observation.created_at >= start, Observation.created_at <= end)
        .group_by(Observation.decision))
    return {d: int(n) for d, n in rows}


def stored_classes(audits: list[Audit], model_id: str) -> CountClasses:
    """The classes of the model's stored probabilities (when no artifact is given)."""
    for a in audits:
        if a.model_version == model_id and a.probabilities:
            names = sorted(a.probabilities, key=lambda n: int(str(n).rstrip("+")))
            try:
                return CountClasses.from_names(names)
            except ValueError as e:
                raise BinventoryError(f"observations of model {model_id!r}: {e}") from None
    raise BinventoryError(f"no audited observation was judged by model {model_id!r}: give its "
                          "artifact (--model) to count the audited photos again")


def _row(probabilities: dict, classes: CountClasses) -> np.ndarray | None:
    try:
        row = np.array([float(probabilities[n]) for n in classes.names])
    except (KeyError, TypeError, ValueError):
        return None
    return row if np.isfinite(row).all() and row.sum() > 0 else None


def stream_probabilities(session: Session, model_id: str, classes: CountClasses,
                         limit: int = 20_000) -> np.ndarray:
    """The model's latest stored probabilities (``limit`` photos at most): the stream it judges,
    not only the doubtful photos people recounted."""
    rows = session.scalars(select(Observation.probabilities).where(
        Observation.model_version == model_id).order_by(Observation.id.desc()).limit(limit))
    kept = [r for r in (_row(p or {}, classes) for p in rows) if r is not None]
    return np.stack(kept) if kept else np.zeros((0, classes.num_classes))


def _photo_bytes(uri: str, image_dir: Path, state: dict) -> bytes:
    from binventory.inventory.photos import photo_path
    from binventory.serving.inputs import read_bytes

    if uri.startswith("s3://") and "client" not in state:
        from binventory.data.fetch import make_client
        state["client"] = make_client(state.get("endpoint_url"))
    if not uri.startswith("s3://"):
        return read_bytes(str(photo_path(uri, image_dir)), None)
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        return read_bytes(uri, state["client"])
    except (BotoCoreError, ClientError) as e:  # a missing object is a photo gone, as a file is
        raise OSError(str(e)) from None


def audit_probabilities(audits: list[Audit], model_id: str, classes: CountClasses, *,
                        predictor=None, image_dir: str | Path | None = None,
                        endpoint_url: str | None = None, batch_size: int = 32
                        ) -> tuple[list[int], np.ndarray, Counter]:
    """Which audits can be used (indices), their probabilities under ``model_id``, and how each
    was had: stored (judged by this model), rerun (counted again on its photo by ``predictor``)
    or left out (another model's and no predictor, photo gone, bad stored row)."""
    from binventory.inventory.photos import default_image_dir

    image_dir = Path(image_dir) if image_dir is not None else default_image_dir()
    how: Counter = Counter()
    rows: dict[int, np.ndarray] = {}
    pending: list[int] = []
    for i, a in enumerate(audits):
        if a.model_version == model_id:
            row = _row(a.probabilities, classes)
            how["stored" if row is not None else "left out: bad stored probabilities"] += 1
            if row is not None:
                rows[i] = row
        elif predictor is None:
            how["left out: judged by another model"] += 1
        else:
            pending.append(i)
    state = {"endpoint_url": endpoint_url}
    for start in range(0, len(pending), batch_size):  # decoded a batch at a time: memory stays flat
        batch = []
        for i in pending[start:start + batch_size]:
            try:
                batch.append((i, predictor.decode(_photo_bytes(audits[i].image_uri, image_dir, state))))
            except (OSError, ValueError) as e:  # gone, unreadable, too large (ImageError)
                log.debug("audit %d: photo %s: %s", audits[i].task_id, audits[i].image_uri, e)
                how["left out: photo gone or unreadable"] += 1
        if batch:
            probs = predictor.predict_arrays(np.stack([pixels for _, pixels in batch]))
            rows.update((i, p) for (i, _), p in zip(batch, probs))
            how["rerun"] += len(batch)
    kept = sorted(rows)
    probs = np.stack([rows[i] for i in kept]) if kept else np.zeros((0, classes.num_classes))
    return kept, probs, how

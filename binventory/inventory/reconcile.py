"""``binventory reconcile``: count the photos of bins, judge each against the inventory's record,
and write the observations and audit tasks.

Each batch of photos is one transaction: its observations and the tasks they open are written
together or not at all. An observation is keyed by (bin, image SHA-256, model version), so a
rerun over the same photos adds nothing, and a run killed half-way and rerun ends in the state
one clean run reaches.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session
from tqdm import tqdm

from binventory.inventory.audit import Finding, open_tasks
from binventory.inventory.db import Database, dialect_insert
from binventory.inventory.models import DECISIONS, Bin, BinContent, Model, Observation, Sku, utcnow
from binventory.inventory.photos import default_image_dir, photo_uri
from binventory.inventory.policy import Decision, Policy
from binventory.inventory.verify import ItemRecord
from binventory.serving.batch import load_item, loaded_batches
from binventory.serving.inputs import list_inputs
from binventory.serving.predictor import Predictor

LOOKUP = 5_000


@dataclass
class BinView:
    """What the inventory says of one bin, as the verifier needs it."""
    bin_id: int
    expected: int
    records: list[ItemRecord]


@dataclass
class Photo:
    """One photo to judge: whose bin, where it is (``photos.photo_uri``), its bytes' hash, when
    it was taken."""
    code: str
    uri: str
    sha256: str
    captured_at: datetime


def load_bins(session: Session, codes: list[str]) -> dict[str, BinView]:
    """The records of the known bins among ``codes`` (unknown codes are simply absent)."""
    views: dict[str, BinView] = {}
    for start in range(0, len(codes), LOOKUP):
        chunk = codes[start:start + LOOKUP]
        for bin_id, code in session.execute(select(Bin.id, Bin.code).where(Bin.code.in_(chunk))):
            views[code] = BinView(bin_id, 0, [])
        by_id = {v.bin_id: v for v in views.values()}
        rows = session.execute(
            select(BinContent.bin_id, BinContent.quantity, Sku.length, Sku.width, Sku.height, Sku.weight)
            .join(Sku, Sku.id == BinContent.sku_id)
            .where(BinContent.bin_id.in_([views[c].bin_id for c in chunk if c in views])))
        for bin_id, quantity, *size in rows:
            view = by_id[bin_id]
            view.expected += quantity
            view.records.append(ItemRecord(quantity, *size))
    return views


def register_model(session: Session, predictor: Predictor, policy: Policy, path: str = "") -> None:
    """Remember the model (and the thresholds) that judged the observations. One upsert, not a
    read then an insert: replicas registering one model at once would both miss the row and
    collide on its key; here the later one waits for the first and updates the row it made."""
    now = utcnow()
    latest = {"metrics": predictor.counting.metrics, "policy": policy.to_dict(), "last_used_at": now}
    if path:  # an upload through the API knows no path: keep the one reconcile recorded
        latest["path"] = str(path)
    # A model seen judging photos is in the registry too (a candidate until promoted), with
    # the lineage its artifact carries (binventory.inventory.registry).
    lineage = {"parent": getattr(predictor.counting, "parent", "") or None,
               "data": list(getattr(predictor.counting, "data", None) or [])}
    stmt = dialect_insert(session)(Model).values(version=predictor.model_id, name=predictor.model_name,
                                                 registered_at=now, **lineage, **{"path": "", **latest})
    session.execute(stmt.on_conflict_do_update(index_elements=[Model.version], set_=latest))


def write_observations(session: Session, views: list[BinView], photos: list[Photo],
                       probs: np.ndarray, class_names: list[str], model_version: str,
                       decisions: list[Decision]) -> list[int | None]:
    """Insert the observations (and open or update the audit tasks they call for); returns each
    observation's id, or None where this photo of this bin was already judged by this model."""
    insert = dialect_insert(session)
    now = utcnow()
    rows = [{"bin_id": v.bin_id, "image_uri": p.uri, "image_sha256": p.sha256,
             "captured_at": p.captured_at, "model_version": model_version,
             "predicted_count": d.predicted_count,
             "probabilities": {n: round(float(x), 6) for n, x in zip(class_names, row)},
             "expected_quantity": v.expected, "decision": d.action, "score": d.score,
             "created_at": now}
            for v, p, row, d in zip(views, photos, probs, decisions)]
    if not rows:
        return []
    stmt = (insert(Observation).on_conflict_do_nothing(
        index_elements=["bin_id", "image_sha256", "model_version"])
        .returning(Observation.id, Observation.bin_id, Observation.image_sha256))
    # Core, not the ORM: a plain executemany is several times faster for a batch of rows.
    ids = {(b, s): i for i, b, s in session.connection().execute(stmt, rows)}
    out, findings = [], []
    for view, photo, decision in zip(views, photos, decisions):
        obs_id = ids.pop((view.bin_id, photo.sha256), None)  # a photo twice in a batch: once
        out.append(obs_id)
        if obs_id is not None and decision.action != "confirm":
            findings.append((view.bin_id, obs_id, Finding(decision.action, decision.priority,
                                                          decision.predicted_count, view.expected)))
    if findings:
        open_tasks(session, findings)
    return out


def judge(db: Database, predictor: Predictor, policy: Policy, views: list[BinView],
          photos: list[Photo], probs: np.ndarray) -> tuple[list[Decision], list[int | None]]:
    """Decide and write a group of counted photos in one transaction."""
    decisions = policy.decide(probs, predictor.classes, [v.expected for v in views],
                              [v.records for v in views])
    with db.session() as session:
        ids = write_observations(session, views, photos, probs, predictor.classes.names,
                                 predictor.model_id, decisions)
    return decisions, ids


@dataclass
class ReconcileReport:
    images: int = 0
    observed: int = 0
    already_seen: int = 0
    unknown_bins: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    decisions: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        lines = [f"{self.images:,} photos: {self.observed:,} new observations, "
                 f"{self.already_seen:,} already judged by this model (skipped)"]
        if self.observed:
            lines.append("  " + ", ".join(f"{k} {self.decisions[k]:,} ({self.decisions[k] / self.observed:.1%})"
                                          for k in DECISIONS))
        if self.unknown_bins:
            lines.append(f"{len(self.unknown_bins):,} photos of bins not in the inventory (skipped; "
                         f"import them first), e.g. {', '.join(self.unknown_bins[:5])}")
        if self.errors:
            lines.append(f"{len(self.errors):,} photos could not be used:")
            lines += [f"  {src}: {why}" for src, why in self.errors[:10]]
        return "\n".join(lines)


def _captured_at(source: str) -> datetime:
    # A local file's mtime is when it was taken (or copied); it is also stable across reruns.
    if source.startswith("s3://"):
        return utcnow()
    return datetime.fromtimestamp(os.stat(source).st_mtime, timezone.utc)


def _seen(session: Session, version: str, keys: list[tuple[int, str]]) -> set[tuple[int, str]]:
    if not keys:
        return set()
    rows = session.execute(select(Observation.bin_id, Observation.image_sha256)
                           .where(Observation.model_version == version,
                                  tuple_(Observation.bin_id, Observation.image_sha256).in_(keys)))
    return {(bin_id, sha) for bin_id, sha in rows}


def reconcile(db: Database, predictor: Predictor, policy: Policy, inputs: str | Path, *,
              model_path: str = "", batch_size: int = 32, commit_every: int = 256, workers: int = 4,
              endpoint_url: str | None = None, split: str | None = None,
              image_dir: str | Path | None = None, progress: bool = True) -> ReconcileReport:
    """Judge every photo under ``inputs`` (a folder, an s3:// prefix or a manifest); a photo's
    bin is its file name without the suffix (ABID: bin-images/<id>.jpg); ``split`` picks one
    split of a manifest. Photos are counted ``batch_size`` at a time and written about
    ``commit_every`` at a time, one transaction each (a kill loses at most that many counts, which
    the rerun redoes). Photos are recorded relative to ``image_dir``, the image store the
    server shows them from (``binventory.inventory.photos``)."""
    items, client = list_inputs(inputs, endpoint_url, split=split)
    image_dir = image_dir or default_image_dir()
    report = ReconcileReport(images=len(items))
    with db.session() as session:
        register_model(session, predictor, policy, model_path)
        views = load_bins(session, sorted({it.image_id for it in items}))
    known = [it for it in items if it.image_id in views]
    report.unknown_bins = sorted(it.image_id for it in items if it.image_id not in views)

    def load(item):
        return load_item(item, predictor.preprocess, client)

    bar = tqdm(total=len(known), unit="img", desc="reconcile", disable=None if progress else True)
    pending: list[tuple[Photo, np.ndarray]] = []

    def flush() -> None:
        photos = [p for p, _ in pending]
        decisions, ids = judge(db, predictor, policy, [views[p.code] for p in photos], photos,
                               np.stack([row for _, row in pending]))
        pending.clear()
        for decision, obs_id in zip(decisions, ids):
            if obs_id is None:
                report.already_seen += 1
            else:
                report.observed += 1
                report.decisions[decision.action] += 1
        bar.set_postfix(report.decisions)

    for batch in loaded_batches(known, load, workers, batch_size):
        bar.update(len(batch))
        good = []
        for x in batch:
            if x.error:
                report.errors.append((x.item.source, x.error))
            else:
                good.append(x)
        with db.reader() as session:
            seen = _seen(session, predictor.model_id,
                         [(views[x.item.image_id].bin_id, x.sha256) for x in good])
        todo = [x for x in good if (views[x.item.image_id].bin_id, x.sha256) not in seen]
        report.already_seen += len(good) - len(todo)
        if todo:
            probs = predictor.predict_arrays(np.stack([x.pixels for x in todo]))
            pending += [(Photo(x.item.image_id, photo_uri(x.item.source, image_dir), x.sha256,
                               _captured_at(x.item.source)), row) for x, row in zip(todo, probs)]
        if len(pending) >= commit_every:
            flush()
    if pending:
        flush()
    bar.close()
    return report

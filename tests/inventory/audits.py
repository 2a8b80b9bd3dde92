"""A warehouse with resolved audits and photos, and tiny models that count its photos well or
badly, for the registry and comparison tests."""
from __future__ import annotations

from pathlib import Path

import torch
from sqlalchemy import select

from binventory.inventory import audit
from binventory.inventory.models import ACTIVE_STATUSES, AuditTask, Observation, utcnow
from binventory.inventory.photos import photo_uri
from binventory.model.artifact import load_artifact, save_artifact
from tests.inventory.helpers import load, make_dataset
from tests.tiny import save_tiny_model

# bin -> (the record, what a person counts). 12 right records of 2 and 4 right records of 4;
# 4 records of 3 that hold 2 (wrong). A model that sees 2 everywhere is right on 16 of 20
# audits; one that sees 4 everywhere on 4.
AUDITS = {**{f"r2-{i:02d}": (2, 2) for i in range(12)},
          **{f"w3-{i:02d}": (3, 2) for i in range(4)},
          **{f"r4-{i:02d}": (4, 4) for i in range(4)}}


def save_counter(path: Path, count: int, name: str = "test-v1", seed: int = 0) -> Path:
    """A tiny model that predicts ``count`` (one of 0..5) for every photo, almost surely: a
    counter right exactly where the truth is ``count``."""
    base = load_artifact(save_tiny_model(path, name=name, seed=seed))
    head = [m for m in base.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias[count] += 30.0
    save_artifact(path, base.model, classes=base.classes, preprocess=base.preprocess,
                  temperature=base.temperature, name=name)
    return path


def observe(db, code: str, image: Path, image_dir: Path) -> int:
    """An observation of bin ``code`` with its photo and the review task it opens."""
    with db.session() as s:
        found = audit.get_bin(s, code)
        expected = audit.expected_quantity(s, found.id)
        obs = Observation(bin_id=found.id, image_uri=photo_uri(image, image_dir),
                          image_sha256=code.ljust(64, "0"), captured_at=utcnow(), model_version="m",
                          predicted_count=0, probabilities={}, expected_quantity=expected,
                          decision="review", score=0.5, created_at=utcnow())
        s.add(obs)
        s.flush()
        audit.open_tasks(s, [(found.id, obs.id, audit.Finding("review", 0.5, 0, expected))])
        return s.scalar(select(AuditTask.id).where(AuditTask.bin_id == found.id,
                                                   AuditTask.status.in_(ACTIVE_STATUSES)))


def resolve_audits(db, root: Path, image_dir: Path, codes) -> None:
    image_dir.mkdir(exist_ok=True)  # the store's photos from elsewhere are reached through it
    for code in codes:
        task_id = observe(db, code, root / "bin-images" / f"{code}.jpg", image_dir)
        with db.session() as s:
            counted = AUDITS[code][1]
            audit.resolve(s, task_id, counted_quantity=counted, actor="ana",
                          reason_code=None if counted == AUDITS[code][0] else "miscount")


def warehouse(db, tmp_path: Path) -> Path:
    """The AUDITS bins imported with their records, photographed and audited; returns the image
    store the observations' photos are relative to."""
    root = make_dataset(tmp_path / "abid", {code: record for code, (record, _) in AUDITS.items()})
    load(db, root)
    image_dir = tmp_path / "store"
    resolve_audits(db, root, image_dir, AUDITS)
    return image_dir

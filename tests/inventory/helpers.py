"""Small inventories for the inventory tests, and a comparable snapshot of a database's state."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from binventory.inventory.importer import import_abid
from binventory.inventory.models import AuditTask, Bin, BinContent, Observation, Sku
from tests.conftest import metadata_json, write_item
from tests.tiny import image_bytes

# bin code -> expected quantity; two SKUs per bin (B00TEST000 and B00TEST001, shared by all bins)
COUNTS = {f"bin{i:03d}": i % 6 for i in range(12)}


def make_dataset(root: Path, counts: dict[str, int] = COUNTS, images: bool = True) -> Path:
    for i, (code, count) in enumerate(counts.items()):
        write_item(root, code, image=image_bytes(i) if images else None, meta=metadata_json(count, 2))
    return root


def load(db, root: Path):
    return import_abid(db, root, workers=1, progress=False)


def snapshot(db) -> dict:
    """What a run leaves in the database, without ids and timestamps."""
    with db.reader() as s:
        return {
            "contents": sorted(s.execute(select(Bin.code, Sku.asin, BinContent.quantity)
                                         .join(BinContent, BinContent.bin_id == Bin.id)
                                         .join(Sku, Sku.id == BinContent.sku_id)).all()),
            "observations": sorted((o.bin.code, o.image_sha256, o.model_version, o.predicted_count,
                                    o.expected_quantity, o.decision, round(o.score, 5))
                                   for o in s.scalars(select(Observation))),
            "tasks": sorted((t.bin.code, t.status, t.reason, round(t.priority, 5), t.predicted_count,
                             t.expected_quantity) for t in s.scalars(select(AuditTask))),
        }

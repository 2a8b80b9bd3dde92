"""``binventory inventory import-abid``: bins, SKUs and expected quantities from ABID metadata.

Bulk and idempotent. A bin is known by its code, the metadata file's id. SKUs are upserted by
ASIN (name, dimensions and weight follow the newest record). A bin's contents are loaded only when
the bin is new: once a bin is in the inventory, its quantities change through audits and the
ledger, never by re-importing, so rerunning an import changes nothing.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.dialects import sqlite
from tqdm import tqdm

from binventory import BinventoryError
from binventory.data.abid import BinRecord, SkuRecord, read_metadata
from binventory.files import require_folder
from binventory.inventory.db import Database
from binventory.inventory.models import Bin, BinContent, Sku, utcnow

CHUNK = 20_000     # records per transaction
LOOKUP = 5_000     # ids per IN (...) query: well under SQLite's and PostgreSQL's parameter limits
DONORS = 64        # SKU lines an empty bin's injected phantom line may copy (see _Injector)


@dataclass
class ImportReport:
    files: int = 0
    bins_added: int = 0
    bins_existing: int = 0
    skus_upserted: int = 0
    contents_added: int = 0
    inconsistent: int = 0          # EXPECTED_QUANTITY differs from the sum of SKU quantities
    injected: dict[str, int] = field(default_factory=dict)  # bin code -> error put in its record
    errors: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def describe(self) -> str:
        lines = [f"{self.files:,} metadata files: {self.bins_added:,} bins added, "
                 f"{self.bins_existing:,} already in the inventory (left as they are), "
                 f"{self.skus_upserted:,} SKU records, {self.contents_added:,} bin lines"]
        if self.injected:
            lines.append(f"{len(self.injected):,} records given an injected error (--inject-errors)")
        if self.inconsistent:
            lines.append(f"{self.inconsistent:,} records whose EXPECTED_QUANTITY differs from the "
                         "sum of their SKU quantities (the SKU quantities are kept)")
        if self.errors:
            lines.append(f"{len(self.errors):,} files skipped:")
            lines += [f"  {name}: {reason}" for name, reason in self.errors[:10]]
            if len(self.errors) > 10:
                lines.append(f"  ... and {len(self.errors) - 10:,} more")
        return "\n".join(lines)


def metadata_files(path: str | Path) -> list[str]:
    """The JSON records of an ABID dataset folder (its metadata/ folder) or of a folder of JSON."""
    path = Path(path)
    folder = path / "metadata" if (path / "metadata").is_dir() else path
    require_folder(folder, "metadata folder",
                   "expected an ABID dataset with metadata/<id>.json, or a folder of such files")
    # Names sorted as strings: sorting half a million Paths costs seconds.
    files = [os.path.join(folder, name) for name in sorted(e.name for e in os.scandir(folder)
                                              if e.name.endswith(".json") and e.is_file())]
    if not files:
        raise BinventoryError(f"no metadata (*.json) in {folder}")
    return files


def _read(path: str) -> BinRecord | tuple[str, str]:
    try:
        return read_metadata(path)
    except (OSError, ValueError) as e:
        return (os.path.basename(path), str(e))


def _ids(session, column, key, values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(values), LOOKUP):
        chunk = values[start:start + LOOKUP]
        out.update((k, v) for k, v in session.execute(select(key, column).where(key.in_(chunk))))
    return out


SKU_COLUMNS = ("asin", "name", "length", "width", "height", "weight")


def _copy(conn, table: str, columns: tuple[str, ...], rows) -> None:
    """PostgreSQL's COPY, inside the session's transaction: an order of magnitude faster than
    INSERT for hundreds of thousands of rows."""
    with conn.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _upsert_skus(db: Database, conn, skus: dict[str, tuple]) -> dict[str, int]:
    """Insert or refresh the SKUs; returns their ids by ASIN."""
    if db.dialect == "postgresql":
        conn.exec_driver_sql("CREATE TEMP TABLE sku_import (LIKE sku INCLUDING DEFAULTS) ON COMMIT DROP")
        _copy(conn, "sku_import", SKU_COLUMNS, skus.values())
        cols = ", ".join(SKU_COLUMNS)
        rows = conn.exec_driver_sql(
            f"INSERT INTO sku ({cols}) SELECT {cols} FROM sku_import ON CONFLICT (asin) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in SKU_COLUMNS[1:]) + " RETURNING id, asin")
        return {asin: i for i, asin in rows}
    # SQLite: RETURNING makes SQLAlchemy send multi-row VALUES batches and hands back the ids.
    stmt = sqlite.insert(Sku)
    stmt = stmt.on_conflict_do_update(index_elements=["asin"],
                                      set_={c: stmt.excluded[c] for c in SKU_COLUMNS[1:]})
    rows = conn.execute(stmt.returning(Sku.id, Sku.asin), [dict(zip(SKU_COLUMNS, v)) for v in skus.values()])
    return {asin: i for i, asin in rows}


def _insert(db: Database, conn, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if db.dialect == "postgresql":
        _copy(conn, table.__tablename__, columns, rows)
    else:
        conn.execute(insert(table), [dict(zip(columns, r)) for r in rows])


def _write_chunk(db: Database, records: list[BinRecord], report: ImportReport) -> None:
    # Core statements on the session's connection: the ORM's bulk path costs more than the database.
    skus = {s.asin: (s.asin, s.name, s.length, s.width, s.height, s.weight)
            for record in records for s in record.skus}
    with db.session() as session:
        conn = session.connection()
        sku_ids = _upsert_skus(db, conn, skus) if skus else {}
        report.skus_upserted += len(skus)
        existing = _ids(session, Bin.id, Bin.code, [r.image_id for r in records])
        new = [r for r in records if r.image_id not in existing]
        report.bins_existing += len(records) - len(new)
        if not new:
            return
        now = utcnow()
        _insert(db, conn, Bin, ("code", "created_at"), [(r.image_id, now) for r in new])
        bin_ids = _ids(session, Bin.id, Bin.code, [r.image_id for r in new])
        lines: dict[tuple[int, int], int] = {}
        for r in new:
            for s in r.skus:
                key = (bin_ids[r.image_id], sku_ids[s.asin])
                lines[key] = lines.get(key, 0) + s.quantity
        if lines:
            _insert(db, conn, BinContent, ("bin_id", "sku_id", "quantity"),
                    [(b, k, q) for (b, k), q in lines.items()])
        report.bins_added += len(new)
        report.contents_added += len(lines)


class _Injector:
    """Moves one SKU line of a ``share`` of the records by +-1..+-3 (the calibration's error
    model), for demos and benchmarks. Which records, and how, depends only on the seed and each
    record's id, never on the order of the files or the chunking.

    An empty bin's record gets a phantom line copied from a real SKU line: one of the DONORS lines
    of the whole import with the lowest hash of (seed, bin, line), a seeded sample that no file
    order changes. Such bins therefore wait for ``finish``, when every line has been seen.
    """

    def __init__(self, share: float, seed: int):
        if not 0.0 <= share <= 1.0:
            raise BinventoryError(f"--inject-errors is a share of the bins, 0..1, got {share}")
        self.share, self.seed = share, seed
        self.injected: dict[str, int] = {}  # bin code -> error put in its record
        self._donors: list[tuple[bytes, SkuRecord]] = []
        self._empty: list[tuple[BinRecord, np.random.Generator]] = []

    def _digest(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.seed}:{text}".encode()).digest()[:8]

    def __call__(self, record: BinRecord) -> BinRecord | None:
        """The record (with its error, if it is picked), or None for a picked empty bin."""
        self._donors += [(self._digest(f"{record.image_id}:{i}"), line)
                         for i, line in enumerate(record.skus)]
        if len(self._donors) > 2 * DONORS:
            self._donors = sorted(self._donors, key=lambda d: d[0])[:DONORS]
        rng = np.random.default_rng(int.from_bytes(self._digest(record.image_id), "big"))
        if rng.random() >= self.share:
            return record
        if not record.skus:
            self._empty.append((record, rng))
            return None
        self._inject(record, rng, [])
        return record

    def finish(self) -> list[BinRecord]:
        """The empty bins held back, with their phantom lines (none when no bin had a line)."""
        donors = [[line for _, line in sorted(self._donors, key=lambda d: d[0])[:DONORS]]]
        for record, rng in self._empty:
            if donors[0]:
                self._inject(record, rng, donors)
        records, self._empty = [r for r, _ in self._empty], []
        return records

    def _inject(self, record: BinRecord, rng: np.random.Generator, donors) -> None:
        from binventory.inventory.inject import inject_error

        record.skus, wrong = inject_error(record.skus, record.expected_quantity, rng, donors)
        self.injected[record.image_id] = wrong - record.expected_quantity
        record.expected_quantity = wrong


def import_abid(db: Database, path: str | Path, *, workers: int | None = None,
                inject_errors: float = 0.0, seed: int = 0, progress: bool = True) -> ImportReport:
    """Load every metadata file under ``path`` into the inventory; see the module docstring.
    ``inject_errors``: the share of bins whose record gets a known error (demos, benchmarks)."""
    files = metadata_files(path)
    inject = _Injector(inject_errors, seed) if inject_errors else None
    report = ImportReport(files=len(files))
    workers = workers or min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(files), unit="bin", desc="import", disable=None if progress else True)
    with ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool:
        pending: list[BinRecord] = []
        for result in pool.map(_read, files, chunksize=512):
            bar.update()
            if isinstance(result, tuple):
                report.errors.append(result)
                continue
            if result.expected_quantity != result.sku_quantity_sum:
                report.inconsistent += 1
            if inject is not None and (result := inject(result)) is None:
                continue  # an empty bin that waits for its phantom line
            pending.append(result)
            if len(pending) >= CHUNK:
                _write_chunk(db, pending, report)
                pending = []
        if inject is not None:
            pending += inject.finish()
            report.injected = inject.injected
        if pending:
            _write_chunk(db, pending, report)
    bar.close()
    return report


class _Inline:
    """A stand-in for a process pool when one worker is asked for."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)

"""Inventory write speed: observations written per second, and the time to import the metadata of
535,000 generated bins (the size of ABID), on SQLite and on PostgreSQL.

    python bench/ingest.py                        # SQLite, and PostgreSQL when it can start one
    python bench/ingest.py --pg-durability fast   # PostgreSQL only with fsync off (the tests' way)
    python bench/ingest.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python bench/ingest.py --bins 50000           # a quicker run

Observations go through the same code as ``binventory reconcile`` (write_observations: insert,
idempotency key, audit tasks for flags and reviews), one transaction per 256 photos (reconcile's
--commit-every default); the model's
probabilities are random, so the decision mix is roughly the uncalibrated policy's. Targets (issue
5): >= 5,000 observations/s; the import in < 2 minutes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, select, text

from binventory.inventory.db import Database
from binventory.inventory.importer import import_abid
from binventory.inventory.models import Bin, utcnow
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import Photo, load_bins, write_observations
from binventory.model.classes import CountClasses

REPO = Path(__file__).resolve().parents[1]


def generate(folder: Path, n: int, seed: int = 0) -> None:
    """n ABID-like metadata files: 1-5 SKUs each from a pool of n/2 ASINs, 1-4 units per SKU."""
    rng = np.random.default_rng(seed)
    meta = folder / "metadata"
    meta.mkdir(parents=True)
    pool = max(1000, n // 2)
    for i in range(n):
        skus = {}
        for asin in {f"B{int(a):09d}" for a in rng.integers(0, pool, rng.integers(1, 6))}:
            q = int(rng.integers(1, 5))
            skus[asin] = {"asin": asin, "name": f"product {asin}", "quantity": q,
                          "length": {"unit": "IN", "value": round(float(rng.uniform(1, 15)), 2)},
                          "width": {"unit": "IN", "value": round(float(rng.uniform(1, 10)), 2)},
                          "height": {"unit": "IN", "value": round(float(rng.uniform(0.2, 6)), 2)},
                          "weight": {"unit": "pounds", "value": round(float(rng.uniform(0.05, 5)), 2)}}
        record = {"BIN_FCSKU_DATA": skus, "EXPECTED_QUANTITY": sum(s["quantity"] for s in skus.values())}
        (meta / f"{i:06d}.json").write_text(json.dumps(record))


def bench_import(db: Database, folder: Path, workers: int) -> dict:
    start = time.perf_counter()
    report = import_abid(db, folder, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    again = import_abid(db, folder, workers=workers, progress=False)
    rerun = time.perf_counter() - start
    assert again.bins_added == 0
    return {"bins": report.bins_added, "lines": report.contents_added, "seconds": seconds,
            "rerun_seconds": rerun}


def bench_observations(db: Database, n: int, batch: int = 256, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    classes = CountClasses(0, 5, True)
    policy = Policy.default()
    with db.reader() as s:
        codes = list(s.scalars(select(Bin.code).order_by(Bin.id).limit(n)))
        views = load_bins(s, codes)
    probs = rng.dirichlet(np.ones(classes.num_classes) * 0.3, size=len(codes))
    names = classes.names
    written, start = 0, time.perf_counter()
    for lo in range(0, len(codes), batch):
        chunk = codes[lo:lo + batch]
        v = [views[c] for c in chunk]
        p = probs[lo:lo + batch]
        decisions = policy.decide(p, classes, [x.expected for x in v], [x.records for x in v])
        photos = [Photo(c, f"s3://bench/bin-images/{c}.jpg", hashlib.sha256(c.encode()).hexdigest(),
                        utcnow()) for c in chunk]
        with db.session() as session:
            ids = write_observations(session, v, photos, p, names, "bench-model", decisions)
        written += sum(i is not None for i in ids)
    seconds = time.perf_counter() - start
    return {"observations": written, "seconds": seconds, "per_second": written / seconds}


# A throwaway server either way: "fast" skips fsync and full-page writes like the tests' server,
# "defaults" keeps the server's own durability settings, as a real deployment runs.
PG_DURABILITY = {"fast": ([], "55499"), "defaults": (["--durable"], "55498")}


def start_postgres(durability: str = "fast") -> tuple[str | None, callable]:
    folder = Path(tempfile.mkdtemp(prefix="binventory-bench-pg-"))
    options, port = PG_DURABILITY[durability]
    try:
        url = subprocess.run([str(REPO / "scripts" / "pg-throwaway.sh"), *options, str(folder), port],
                             check=True, capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print(f"PostgreSQL skipped: {getattr(e, 'stderr', e)}")
        return None, lambda: None

    def stop():
        subprocess.run([str(REPO / "scripts" / "pg-throwaway.sh"), "--stop", str(folder)],
                       capture_output=True)
    return url, stop


def fresh_pg(admin_url: str, name: str) -> str:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", type=int, default=535_000, help="bins to generate and import")
    parser.add_argument("--observations", type=int, default=50_000, help="observations to write")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="import processes")
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL server to use (default: start one)")
    parser.add_argument("--pg-durability", nargs="+", choices=list(PG_DURABILITY),
                        default=list(PG_DURABILITY),
                        help="throwaway servers to start: fast (fsync and full_page_writes off), "
                             "defaults (the server's own settings); ignored with --pg-url")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="binventory-bench-ingest-"))
    shutil.rmtree(work / "abid", ignore_errors=True)
    start = time.perf_counter()
    generate(work / "abid", args.bins)
    print(f"generated {args.bins:,} metadata files in {time.perf_counter() - start:.0f} s")

    # name -> (database URL or None, how to start its server); one server at a time.
    targets = {} if args.no_sqlite else {"sqlite": (f"sqlite:///{work / 'bench.db'}", None)}
    if args.pg_url:
        targets["postgresql (given server)"] = (args.pg_url, None)
    else:
        for durability in args.pg_durability:
            label = "fsync off" if durability == "fast" else "server defaults, fsync on"
            targets[f"postgresql ({label})"] = (None, durability)
    rows = []
    try:
        for name, (url, durability) in targets.items():
            stop = lambda: None  # noqa: E731
            if durability:
                url, stop = start_postgres(durability)
                if url is None:
                    continue
            try:
                if url.startswith("postgresql"):
                    url = fresh_pg(url, "binventory_bench")
                elif (work / "bench.db").exists():
                    (work / "bench.db").unlink()
                db = Database.open(url, create=True)
                imp = bench_import(db, work / "abid", args.workers)
                obs = bench_observations(db, min(args.observations, args.bins))
                db.close()
            finally:
                stop()
            rows.append((name, imp, obs))
            print(f"{name}: import {imp['bins']:,} bins ({imp['lines']:,} lines) in {imp['seconds']:.1f} s "
                  f"(rerun {imp['rerun_seconds']:.1f} s); {obs['observations']:,} observations in "
                  f"{obs['seconds']:.1f} s = {obs['per_second']:,.0f}/s", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {date.today()}")
    print("| database | bins imported | import (s) | rerun (s) | observations/s |")
    print("|---|---:|---:|---:|---:|")
    for name, imp, obs in rows:
        print(f"| {name} | {imp['bins']:,} | {imp['seconds']:.1f} | {imp['rerun_seconds']:.1f} | "
              f"{obs['per_second']:,.0f} |")


if __name__ == "__main__":
    main()

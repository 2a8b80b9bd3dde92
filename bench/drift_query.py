"""How long the drift watch's query takes on a big window: ``--days`` days of ``--per-day``
synthetic photos (tests/inventory/test_drift.py's counter, inserted directly), then
``drift.check`` three times (best reported).

    PYTHONPATH=. python bench/drift_query.py --db sqlite:////tmp/drift_bench.db --per-day 10000
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from binventory.inventory import drift
from binventory.inventory.db import Database
from tests.inventory.test_drift import STEADY_SHARES, add_photos, days_ago, draw, reference_policy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, help="an empty database URL (filled), or one filled before")
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--per-day", type=int, default=10000)
    p.add_argument("--no-insert", action="store_true", help="time the query on the database as it is")
    args = p.parse_args()
    db = Database.open(args.db, create=True)
    if not args.no_insert:
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for k in range(args.days, 0, -1):
            add_photos(db, days_ago(k), draw(rng, args.per_day), STEADY_SHARES, rng)
        print(f"insert: {time.perf_counter() - started:.1f} s")
    policy, best = reference_policy(), []
    for _ in range(3):
        started = time.perf_counter()
        with db.reader() as session:
            report = drift.check(session, policy)
        best.append(time.perf_counter() - started)
    print(f"{sum(d.n for d in report.days):,} photos over {len(report.days)} days: "
          f"check {min(best) * 1000:.0f} ms (best of 3), {len(report.shifts)} warnings")
    db.close()


if __name__ == "__main__":
    main()

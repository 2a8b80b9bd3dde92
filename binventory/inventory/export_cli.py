"""``binventory data from-inventory``: defined here, beside the inventory it reads, and hung under
``binventory data`` by ``binventory.cli`` (binventory.data never imports the inventory)."""
from __future__ import annotations

import argparse
from pathlib import Path

from binventory.inventory.cli import _db, _open


def add_data_parsers(data_commands, formatter) -> None:
    p = data_commands.add_parser(
        "from-inventory", formatter_class=formatter,
        help="turn the inventory's resolved audits into a labelled dataset",
        description="Write every resolved audit (its photo, the count a person made, the bin's "
                    "record after the recount) into DIR in the ABID layout (bin-images/, "
                    "metadata/) with a split manifest, DIR/manifest.parquet, that 'binventory "
                    "train --manifest' and 'binventory data merge' read. Split by bin and time: "
                    "a bin never sits in two splits; a bin new to the export goes to val when its "
                    "latest audit is among the newest --val-fraction of all exported audits, and "
                    "a bin keeps its split on every rerun. A rerun adds only audits not yet "
                    "exported (by task id) and leaves earlier rows and images as they are.",
        epilog="examples:\n"
               "  binventory data from-inventory --db sqlite:///data/inventory.db --out data/audits\n"
               "  binventory data from-inventory --out data/audits --since 2026-11-01 "
               "--include-confirmed\n"
               "  binventory data merge runs/dev.parquet data/audits/manifest.parquet "
               "--out runs/dev+audits.parquet")
    _db(p)
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write (or add to)")
    p.add_argument("--since", default=None, metavar="T",
                   help="only audits resolved at or after T (ISO-8601 date or time, UTC unless "
                        "it says otherwise); rows exported earlier are kept")
    p.add_argument("--include-confirmed", action="store_true",
                   help="also add photos the model confirmed (no audit) as weak labels: the "
                        "record's quantity, weak=true, source=confirmed, train only, never for a "
                        "bin in val")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="share of the newest audits whose bins form the validation split")
    p.add_argument("--image-dir", type=Path, default=None,
                   help="the image store observations' photo paths are relative to (default: "
                        "$BINVENTORY_DATA_DIR/observations, else data/observations)")
    p.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint for s3:// photos")
    p.set_defaults(func=_from_inventory)


def _from_inventory(args: argparse.Namespace) -> int:
    from binventory.inventory.export import export, parse_since

    since = parse_since(args.since)
    db = _open(args)
    try:
        report = export(db, args.out, since=since, include_confirmed=args.include_confirmed,
                        val_fraction=args.val_fraction, image_dir=args.image_dir,
                        endpoint_url=args.s3_endpoint_url)
    finally:
        db.close()
    print(report.describe())
    return 0

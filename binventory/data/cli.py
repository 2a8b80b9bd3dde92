"""``binventory data ...``: fetch, synth, index, split and summarize ABID-layout datasets."""
from __future__ import annotations

import argparse
from pathlib import Path

from binventory import BinventoryError
from binventory.data.abid import BUCKET


def add_parser(commands, formatter):
    """Define ``binventory data``; returns its sub-commands, for the assembling layer to add the
    ones defined in later stages (``from-inventory``)."""
    data = commands.add_parser(
        "data", help="get, check and split bin images",
        description="Get, check and split bin images in the ABID layout "
                    "(bin-images/<id>.jpg, metadata/<id>.json).",
        formatter_class=formatter)
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser(
        "fetch", formatter_class=formatter,
        help="download ABID images and metadata from S3 (anonymous)",
        description="Download ABID images and metadata from the public bucket (no AWS account "
                    "needed) into the same layout. Concurrent, retried and resumable: a rerun "
                    "downloads only what is missing or differs from the bucket.",
        epilog="examples:\n"
               "  binventory data fetch --subset udacity --limit 2000 --out data/abid\n"
               "  binventory data fetch --list ids.txt --out data/abid\n"
               "  binventory data fetch --ids 00523 523 --out data/abid")
    what = p.add_argument_group("what to download (one of)")
    what.add_argument("--subset", choices=["udacity"],
                      help="a named subset: udacity = the 10,441-image 1-5 item list")
    what.add_argument("--list", type=Path, dest="id_list",
                      help="ids to download: a text file (one id or metadata path per line) or a "
                           "file_list.json-style JSON")
    what.add_argument("--ids", nargs="+", help="ids given on the command line")
    p.add_argument("--subset-list", type=Path, default=None,
                   help="local copy of the subset's file_list.json (default: download it once "
                        "and cache it under the output folder)")
    p.add_argument("--limit", type=int, default=None,
                   help="download at most this many images (a subset stays balanced across counts)")
    p.add_argument("--out", type=Path, required=True, help="dataset root to write into")
    s3 = p.add_argument_group("S3")
    s3.add_argument("--bucket", default=BUCKET, help="bucket to read")
    s3.add_argument("--prefix", default="", help="key prefix in front of bin-images/ and metadata/")
    s3.add_argument("--endpoint-url", default=None,
                    help="S3-compatible endpoint (MinIO, a local mirror, moto)")
    s3.add_argument("--workers", type=int, default=16, help="concurrent downloads")
    s3.add_argument("--retries", type=int, default=5, help="attempts per object")
    p.set_defaults(func=_fetch)

    p = sub.add_parser(
        "synth", formatter_class=formatter,
        help="generate synthetic ABID-like bins (offline)",
        description="Write synthetic bin photos and metadata in the ABID layout: a fabric bin "
                    "with 0..max-count items of varied shapes, colours and textures, overlapping "
                    "and rotated, occluded by elastic straps, under varied lighting. The same "
                    "seed gives the same bytes.")
    p.add_argument("--n", type=int, default=1000, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", type=Path, required=True, help="dataset root to write into")
    p.add_argument("--max-count", type=int, default=5, help="largest number of items in a bin")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "index", formatter_class=formatter,
        help="build a Parquet manifest and quarantine bad files",
        description="Read every image and metadata record under DIR, check them and write a "
                    "Parquet manifest (one row per image id, valid or not) and a quarantine "
                    "report listing every bad file with its reason.")
    p.add_argument("root", type=Path, metavar="DIR", help="dataset root in the ABID layout")
    p.add_argument("--out", type=Path, default=None,
                   help="manifest path, or a folder to write manifest.parquet in "
                        "(default: DIR/manifest.parquet)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images larger than this many pixels (default: 50,000,000)")
    p.set_defaults(func=_index)

    p = sub.add_parser(
        "split", formatter_class=formatter,
        help="write a deterministic train/val/test split into a manifest",
        description="Assign each valid image of a protocol to train, val or test, stratified by "
                    "count and seeded, or from id lists. Images outside the protocol or invalid "
                    "get 'excluded'. The manifest is rewritten in place, atomically.",
        epilog="protocols: udacity = 1-5 items, challenge = 0-5 items, all = every count\n"
               "examples:\n"
               "  binventory data split data/synth/manifest.parquet --protocol challenge\n"
               "  binventory data split m.parquet --list train=splits/dev.txt "
               "--list test=splits/public_test.txt --val-fraction 0.1")
    p.add_argument("manifest", type=Path, help="manifest written by 'binventory data index'")
    p.add_argument("--protocol", choices=["udacity", "challenge", "all"], default="challenge",
                   help="which counts take part")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--ratios", type=float, nargs=3, default=(0.8, 0.1, 0.1),
                   metavar=("TRAIN", "VAL", "TEST"), help="split fractions")
    p.add_argument("--list", action="append", default=[], metavar="SPLIT=FILE", dest="lists",
                   help="take SPLIT's ids from FILE instead of a random split (repeatable)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="with --list and no val list: share of train carved out as val")
    p.set_defaults(func=_split)

    p = sub.add_parser(
        "merge", formatter_class=formatter,
        help="merge split manifests of several datasets into one",
        description="Write one manifest over several datasets (say the ABID sample and a "
                    "count-folder set), each row keeping its split. Paths become relative to "
                    "the datasets' common folder; an id found in two inputs must be the same "
                    "image (the second copy is dropped).",
        epilog="example:\n"
               "  binventory data index ../shared/abid-extra --out runs/extra.parquet\n"
               "  binventory data split runs/extra.parquet --protocol all --ratios 1 0 0\n"
               "  binventory data merge runs/dev.parquet runs/extra.parquet --out runs/all.parquet")
    p.add_argument("manifests", type=Path, nargs="+", metavar="MANIFEST",
                   help="manifests with a split (two or more)")
    p.add_argument("--out", type=Path, required=True, help="merged manifest to write")
    p.set_defaults(func=_merge)

    p = sub.add_parser("summary", formatter_class=formatter,
                       help="print a manifest's per-count table",
                       description="Print images per count and split, and the quarantine total.")
    p.add_argument("manifest", type=Path)
    p.set_defaults(func=_summary)
    return sub


def _fetch(args: argparse.Namespace) -> int:
    from binventory.data import fetch

    chosen = [x for x in (args.subset, args.id_list, args.ids) if x]
    if len(chosen) != 1:
        raise BinventoryError("choose exactly one of --subset, --list or --ids")
    if args.subset:
        ids = list(fetch.load_subset(args.subset, args.out, args.subset_list))
    elif args.id_list:
        from binventory.data.abid import read_id_list
        ids = read_id_list(args.id_list)
    else:
        from binventory.data.abid import check_image_id
        ids = list(dict.fromkeys(check_image_id(i) for i in args.ids))
    if args.limit is not None:
        if args.limit < 1:
            raise BinventoryError("--limit must be at least 1")
        ids = ids[: args.limit]
    report = fetch.fetch(ids, args.out, bucket=args.bucket, prefix=args.prefix,
                         endpoint_url=args.endpoint_url, workers=args.workers,
                         retries=args.retries)
    print(report.describe())
    return 1 if report.failed else 0


def _synth(args: argparse.Namespace) -> int:
    from binventory.data import synth

    if args.n < 1 or args.max_count < 0:
        raise BinventoryError("--n must be at least 1 and --max-count at least 0")
    ids = synth.generate(args.out, n=args.n, seed=args.seed, max_count=args.max_count,
                         workers=args.workers)
    print(f"wrote {len(ids)} synthetic bins to {args.out}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from binventory.data import manifest

    out = args.out or args.root / manifest.MANIFEST_NAME
    kwargs = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    df = manifest.build_manifest(args.root, workers=args.workers, **kwargs)
    paths = manifest.write_manifest(df, out, args.root)
    manifest.print_summary(df)
    print(f"manifest: {paths.manifest}")
    print(f"quarantine report: {paths.quarantine} ({int((df.status != 'ok').sum())} files)")
    return 0


def _split(args: argparse.Namespace) -> int:
    from binventory.data import manifest, split

    df, meta = manifest.read_manifest(args.manifest)
    lists = {}
    for item in args.lists:
        name, sep, path = item.partition("=")
        if not sep or name not in split.SPLITS:
            raise BinventoryError(f"--list wants SPLIT=FILE with SPLIT in {split.SPLITS}, got {item!r}")
        lists[name] = Path(path)
    df = split.assign_splits(df, protocol=args.protocol, seed=args.seed, ratios=tuple(args.ratios),
                             lists=lists or None, val_fraction=args.val_fraction)
    meta.update({"split_protocol": args.protocol, "split_seed": str(args.seed)})
    manifest.update_manifest(args.manifest, df, meta)
    manifest.print_summary(df)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from binventory.data import manifest
    from binventory.data.merge import merge_manifests

    df, root = merge_manifests(args.manifests)
    paths = manifest.write_manifest(df, args.out, root)
    manifest.print_summary(df)
    print(f"manifest: {paths.manifest} (root {root})")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from binventory.data import manifest

    df, _ = manifest.read_manifest(args.manifest)
    manifest.print_summary(df)
    return 0

"""``binventory inventory ...`` (the database, import, calibration, tokens, the audit queue) and
``binventory reconcile``."""
from __future__ import annotations

import argparse
from pathlib import Path

from binventory import BinventoryError

DB_HELP = "database URL (default: $BINVENTORY_DB_URL, else sqlite:///data/inventory.db)"


def _db(p) -> None:
    p.add_argument("--db", default=None, help=DB_HELP)


def add_parsers(commands, formatter) -> None:
    commands.add_parser(
        "inventory", formatter_class=formatter, help="the inventory database and its audit queue",
        description="Bins, SKUs and expected quantities; the observations that judged them; the "
                    "audit tasks people resolve; the ledger of adjustments. SQLite by default, "
                    "PostgreSQL with --db postgresql+psycopg://user:password@host/db.",
        define=lambda inv: _inventory_commands(inv, formatter))
    _reconcile_parser(commands, formatter)


def _define_calibrate(p) -> None:
    # calibrate's options live beside its code, which loads numpy, scikit-learn and torch: only
    # 'binventory inventory calibrate' pays for that (binventory.cli.DeferredParser).
    from binventory.inventory import calibrate

    calibrate.define_parser(p)


def _inventory_commands(inv, formatter) -> None:
    from binventory.inventory.reasons import AGREED_REASON, REASON_CODES

    sub = inv.add_subparsers(dest="inventory_command", metavar="COMMAND", required=True)

    p = sub.add_parser("migrate", formatter_class=formatter, help="create or upgrade the schema",
                       description="Bring the database to a schema revision (Alembic), under a "
                                   "lock on PostgreSQL. Only this command changes an existing "
                                   "schema: the others (and serve) refuse one that is not the "
                                   "newest; import-abid, token create and serve make the schema "
                                   "in an empty database.")
    _db(p)
    p.add_argument("--revision", default="head", help="target revision ('base' empties the database)")
    p.set_defaults(func=_migrate)

    p = sub.add_parser("import-abid", formatter_class=formatter,
                       help="load bins, SKUs and expected quantities from ABID metadata",
                       description="Load every metadata/<id>.json of an ABID dataset folder: a bin "
                                   "per file (its id is the bin code), SKUs by ASIN, expected "
                                   "quantities per SKU. Idempotent: bins already in the inventory "
                                   "keep their quantities (audits change those, through the ledger).",
                       epilog="example:\n  binventory inventory import-abid data/abid")
    p.add_argument("path", type=Path, help="ABID dataset folder (with metadata/) or a folder of JSON")
    _db(p)
    p.add_argument("--workers", type=int, default=None, help="parsing processes (default: CPUs, at most 8)")
    p.add_argument("--inject-errors", type=float, default=0.0, metavar="SHARE",
                   help="for demos and benchmarks: give this share of the new bins a wrong record "
                        "(one SKU's quantity moved by +-1..+-3, never below 0), to see what "
                        "reconciliation catches")
    p.add_argument("--seed", type=int, default=0, help="which bins get errors, and which")
    p.set_defaults(func=_import)

    sub.add_parser("calibrate", formatter_class=formatter, define=_define_calibrate,
                   help="fit the record verifier and pick confirm/flag thresholds on validation data")

    p = sub.add_parser("status", formatter_class=formatter,
                       help="the inventory in numbers: decisions, queue, ledger, model",
                       description="Print each bin's latest decision (confirmed, flagged, in "
                                   "review), the audit queue, the ledger's size and the active "
                                   "model's thresholds. Reads only: a database that does not "
                                   "exist is an error.")
    _db(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("summary", formatter_class=formatter,
                       help="what reconciliation achieved, against a dataset's own counts",
                       description="Score each photographed bin's latest decision against the "
                                   "true count a manifest gives it (its label: ABID's "
                                   "EXPECTED_QUANTITY): of the wrong records, how many were "
                                   "flagged, queued for review or wrongly confirmed; of the right "
                                   "ones, how many were auto-confirmed; and the recounts still to "
                                   "do. For demos and trials, where the truth is known "
                                   "(import-abid --inject-errors). Reads only.",
                       epilog="example:\n  binventory inventory summary --truth data/demo/synth/manifest.parquet")
    _db(p)
    p.add_argument("--truth", type=Path, required=True,
                   help="manifest whose labels are the true counts (or its folder)")
    p.set_defaults(func=_summary)

    p = sub.add_parser("tasks", formatter_class=formatter, help="list audit tasks by priority",
                       description="List audit tasks, highest priority first: the recounts the "
                                   "policy asked for (flag: a likely discrepancy; review: the "
                                   "model was unsure), with the record and the model's count.")
    _db(p)
    p.add_argument("--status", default="open", help="open, in_progress, resolved, cancelled or all")
    p.add_argument("--bin", default=None, help="only this bin's tasks")
    p.add_argument("--limit", type=int, default=20, help="how many")
    p.set_defaults(func=_tasks)

    p = sub.add_parser("spot-check", formatter_class=formatter,
                       help="open recounts of confirmed bins drawn at random",
                       description="Open audit tasks (reason 'spot') for N bins drawn at random "
                                   "among those whose latest photo was confirmed and that have "
                                   "no open task. Flags and reviews recount only what the policy "
                                   "doubted; spot checks measure the wrong records it confirmed, "
                                   "which 'calibrate --from-audits' needs to measure false "
                                   "confirms without bias. They rank below every flag and review.",
                       epilog="example:\n  binventory inventory spot-check --n 50")
    _db(p)
    p.add_argument("--n", type=int, required=True, help="how many bins to recount")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    p.set_defaults(func=_spot_check)

    p = sub.add_parser("claim", formatter_class=formatter, help="take an open task",
                       description="Mark an open task in progress with the person who recounts "
                                   "the bin, so that no one else takes it.",
                       epilog="example:\n  binventory inventory claim 17 --assignee alice")
    _db(p)
    p.add_argument("task", type=int, help="task id")
    p.add_argument("--assignee", required=True, help="who recounts")
    p.set_defaults(func=_claim)

    p = sub.add_parser("resolve", formatter_class=formatter,
                       help="record a recount (writes the ledger when it differs)",
                       description="Close a task with the items a person counted in the bin. A "
                                   "count that differs from the record changes the record and "
                                   "writes a ledger line with the reason code; one that agrees "
                                   "changes nothing.",
                       epilog="example:\n  binventory inventory resolve 17 --count 3 --by alice "
                              "--reason-code miscount")
    _db(p)
    p.add_argument("task", type=int, help="task id")
    p.add_argument("--count", type=int, required=True, help="items counted in the bin")
    p.add_argument("--reason-code", default=None, choices=(*REASON_CODES, AGREED_REASON),
                   metavar="CODE",
                   help="why the count differs from the record, needed when it does: "
                        f"{', '.join(REASON_CODES)} ({AGREED_REASON} or none when it agrees)")
    p.add_argument("--by", required=True, help="who counted")
    p.add_argument("--note", default=None, help="free text")
    p.set_defaults(func=_resolve)

    token = sub.add_parser("token", formatter_class=formatter, help="API tokens for writes",
                           description="Bearer tokens for the API's writes and the dashboard's "
                                       "sign-in. Only a token's SHA-256 is stored.")
    tsub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    p = tsub.add_parser("create", formatter_class=formatter, help="make a token (shown once)",
                        description="Make a token for a person or a robot and print it: it is "
                                    "shown only this once.")
    _db(p)
    p.add_argument("name", help="who or what uses it, e.g. 'robot-fleet-3' or 'alice'")
    p.set_defaults(func=_token_create)
    p = tsub.add_parser("list", formatter_class=formatter, help="list tokens (names only)",
                        description="List every token's id, name, creation date and whether it "
                                    "is live or revoked (never the token itself).")
    _db(p)
    p.set_defaults(func=_token_list)
    p = tsub.add_parser("revoke", formatter_class=formatter, help="revoke every token of a name",
                        description="Revoke every live token of a name: requests carrying one "
                                    "are refused from then on.")
    _db(p)
    p.add_argument("name", help="the name given to 'token create'")
    p.set_defaults(func=_token_revoke)


def _reconcile_parser(commands, formatter) -> None:
    p = commands.add_parser(
        "reconcile", formatter_class=formatter,
        help="count bin photos and confirm, flag or queue each bin's record",
        description="Predict every photo under --input (a folder, an ABID dataset, a manifest or "
                    "s3://bucket/prefix; a photo's bin is its file name without the suffix), judge "
                    "it against the bin's record with the policy, and write observations and audit "
                    "tasks in transactional batches. Rerunning over the same photos adds nothing; "
                    "a run killed half-way and rerun ends as one clean run does.",
        epilog="example:\n  binventory reconcile --model runs/m/model.pt --policy runs/m/policy.json "
               "--input data/abid")
    p.add_argument("--model", type=Path, required=True, help="counting model artifact (model.pt)")
    p.add_argument("--input", required=True, help="folder, manifest .parquet or s3://bucket/prefix")
    p.add_argument("--split", default=None, help="with a manifest input: only this split (e.g. test)")
    p.add_argument("--policy", type=Path, default=None,
                   help="thresholds from 'binventory inventory calibrate' (default: uncalibrated, "
                        "conservative blind thresholds)")
    _db(p)
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx",
                   help="inference engine: onnx (ONNX Runtime, faster on CPU) uses model.onnx "
                        "beside the artifact, exported first when missing or stale; torch runs "
                        "the artifact itself")
    p.add_argument("--batch-size", type=int, default=32, help="photos per model call")
    p.add_argument("--commit-every", type=int, default=256,
                   help="photos per database transaction (a kill loses at most this many counts)")
    p.add_argument("--workers", type=int, default=4, help="threads reading and decoding photos")
    p.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint (unset: AWS)")
    p.add_argument("--image-dir", type=Path, default=None,
                   help="the image store 'serve --image-dir' shows photos from: observations "
                        "record each photo's path relative to it (default: "
                        "$BINVENTORY_DATA_DIR/observations, else data/observations)")
    p.set_defaults(func=_reconcile)


def _open(args, create: bool = False):
    from binventory.inventory.db import Database
    return Database.open(args.db, create=create)


def _migrate(args: argparse.Namespace) -> int:
    from binventory.inventory.db import current_revision, make_engine, migrate

    engine = make_engine(args.db)
    before = current_revision(engine)
    migrate(engine, args.revision)
    print(f"{engine.url.render_as_string(hide_password=True)}: {before or 'empty'} -> "
          f"{current_revision(engine) or 'empty'}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from binventory.inventory.importer import import_abid

    report = import_abid(_open(args, create=True), args.path, workers=args.workers,
                         inject_errors=args.inject_errors, seed=args.seed)
    print(report.describe())
    return 0


def print_status(db) -> None:
    from rich.console import Console
    from rich.table import Table

    from binventory.inventory.views import overview

    with db.reader() as session:
        o = overview(session)
    judged = sum(o["decisions"].values())
    table = Table(title=f"inventory: {o['bins']:,} bins, {o['bins_observed']:,} observed")
    table.add_column("latest decision")
    table.add_column("bins", justify="right")
    table.add_column("share", justify="right")
    for name, label in (("confirm", "confirmed"), ("flag", "flagged (discrepancy)"), ("review", "in review")):
        n = o["decisions"][name]
        table.add_row(label, f"{n:,}", f"{n / judged:.1%}" if judged else "-")
    console = Console()
    console.print(table)
    t = o["tasks"]
    console.print(f"audit tasks: {t['open']:,} open, {t['in_progress']:,} in progress, "
                  f"{t['resolved']:,} resolved, {t['cancelled']:,} cancelled; "
                  f"ledger: {o['adjustments']:,} adjustments", soft_wrap=True)
    if o["model"]:
        policy = o["model"]["policy"] or {}  # a model recorded without a policy has none

        def threshold(name: str) -> str:
            value = policy.get(name)
            return f"{value:.3g}" if isinstance(value, (int, float)) else "?"

        kind = (policy.get("verifier") or {}).get("kind", "?")
        console.print(f"model {o['model']['version']}: t_confirm={threshold('t_confirm')}, "
                      f"t_flag={threshold('t_flag')} ({kind} verifier)", soft_wrap=True)


def _status(args: argparse.Namespace) -> int:
    print_status(_open(args))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from binventory.inventory.outcome import outcome, print_outcome, truth_counts

    truth = truth_counts(args.truth)
    with _open(args).reader() as session:
        print_outcome(outcome(session, truth))
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from binventory.inventory.audit import list_tasks

    with _open(args).reader() as session:
        rows, total = list_tasks(session, status=None if args.status == "all" else args.status,
                                 bin_code=args.bin, limit=args.limit)
        print(f"{total:,} tasks ({args.status}); highest priority first")
        print(f"{'id':>6} {'bin':<16} {'status':<12} {'reason':<7} {'priority':>8} "
              f"{'expected':>8} {'predicted':>9}")
        for t in rows:
            print(f"{t.id:>6} {t.bin.code:<16} {t.status:<12} {t.reason:<7} {t.priority:>8.3f} "
                  f"{t.expected_quantity!s:>8} {t.predicted_count!s:>9}")
    return 0


def _spot_check(args: argparse.Namespace) -> int:
    from binventory.inventory.audit import open_spot_checks

    with _open(args).session() as session:
        tasks = open_spot_checks(session, args.n, seed=args.seed)
        print(f"{len(tasks)} spot checks opened" + (f" (only {len(tasks)} confirmed bins without "
                                                     "an open task)" if len(tasks) < args.n else ""))
        for t in tasks:
            print(f"{t.id:>6} {t.bin.code:<16} record {t.expected_quantity}")
    return 0


def _claim(args: argparse.Namespace) -> int:
    from binventory.inventory.audit import claim

    with _open(args).session() as session:
        task = claim(session, args.task, args.assignee)
        print(f"task {task.id} (bin {task.bin.code}) is in progress with {task.assignee}")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from binventory.inventory.audit import resolve

    with _open(args).session() as session:
        task, adjustments = resolve(session, args.task, counted_quantity=args.count, actor=args.by,
                                    reason_code=args.reason_code, note=args.note)
        print(f"task {task.id} (bin {task.bin.code}) resolved: counted {args.count}")
        for a in adjustments:
            print(f"  ledger: {a.sku.asin} {a.quantity_before} -> {a.quantity_after} "
                  f"({a.delta:+d}, {a.reason_code})")
        if not adjustments:
            print("  the count agrees with the record: no adjustment")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from binventory.inventory.tokens import create_token

    with _open(args, create=True).session() as session:
        token = create_token(session, args.name)
    print(token)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from binventory.inventory.tokens import list_tokens

    with _open(args).reader() as session:
        for t in list_tokens(session):
            state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "live"
            print(f"{t.id:>4} {t.name:<32} created {t.created_at:%Y-%m-%d %H:%M} {state}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from binventory.inventory.tokens import revoke_tokens

    with _open(args).session() as session:
        n = revoke_tokens(session, args.name)
    if not n:
        raise BinventoryError(f"no live token named {args.name!r}")
    print(f"revoked {n} token(s) of {args.name!r}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from binventory.inventory.policy import Policy, check_policy
    from binventory.inventory.reconcile import reconcile
    from binventory.serving.predictor import Predictor

    if min(args.batch_size, args.commit_every, args.workers) < 1:
        raise BinventoryError("--batch-size, --commit-every and --workers must be at least 1")
    predictor = Predictor.load(args.model, backend=args.backend)
    policy = Policy.load(args.policy) if args.policy else Policy.default()
    check_policy(policy, predictor)
    db = _open(args)
    report = reconcile(db, predictor, policy, args.input, model_path=str(args.model),
                       batch_size=args.batch_size, commit_every=args.commit_every, workers=args.workers,
                       endpoint_url=args.s3_endpoint_url, split=args.split, image_dir=args.image_dir)
    print(report.describe())
    if not report.observed and not report.already_seen:
        # a run that judged nothing (every bin unknown, every photo unreadable) must not pass for
        # one that did in a script or a scheduler
        raise BinventoryError(f"none of the {report.images:,} photos was judged (why: above)")
    print_status(db)
    return 0

"""``binventory model ...``: the model registry in the inventory database (list, register,
compare, promote, rollback). See binventory.inventory.registry and binventory.inventory.compare."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from binventory.inventory.cli import _db, _open


def add_parsers(commands, formatter) -> None:
    commands.add_parser(
        "model", formatter_class=formatter, help="the model registry: list, register, compare, "
                                                 "promote, rollback",
        description="Every model that judged photos or was registered, with its parent, the data "
                    "it trained on, its metrics and its state: candidate, active (the one a "
                    "service run with --follow-registry serves) or retired (was active). "
                    "`promote` refuses a candidate that `compare` did not find better than the "
                    "active model, unless --force.",
        epilog="example:\n  binventory model register runs/m2/model.pt --policy runs/m2/policy.json\n"
               "  binventory model compare MODEL_ID --image-dir data/observations\n"
               "  binventory model promote MODEL_ID",
        define=lambda p: _model_commands(p, formatter))


def _model_commands(parent, formatter) -> None:
    sub = parent.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    p = sub.add_parser("list", formatter_class=formatter, help="every model and its state",
                       description="The registry: the active model first, then the newest.")
    _db(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("register", formatter_class=formatter, help="add a model artifact as a candidate",
                       description="Add a model.pt to the registry as a candidate (idempotent: "
                                   "registering it again keeps its state and updates its path, "
                                   "and its policy when one is given).")
    p.add_argument("artifact", type=Path, help="the model.pt that 'binventory train' wrote")
    p.add_argument("--policy", type=Path, default=None,
                   help="its thresholds from 'binventory inventory calibrate' (default: none; it "
                        "is then served with the conservative default policy)")
    _db(p)
    p.set_defaults(func=_register)

    p = sub.add_parser("compare", formatter_class=formatter,
                       help="score a candidate against the active model on recent audits",
                       description="Count the photos of the resolved audits newer than the "
                                   "candidate's training data with both models and report exact "
                                   "accuracy, RMSE, right records confirmed and the false-confirm "
                                   "rate, each with a paired bootstrap 95% interval; the verdict "
                                   "is stored for `promote`. Better = the interval of the "
                                   "difference lies above 0 for exact accuracy or right records "
                                   "confirmed, and no figure is clearly worse.")
    p.add_argument("candidate", help="the candidate's model id")
    p.add_argument("--against", default="active", help="'active' or a model id")
    _db(p)
    p.add_argument("--image-dir", type=Path, default=None,
                   help="the image store the observations' photos are relative to (default: "
                        "$BINVENTORY_DATA_DIR/observations, else data/observations)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=_compare)

    p = sub.add_parser("promote", formatter_class=formatter, help="make a model the active one",
                       description="Make a model active and retire the one before. Refused when "
                                   "its last comparison with the active model did not find it "
                                   "better (or there is none, or it compared with another "
                                   "model), unless --force. With no active model yet, any model "
                                   "may be promoted.")
    p.add_argument("model_id", metavar="ID", help="the model id")
    p.add_argument("--force", action="store_true", help="promote it whatever its comparison says")
    _db(p)
    p.set_defaults(func=_promote)

    p = sub.add_parser("rollback", formatter_class=formatter,
                       help="put the previously active model back",
                       description="Re-activate the model retired most recently; the current "
                                   "active model goes back to the candidates. Repeat to go "
                                   "further back.")
    _db(p)
    p.set_defaults(func=_rollback)


def _short_metrics(metrics: dict | None) -> str:
    metrics = metrics or {}
    val = metrics.get("val") if isinstance(metrics.get("val"), dict) else metrics
    shown = []
    if isinstance(val.get("accuracy"), (int, float)):
        shown.append(f"val exact {val['accuracy']:.1%}")
    if isinstance(val.get("rmse"), (int, float)):
        shown.append(f"rmse {val['rmse']:.2f}")
    return ", ".join(shown) or "-"


def _data(data: list | None) -> str:
    if not data:
        return "-"
    images = sum(int(d.get("images") or 0) for d in data if isinstance(d, dict))
    return f"{len(data)} manifest{'s' if len(data) > 1 else ''}, {images:,} images"


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from binventory.inventory.registry import list_models

    with _open(args).reader() as session:
        models = list_models(session)
    table = Table(title=f"model registry: {len(models)} models")
    for column in ("id", "name", "state", "parent", "data", "metrics", "registered", "last comparison"):
        # ids are what people copy into `promote`: never folded
        table.add_column(column, no_wrap=column in ("id", "state", "registered"), overflow="fold")
    for m in models:
        c = m.comparison or {}
        last = f"{c['verdict']} ({c.get('audits', 0)} audits) vs {c.get('against')}" if c else "-"
        table.add_row(m.version, m.name, m.state, m.parent or "-", _data(m.data),
                      _short_metrics(m.metrics), f"{m.registered_at:%Y-%m-%d %H:%M}", last)
    Console(width=max(Console().width, 200)).print(table)  # a pipe gets whole rows, not 80 columns
    return 0


def _register(args: argparse.Namespace) -> int:
    from binventory.inventory.policy import Policy
    from binventory.inventory.registry import register

    policy = Policy.load(args.policy) if args.policy else None
    with _open(args, create=True).session() as session:
        m = register(session, args.artifact, policy=policy)
        print(f"model {m.version} ({m.name}) is in the registry: {m.state}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from binventory import BinventoryError
    from binventory.inventory.compare import LABELS, compare

    if args.resamples < 100:
        raise BinventoryError("--resamples must be at least 100")
    result = compare(_open(args), args.candidate, args.against, image_dir=args.image_dir,
                     resamples=args.resamples)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['candidate']} against {result['against']}: {result['audits']} audits"
          + (f" resolved after {result['since']}" if result["since"] else ""))
    for why, n in result["skipped"].items():
        print(f"  left out: {n} ({why})")
    coverage = result.get("coverage") or {}
    if coverage.get("share") is not None:
        strata = ", ".join(f"{k} {v['audits']} of {v['photos']}" for k, v in result["strata"].items())
        print(f"  weighted by stratum (audits of photos): {strata}; covers {coverage['share']:.1%} "
              "of the photos" + (f" (no audits of {', '.join(coverage['missing'])})"
                                 if coverage["missing"] else ""))
    for name, figure in (result.get("figures") or {}).items():
        if figure.get("note"):
            print(f"  {LABELS[name]:<26} {figure['note']}")
            continue
        parts = [f"{who} {_value(name, figure[who], who == 'difference')}"
                 for who in ("candidate", "baseline", "difference")]
        print(f"  {LABELS[name]:<26} " + "   ".join(parts))
    print(f"verdict: {result['verdict']}" + "".join(f"\n  {r}" for r in result["reasons"]))
    return 0


def _value(name: str, v: dict, signed: bool = False) -> str:
    if v["value"] is None:
        return "n/a"
    fmt = ("{:+.3f}" if signed else "{:.3f}") if name == "rmse" else ("{:+.1%}" if signed else "{:.1%}")
    return f"{fmt.format(v['value'])} [{fmt.format(v['low'])}, {fmt.format(v['high'])}]"


def _promote(args: argparse.Namespace) -> int:
    from binventory.inventory.registry import active, promote

    with _open(args).session() as session:
        before = active(session)
        before = before.version if before else None
        m = promote(session, args.model_id, force=args.force)
    print(f"model {m.version} is active" + (f"; {before} is retired" if before else ""))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from binventory.inventory.registry import active, rollback

    with _open(args).session() as session:
        current = active(session)
        current = current.version if current else None
        m = rollback(session)
    print(f"model {m.version} is active again; {current} is a candidate")
    return 0

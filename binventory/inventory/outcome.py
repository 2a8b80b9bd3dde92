"""What reconciliation achieved, judged against the truth: ``binventory inventory summary``.

The truth is a dataset's own counts (a manifest's labels: ABID's EXPECTED_QUANTITY), the records
as they were before ``import-abid --inject-errors`` moved some. A bin's record was wrong when the
quantity its latest photo was judged against differs from that count. Per bin, not per photo:
each photographed bin counts once, by its latest decision.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory.models import ACTIVE_STATUSES, AuditTask, Bin, Observation


def truth_counts(manifest: str | Path) -> dict[str, int]:
    """Image id (= bin code) -> its true count, from a manifest's labelled rows (a folder
    holding manifest.parquet will do); a bin's count stands even where its photo is unusable."""
    from binventory.data.manifest import MANIFEST_NAME, read_manifest

    path = Path(manifest)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        path = path / MANIFEST_NAME
    df, _ = read_manifest(path)
    rows = df[df.label.notna()]
    return dict(zip(rows.image_id.astype(str), rows.label.astype(int)))


def outcome(session: Session, truth: dict[str, int]) -> dict:
    """Bins photographed, split by whether their record was right, and what was decided."""
    latest = (select(func.max(Observation.id).label("id")).group_by(Observation.bin_id).subquery())
    rows = session.execute(select(Bin.code, Observation.expected_quantity, Observation.decision)
                           .join(latest, latest.c.id == Observation.id)
                           .join(Bin, Bin.id == Observation.bin_id))
    out = {"wrong": {"photographed": 0, "flag": 0, "review": 0, "confirm": 0},
           "right": {"photographed": 0, "flag": 0, "review": 0, "confirm": 0}, "unknown": 0}
    for code, expected, decision in rows:
        if code not in truth:
            out["unknown"] += 1  # a bin the dataset does not count: no truth to judge it by
            continue
        side = out["right" if expected == truth[code] else "wrong"]
        side["photographed"] += 1
        side[decision] += 1
    out["recounts"] = session.scalar(select(func.count(AuditTask.id))
                                     .where(AuditTask.status.in_(ACTIVE_STATUSES)))
    return out


def _share(n: int, of: int) -> str:
    return f"{n / of:.1%}" if of else "-"


def print_outcome(o: dict, console=None) -> None:
    """One short table: wrong records caught or missed, right records confirmed, recounts."""
    from rich.console import Console
    from rich.table import Table

    if not o["wrong"]["photographed"] + o["right"]["photographed"]:
        raise BinventoryError("no photographed bin has a count in the truth: nothing to score "
                              "(reconcile photos of the dataset's bins first)")
    # No wrapping or cutting in a piped log: the table is narrow, let it keep its width.
    console = console or Console(width=max(Console().width, 100))
    wrong, right = o["wrong"], o["right"]
    table = Table(title="What reconciliation achieved", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("bins", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    table.add_row("wrong records photographed", f"{wrong['photographed']:,}", "", style="bold")
    for key, label in (("flag", "flagged (clear discrepancy)"), ("review", "queued for review"),
                       ("confirm", "wrongly confirmed")):
        table.add_row(f"  {label}", f"{wrong[key]:,}", _share(wrong[key], wrong["photographed"]))
    table.add_row("right records photographed", f"{right['photographed']:,}", "", style="bold")
    sent = right["flag"] + right["review"]
    table.add_row("  auto-confirmed", f"{right['confirm']:,}",
                  _share(right["confirm"], right["photographed"]))
    table.add_row("  sent to a person anyway", f"{sent:,}", _share(sent, right["photographed"]))
    table.add_row("recounts needed (audit tasks to do)", f"{o['recounts']:,}", "", style="bold")
    console.print(table)
    console.print("Each photographed bin once, by its latest photo; a record is wrong when it "
                  "differs from the dataset's own count.", soft_wrap=True)
    if o["unknown"]:
        console.print(f"{o['unknown']:,} photographed bins have no count in the truth: left out",
                      soft_wrap=True)

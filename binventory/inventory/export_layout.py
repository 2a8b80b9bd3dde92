"""Where an inventory export goes: DIR/bin-images/<id>.jpg, DIR/metadata/<id>.json (the ABID
layout, so ``binventory data index DIR`` reads it too) and DIR/manifest.parquet with its splits.

Splits are by bin and time. Let N be the audits in the export (earlier runs' and this one's) and
V = ceil(F x N) the newest of them, by resolution time then task id. A bin not yet in the
export goes to val when its latest audit is one of those V, else to train; a bin already in
the export keeps its split, so a rerun never moves a row. All of a bin's rows share its split.
Confirmed photos (weak labels) are train only: those of a val bin are left out.

A rerun adds only audits (by task id) and confirmed photos (by observation id) not in the
manifest; earlier rows are kept as they are. Each file is written atomically, a file already
holding the same bytes is left alone, and the manifest is written last, in one piece.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from binventory import BinventoryError
from binventory.data.abid import image_key, metadata_key
from binventory.data.manifest import COLUMNS, MANIFEST_NAME, _typed, read_manifest, write_manifest
from binventory.data.validate import check_image_bytes
from binventory.files import atomic_write_bytes, sha256_file
from binventory.inventory.export import AUDIT, CONFIRMED, Candidate
from binventory.inventory.photos import photo_path

log = logging.getLogger(__name__)

# The columns an export adds to the manifest's own (binventory.data.manifest.COLUMNS).
EXTRA_COLUMNS = ["split", "labelled_at", "bin_code", "source", "weak", "task_id", "observation_id",
                 "expected_before", "predicted_count", "model_version", "decision"]
_INT_EXTRA = ["task_id", "observation_id", "expected_before", "predicted_count"]
_STR_EXTRA = ["split", "labelled_at", "bin_code", "source", "model_version", "decision"]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class ExportReport:
    out: Path
    kept: int = 0
    added: dict[str, int] = field(default_factory=lambda: {AUDIT: 0, CONFIRMED: 0})
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id, why)
    withheld: int = 0   # confirmed photos of val bins
    no_photo: int = 0   # resolved audits with no observation
    written: int = 0
    unchanged: int = 0
    rows: dict[str, int] = field(default_factory=dict)   # split -> rows
    bins: dict[str, int] = field(default_factory=dict)   # split -> bins

    def describe(self) -> str:
        lines = [f"{self.out / MANIFEST_NAME}: {sum(self.rows.values()):,} photos "
                 f"({', '.join(f'{k} {v:,} in {self.bins.get(k, 0):,} bins' for k, v in sorted(self.rows.items()))}); "
                 f"added {self.added[AUDIT]:,} audits and {self.added[CONFIRMED]:,} confirmed photos, "
                 f"kept {self.kept:,} from earlier runs",
                 f"images: {self.written:,} written, {self.unchanged:,} already there"]
        if self.withheld:
            lines.append(f"{self.withheld:,} confirmed photos of validation bins left out "
                         "(weak labels never validate)")
        if self.no_photo:
            lines.append(f"{self.no_photo:,} resolved audits have no photo (not exported)")
        if self.skipped:
            lines.append(f"warning: {len(self.skipped):,} photos skipped (missing or unreadable; "
                         "a rerun tries them again):")
            lines += [f"  {image_id}: {why}" for image_id, why in self.skipped[:10]]
        return "\n".join(lines)


def image_id(c: Candidate) -> str:
    """Bin code (made file-safe) and the audit's task id, or the confirmed photo's observation id:
    unique, stable across runs, and readable."""
    code = _UNSAFE.sub("_", c.bin_code).replace("..", "_").lstrip("._-")[:96] or "bin"
    return f"{code}-{'a' if c.source == AUDIT else 'c'}{c.key[1]}"


def iso(c: Candidate) -> str:
    # One fixed format: the column's strings sort as their times do (max() is the newest).
    return c.labelled_at.isoformat(timespec="microseconds")


def read_existing(out: Path) -> pd.DataFrame | None:
    if out.exists() and not out.is_dir():
        raise BinventoryError(f"--out {out} is a file, not a folder")
    path = out / MANIFEST_NAME
    if not path.exists():
        return None
    df, _ = read_manifest(path)
    missing = [c for c in EXTRA_COLUMNS if c not in df.columns]
    if missing:
        raise BinventoryError(f"{path} is not an inventory export (it lacks {', '.join(missing)}): "
                              "export into a folder of its own")
    return typed(df)


def keys(existing: pd.DataFrame | None) -> set[tuple[str, int]]:
    if existing is None:
        return set()
    ids = existing.task_id.where(existing.source == AUDIT, existing.observation_id)
    return {(str(s), int(i)) for s, i in zip(existing.source, ids)}


def typed(df: pd.DataFrame) -> pd.DataFrame:
    df = _typed(df)
    for col in _INT_EXTRA:
        df[col] = df[col].astype("Int64")
    for col in _STR_EXTRA:
        df[col] = df[col].astype("string")
    df["weak"] = df.weak.astype(bool)
    return df


def assign_bins(audits: list[tuple[str, int, str]], fixed: dict[str, str],
                val_fraction: float) -> dict[str, str]:
    """Split per bin code from (labelled_at, task id, bin code) of every audit in the export."""
    order = sorted(audits)
    newest = {task_id for _, task_id, _ in order[len(order) - math.ceil(val_fraction * len(order)):]} \
        if val_fraction > 0 else set()
    latest = {code: task_id for _, task_id, code in order}
    return {code: fixed.get(code) or ("val" if task_id in newest else "train")
            for code, task_id in latest.items()}


class _Reader:
    """A photo's bytes by its stored URI; the S3 client is made on the first s3:// photo."""

    def __init__(self, image_dir: Path, endpoint_url: str | None):
        self.image_dir, self.endpoint_url, self.client = image_dir, endpoint_url, None

    def read(self, uri: str) -> bytes:
        from binventory.serving.inputs import read_bytes

        if uri.startswith("s3://"):
            if self.client is None:
                from binventory.data.fetch import make_client
                self.client = make_client(self.endpoint_url, 4)
            return read_bytes(uri, self.client)
        return read_bytes(str(photo_path(uri, self.image_dir)), None)


def _jpeg(data: bytes) -> tuple[bytes | None, str]:
    """The photo as JPEG bytes (a PNG upload is re-encoded), or None and why not."""
    check = check_image_bytes(data, allow_png=True)
    if not check.ok:
        return None, check.reason
    if data.startswith(b"\xff\xd8\xff"):
        return data, ""
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(io.BytesIO(data)) as img:
        img.convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue(), ""


def _write_if_changed(path: Path, data: bytes, report: ExportReport | None = None) -> None:
    # An image a crashed run already copied is not copied again (nor its mtime touched).
    if path.is_file() and sha256_file(path) == hashlib.sha256(data).hexdigest():
        if report is not None:
            report.unchanged += 1
        return
    atomic_write_bytes(path, data)
    if report is not None:
        report.written += 1


def _metadata(c: Candidate, image: str) -> dict:
    def measure(value, unit):
        return None if value is None else {"unit": unit, "value": value}

    lines = {s["asin"]: {"asin": s["asin"], "name": s["name"], "quantity": s["quantity"],
                         "length": measure(s["length"], "IN"), "width": measure(s["width"], "IN"),
                         "height": measure(s["height"], "IN"), "weight": measure(s["weight"], "pounds")}
             for s in c.skus}
    return {"BIN_FCSKU_DATA": lines, "EXPECTED_QUANTITY": c.label, "image_fname": f"{image}.jpg",
            "binventory": {"bin_code": c.bin_code, "source": c.source, "task_id": c.task_id,
                           "observation_id": c.observation_id, "labelled_at": iso(c)}}


def _copy(c: Candidate, out: Path, reader: _Reader, report: ExportReport) -> dict | None:
    """Copy one photo and write its record; the manifest row, or None when it is skipped."""
    from binventory.serving.predictor import ImageError

    name = image_id(c)
    try:
        data, why = _jpeg(reader.read(c.image_uri))
    except (OSError, ImageError) as e:
        data, why = None, f"cannot read {c.image_uri}: {getattr(e, 'strerror', None) or e}"
    except Exception as e:  # botocore's errors for an S3 photo; one bad photo never stops a run
        data, why = None, f"cannot read {c.image_uri}: {type(e).__name__}: {e}"
    if data is None:
        report.skipped.append((name, why))
        return None
    _write_if_changed(out / image_key(name), data, report)
    meta = json.dumps(_metadata(c, name), indent=1, sort_keys=True).encode()
    _write_if_changed(out / metadata_key(name), meta)
    check = check_image_bytes(data)
    return {"image_id": name, "image_path": image_key(name), "metadata_path": metadata_key(name),
            "label": c.label, "sku_quantity_sum": sum(s["quantity"] for s in c.skus),
            "num_skus": len(c.skus), "width": check.width, "height": check.height,
            "bytes": check.nbytes, "sha256": check.sha256, "status": "ok", "reason": "",
            "has_record": True, "labelled_at": iso(c), "bin_code": c.bin_code, "source": c.source,
            "weak": c.weak, "task_id": c.task_id, "observation_id": c.observation_id,
            "expected_before": c.expected_before, "predicted_count": c.predicted_count,
            "model_version": c.model_version, "decision": c.decision}


def write_export(out: Path, existing: pd.DataFrame | None, candidates: list[Candidate], *,
                 val_fraction: float, image_dir: Path, endpoint_url: str | None = None,
                 no_photo: int = 0, progress: bool = True) -> ExportReport:
    report = ExportReport(out=out, kept=0 if existing is None else len(existing), no_photo=no_photo)
    reader = _Reader(Path(image_dir), endpoint_url)
    fixed = {} if existing is None else dict(zip(existing.bin_code, existing.split))
    bar = tqdm(total=len(candidates), desc="export", unit="img", disable=None if progress else True)
    rows = []
    # Audits first: which of them could be copied decides the new bins' splits, and a confirmed
    # photo of a val bin is then never copied at all.
    for c in (c for c in candidates if c.source == AUDIT):
        rows.append(_copy(c, out, reader, report))
        bar.update()
    rows = [r for r in rows if r is not None]
    old = [] if existing is None else list(zip(existing.labelled_at, existing.task_id, existing.bin_code,
                                               existing.source))
    audits = [(w, int(t), b) for w, t, b, s in old if s == AUDIT] + \
             [(r["labelled_at"], r["task_id"], r["bin_code"]) for r in rows]
    splits = assign_bins(audits, fixed, val_fraction)
    for c in (c for c in candidates if c.source == CONFIRMED):
        bar.update()
        if splits.get(c.bin_code, "train") == "val":
            report.withheld += 1
            continue
        row = _copy(c, out, reader, report)
        if row is not None:
            rows.append(row)
    bar.close()
    for row in rows:
        row["split"] = splits.get(row["bin_code"], "train")
        report.added[row["source"]] += 1
    if report.skipped:
        log.warning("%d photos skipped (missing or unreadable)", len(report.skipped))
    if existing is None and not rows:
        raise BinventoryError("nothing to export: no resolved audit with a readable photo"
                              + (f" ({len(report.skipped)} photos skipped)" if report.skipped else ""))
    new = pd.DataFrame(rows, columns=COLUMNS + EXTRA_COLUMNS)
    frames = [f for f in (existing, new) if f is not None and len(f)]
    df = typed(pd.concat(frames, ignore_index=True) if frames else new)
    df = df.sort_values("image_id", ignore_index=True)
    if rows or existing is None:  # nothing new: the manifest stays as it is, byte for byte
        write_manifest(df, out / MANIFEST_NAME, out)
    report.rows = df.split.value_counts().to_dict()
    report.bins = df.groupby("split").bin_code.nunique().to_dict()
    return report

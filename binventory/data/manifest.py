"""The dataset manifest: one Parquet row per image id, valid or not, plus a quarantine report.

Two layouts are read: ABID's (``bin-images/`` + ``metadata/``, each image with its record) and
count folders (``[images/]<count>/<id>.jpg``, a label but no record; ``has_record`` says which).

Paths in the manifest are relative to the dataset root, which is stored in the Parquet file's
metadata, so a manifest can live outside a read-only dataset folder.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from binventory import BinventoryError, __version__
from binventory.data.abid import (IMAGE_DIR, IMAGE_SUFFIX, METADATA_DIR, METADATA_SUFFIX,
                                  image_key, metadata_key, read_metadata)
from binventory.data.count_folders import (LABELS_FILE, count_folder_base, label_problems,
                                          read_labels, scan_count_folders)
from binventory.data.validate import MAX_PIXELS, check_image_file
from binventory.files import atomic_write, require_folder

COLUMNS = ["image_id", "image_path", "metadata_path", "label", "sku_quantity_sum", "num_skus",
           "width", "height", "bytes", "sha256", "status", "reason", "has_record"]
INT_COLUMNS = ["label", "sku_quantity_sum", "num_skus", "width", "height", "bytes"]
# What 'binventory data index DIR' writes by default, and what a folder given as a manifest holds.
MANIFEST_NAME = "manifest.parquet"
# Counts above this are pooled into one row of the summary table (ABID counts run to 88+).
SUMMARY_MAX_COUNT = 10


@dataclass
class ManifestPaths:
    manifest: Path
    quarantine: Path


def quarantine_path(manifest_path: Path) -> Path:
    return manifest_path.with_name(manifest_path.stem + ".quarantine.csv")


def _scan(root: Path) -> tuple[dict[str, str | None], dict[str, str | None], list[str]]:
    """Map ids to relative image and metadata paths; also return unexpected files."""
    images: dict[str, str | None] = {}
    metadata: dict[str, str | None] = {}
    unexpected: list[str] = []
    for folder, suffix, found in ((IMAGE_DIR, IMAGE_SUFFIX, images),
                                  (METADATA_DIR, METADATA_SUFFIX, metadata)):
        directory = root / folder
        if not directory.is_dir():
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                # Hidden files are in-flight downloads or editor droppings, not data.
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                if entry.name.endswith(suffix):
                    found[entry.name[: -len(suffix)]] = f"{folder}/{entry.name}"
                else:
                    unexpected.append(f"{folder}/{entry.name}")
    return images, metadata, unexpected


def _check_image(row: dict, root: Path, max_pixels: int, problems: list[tuple[str, str]]) -> None:
    check = check_image_file(root / row["image_path"], max_pixels=max_pixels)
    row.update(width=check.width, height=check.height, bytes=check.nbytes, sha256=check.sha256 or None)
    if not check.ok:
        problems.append((check.status, check.reason))


def _finish_row(row: dict, problems: list[tuple[str, str]]) -> dict:
    # The image's problem comes first: it is the one a user fixes first.
    row["status"] = problems[0][0] if problems else "ok"
    row["reason"] = "; ".join(reason for _, reason in problems)
    return row


def _index_one(item: tuple[str, str | None, str | None], root: Path, max_pixels: int) -> dict:
    image_id, image_rel, meta_rel = item
    row: dict = dict.fromkeys(COLUMNS)
    row.update(image_id=image_id, image_path=image_rel, metadata_path=meta_rel, has_record=True)
    problems: list[tuple[str, str]] = []

    if image_rel is None:
        problems.append(("missing_image", f"no {image_key(image_id)} for this metadata"))
    else:
        _check_image(row, root, max_pixels, problems)

    if meta_rel is None:
        problems.append(("missing_metadata", f"no {metadata_key(image_id)} for this image"))
    else:
        try:
            record = read_metadata(root / meta_rel, image_id)
            row.update(label=record.expected_quantity, sku_quantity_sum=record.sku_quantity_sum,
                       num_skus=len(record.skus))
        except (ValueError, OSError) as e:
            problems.append(("bad_metadata", str(e)))
    return _finish_row(row, problems)


def _index_counted(item: tuple[str, str | None, int | None, str | None], root: Path,
                   max_pixels: int) -> dict:
    """A count-folder image: the folder is the label; there is no record to read."""
    image_id, image_rel, label, label_problem = item
    row: dict = dict.fromkeys(COLUMNS)
    row.update(image_id=image_id, image_path=image_rel, label=label, has_record=False)
    problems: list[tuple[str, str]] = []
    if image_rel is None:
        problems.append(("missing_image", f"listed in {LABELS_FILE} but in no count folder"))
    else:
        _check_image(row, root, max_pixels, problems)
    if label_problem:
        problems.append(("bad_metadata", label_problem))
    return _finish_row(row, problems)


def _count_folder_items(root: Path, base: Path) -> tuple[list, list[str]]:
    items, unexpected = scan_count_folders(root, base)
    labels, label_file_problems = None, []
    if (root / LABELS_FILE).is_file():
        labels, label_file_problems = read_labels(root / LABELS_FILE)
    if label_file_problems:
        raise BinventoryError(f"{root / LABELS_FILE}: " + "; ".join(label_file_problems[:5]))
    problems = label_problems(items, labels)
    seen = {image_id for image_id, _, _ in items}
    out = [(image_id, rel, count, problems.get(image_id)) for image_id, rel, count in items]
    out += [(image_id, None, count, None) for image_id, count in sorted((labels or {}).items())
            if image_id not in seen]
    return out, unexpected


def build_manifest(root: str | Path, workers: int | None = None, max_pixels: int = MAX_PIXELS,
                   progress: bool = True) -> pd.DataFrame:
    """Index a dataset root in the ABID layout; bad files become rows with a status, never errors."""
    root = require_folder(root)
    images, metadata, unexpected = _scan(root)
    base = None if images or metadata else count_folder_base(root)
    if base is not None:
        items, unexpected = _count_folder_items(root, base)
        work = partial(_index_counted, root=root, max_pixels=max_pixels)
    elif images or metadata:
        ids = sorted(set(images) | set(metadata))
        items = [(i, images.get(i), metadata.get(i)) for i in ids]
        work = partial(_index_one, root=root, max_pixels=max_pixels)
    else:
        raise BinventoryError(f"no {IMAGE_DIR}/ and {METADATA_DIR}/ (ABID layout) and no count "
                              f"folders ([images/]<count>/<id>.jpg) in {root}")
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(items), desc="index", unit="img", disable=None if progress else True)
    rows = []
    if workers == 1 or len(items) < 64:
        for item in items:
            rows.append(work(item))
            bar.update()
    else:
        with Pool(workers) as pool:
            for row in pool.imap(work, items, chunksize=32):
                rows.append(row)
                bar.update()
    bar.close()
    for rel in unexpected:
        row = dict.fromkeys(COLUMNS)
        row.update(image_id=rel, status="unexpected_file", has_record=False,
                   reason="not part of the dataset layout (expected "
                          + ("<count>/<id>.jpg)" if base is not None else f"*{IMAGE_SUFFIX} or *{METADATA_SUFFIX})"))
        rows.append(row)
    return _typed(pd.DataFrame(rows, columns=COLUMNS))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    if "has_record" not in df.columns:  # manifests written before count folders were read
        df["has_record"] = df.metadata_path.notna()
    df["has_record"] = df.has_record.fillna(False).astype(bool)
    for col in INT_COLUMNS:
        df[col] = df[col].astype("Int64")
    for col in ("image_id", "image_path", "metadata_path", "sha256", "status", "reason"):
        df[col] = df[col].astype("string")
    return df


def _write_parquet(df: pd.DataFrame, path: Path, meta: dict[str, str]) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    merged = dict(table.schema.metadata or {})
    merged.update({f"binventory.{k}".encode(): str(v).encode() for k, v in meta.items()})
    atomic_write(path, lambda tmp: pq.write_table(table.replace_schema_metadata(merged), tmp))


def write_manifest(df: pd.DataFrame, path: str | Path, root: str | Path) -> ManifestPaths:
    """Write the manifest and its quarantine report, each atomically; a folder given as ``path``
    gets them as manifest.parquet inside it."""
    path, root = Path(path), Path(root)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if path.parent.exists() and not os.access(path.parent, os.W_OK):
        raise BinventoryError(f"cannot write to {path.parent} (read-only?): pass --out PATH")
    _write_parquet(df, path, {"root": root.resolve(), "version": __version__})
    quarantine = quarantine_path(path)
    bad = df.loc[df.status != "ok", ["image_id", "status", "reason", "image_path", "metadata_path"]]
    atomic_write(quarantine, lambda tmp: bad.to_csv(tmp, index=False))
    return ManifestPaths(path, quarantine)


def read_manifest(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a manifest; returns the frame and binventory's metadata (root, split protocol, ...)."""
    path = Path(path)
    if path.is_dir():
        inside = path / MANIFEST_NAME
        raise BinventoryError(f"{path} is a folder, not a manifest" + (
            f": pass {inside}" if inside.is_file() else " (build one with 'binventory data index DIR')"))
    if not path.is_file():
        raise BinventoryError(f"manifest not found: {path} (build one with 'binventory data index DIR')")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise BinventoryError(f"{path} is not a readable Parquet manifest: {e}") from None
    meta = {k.decode()[len("binventory."):]: v.decode()
            for k, v in (table.schema.metadata or {}).items() if k.startswith(b"binventory.")}
    df = table.to_pandas()
    missing = [c for c in COLUMNS if c not in df.columns and c != "has_record"]
    if missing or "root" not in meta:
        raise BinventoryError(f"{path} is not a binventory manifest (missing {missing or 'root'})")
    return _typed(df), meta


def update_manifest(path: str | Path, df: pd.DataFrame, meta: dict[str, str]) -> None:
    """Rewrite a manifest in place (atomically), keeping its metadata."""
    _write_parquet(df, Path(path), meta)


def dataset_root(meta: dict[str, str], manifest_path: str | Path) -> Path:
    """The stored root, or the manifest's folder when the dataset has moved with it."""
    root = Path(meta["root"])
    return root if root.is_dir() else Path(manifest_path).resolve().parent


def split_rows(path: str | Path, split: str | None = None) -> tuple[Path, pd.DataFrame]:
    """The dataset root and a manifest's valid images (of ``split`` only, when given), sorted by
    image id: what calibration, int8 export and batch prediction read from a manifest."""
    df, meta = read_manifest(path)
    rows = df[df.status == "ok"]
    if split is not None:
        if "split" not in df.columns:
            raise BinventoryError(f"{path} has no splits: run 'binventory data split' first")
        rows = rows[rows.split == split]
    return dataset_root(meta, path), rows.sort_values("image_id")


def manifest_hash(df: pd.DataFrame) -> str:
    """A short fingerprint of the data a model was trained on (ids, contents, labels, splits)."""
    cols = [c for c in ("image_id", "sha256", "label", "split") if c in df.columns]
    digest = hashlib.sha256()
    for values in df[cols].sort_values("image_id").itertuples(index=False):
        text = "\t".join("" if pd.isna(v) else str(v) for v in values)
        digest.update((text + "\n").encode())
    return digest.hexdigest()[:16]


def count_table(df: pd.DataFrame, max_count: int = SUMMARY_MAX_COUNT) -> pd.DataFrame:
    """Valid images per count (counts above max_count pooled), with per-split columns if split."""
    valid = df[df.status == "ok"]
    labels = valid.label.astype(int)
    bucket = labels.where(labels <= max_count, max_count + 1)
    names = {c: str(c) for c in range(max_count + 1)} | {max_count + 1: f"{max_count + 1}+"}
    table = pd.DataFrame({"images": bucket.value_counts().sort_index()})
    if "split" in valid.columns:
        for split_name in ("train", "val", "test"):
            table[split_name] = bucket[valid.split == split_name].value_counts()
    table = table.fillna(0).astype(int)
    table.index = [names[i] for i in table.index]
    table.index.name = "count"
    return table


def print_summary(df: pd.DataFrame, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    counts = count_table(df)
    total = int(counts.images.sum())
    console.print(f"{total:,} valid images of {len(df):,} indexed")
    unrecorded = int(((df.status == "ok") & ~df.has_record).sum())
    if unrecorded:
        console.print(f"{unrecorded:,} of them carry no record (count folders): they train and "
                      "validate the counter, but cannot calibrate the record verifier")
    table = Table()
    table.add_column("count", justify="right")
    for col in counts.columns:
        table.add_column(col, justify="right")
    table.add_column("share", justify="right")
    for name, row in counts.iterrows():
        table.add_row(name, *[f"{v:,}" for v in row], f"{row.images / max(total, 1):.1%}")
    table.add_row("total", *[f"{v:,}" for v in counts.sum()], "100%", style="bold")
    console.print(table)
    bad = df[df.status != "ok"].status.value_counts()
    if len(bad):
        console.print("quarantined: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    if "split" in df.columns:
        excluded = int((df.split == "excluded").sum())
        console.print(f"split: {excluded:,} images excluded (invalid or outside the protocol)")

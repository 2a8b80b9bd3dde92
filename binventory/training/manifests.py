"""What a run trains on: one manifest, or several (base data + audit exports) merged into one.

``--manifest`` takes one path, a comma list, or is repeated; several are merged with
``binventory.data.merge`` (an image in two of them is counted once). Rows marked ``weak`` (photos
the model confirmed, exported with ``--include-confirmed``) may train but never validate or
test: a label the model gave itself would grade the model by its own answers.

Each manifest becomes one lineage entry of the artifact's ``data``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from binventory import BinventoryError
from binventory.data.manifest import dataset_root, manifest_hash, read_manifest
from binventory.data.merge import merge_manifests

log = logging.getLogger(__name__)
HELD_OUT = ("val", "test")


@dataclass
class TrainingData:
    rows: pd.DataFrame          # every row; BinDataset keeps the valid ones of a split
    root: Path                  # what the rows' paths are relative to
    sources: list[dict]         # one lineage entry per manifest (CountingModel.data)

    @property
    def hash(self) -> str:
        return manifest_hash(self.rows)


def manifest_paths(manifest: str) -> list[str]:
    """The manifests in a ``--manifest`` value (one path or a comma list)."""
    return [p.strip() for p in manifest.split(",") if p.strip()]


def labelled_until(df: pd.DataFrame) -> str | None:
    """The newest ``labelled_at`` of the rows (ISO-8601 UTC), None without that column."""
    if "labelled_at" not in df.columns:
        return None
    try:
        times = pd.to_datetime(df.labelled_at, utc=True, format="ISO8601").dropna()
    except (ValueError, TypeError) as e:
        raise BinventoryError(f"the manifest's labelled_at column holds a value that is not an "
                              f"ISO-8601 time: {e}") from None
    # The audit export's format: fixed width, so these strings sort as their times do.
    return times.max().isoformat(timespec="microseconds") if len(times) else None


def _lineage(path: str, df: pd.DataFrame) -> dict:
    used = df[df.status == "ok"]
    if "split" in used.columns:
        used = used[used.split.isin(("train", *HELD_OUT))]
    return {"manifest": path, "hash": manifest_hash(df), "images": len(used),
            "labelled_until": labelled_until(used)}


def _weak_rows_train_only(df: pd.DataFrame) -> pd.DataFrame:
    if "weak" not in df.columns or "split" not in df.columns:
        return df
    # A manifest without the column (base data) merged with one that has it: its rows are not weak.
    weak = df.weak.astype("boolean").fillna(False).astype(bool)
    held_out = weak & df.split.isin(HELD_OUT)
    if held_out.any():
        log.warning("%d weak rows (model-confirmed photos) were in val or test: left out, weak "
                    "labels only train", int(held_out.sum()))
        df = df.copy()
        df.loc[held_out, "split"] = "excluded"
    return df.assign(weak=weak)


def read_training_data(manifest: str) -> TrainingData:
    paths = manifest_paths(manifest)
    if not paths:
        raise BinventoryError("--manifest is required (build one with 'binventory data index' "
                              "and 'binventory data split')")
    frames = [read_manifest(path) for path in paths]
    sources = [_lineage(path, df) for path, (df, _) in zip(paths, frames)]
    if len(paths) == 1:
        (df, meta), = frames
        root = dataset_root(meta, paths[0])
    else:
        df, root = merge_manifests(paths)
    return TrainingData(_weak_rows_train_only(df), Path(root), sources)

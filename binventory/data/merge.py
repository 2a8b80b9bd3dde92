"""One manifest from several datasets (e.g. the ABID sample plus a count-folder set).

Each input keeps its own split; paths are rewritten relative to the datasets' common folder, so
training, evaluation and prediction read a merged manifest like any other. An id in two inputs
is the same image only when its bytes are: a second copy is dropped, a different image refused.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from binventory import BinventoryError
from binventory.data.manifest import _typed, dataset_root, read_manifest


def _rebase(df: pd.DataFrame, root: Path, common: Path) -> pd.DataFrame:
    prefix = root.relative_to(common).as_posix()
    df = df.copy()
    for col in ("image_path", "metadata_path"):
        df[col] = df[col].map(lambda p: p if pd.isna(p) or prefix == "." else f"{prefix}/{p}")
    return df


def merge_manifests(paths: list[str | Path]) -> tuple[pd.DataFrame, Path]:
    """The merged rows and the root they are relative to; every input must carry a split."""
    if len(paths) < 2:
        raise BinventoryError("merge needs at least two manifests")
    frames, roots = [], []
    for path in paths:
        df, meta = read_manifest(path)
        if "split" not in df.columns:
            raise BinventoryError(f"{path} has no split: run 'binventory data split' on it first "
                                  "(e.g. --ratios 1 0 0 to train on all of it)")
        frames.append(df)
        roots.append(dataset_root(meta, path).resolve())
    common = Path(os.path.commonpath(roots))
    merged = pd.concat([_rebase(df, root, common) for df, root in zip(frames, roots)],
                       ignore_index=True)
    return _typed(_drop_copies(merged, paths)), common


def _drop_copies(df: pd.DataFrame, paths: list[str | Path]) -> pd.DataFrame:
    ok = df[df.status == "ok"]
    dup = ok[ok.image_id.duplicated(keep=False)]
    clash = dup.groupby("image_id").sha256.nunique()
    clash = clash[clash > 1]
    if len(clash):
        raise BinventoryError(f"{len(clash)} image ids name different images in "
                              f"{', '.join(map(str, paths))} (e.g. {', '.join(clash.index[:3])}): "
                              "ids must be unique across merged datasets")
    second = ok.image_id.duplicated(keep="first")
    return df.drop(index=ok.index[second])

"""Deterministic, count-stratified train/val/test splits and the count protocols.

A split depends only on the seed and the set of (id, count) pairs, never on row order, so the
same data gives the same split on every machine.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from binventory import BinventoryError
from binventory.data.abid import read_id_list

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
EXCLUDED = "excluded"
# Which counts take part: udacity = the 1-5 item subset, challenge = 0-5 items (the published
# ABID counting task), all = every count.
PROTOCOLS: dict[str, tuple[int, int | None]] = {"udacity": (1, 5), "challenge": (0, 5),
                                                "all": (0, None)}
# Large counts are rare; pooling them keeps each stratum big enough to spread over the splits.
STRATUM_CAP = 11


def protocol_mask(df: pd.DataFrame, protocol: str) -> pd.Series:
    """Rows that are valid and whose count belongs to the protocol."""
    if protocol not in PROTOCOLS:
        raise BinventoryError(f"unknown protocol {protocol!r}: choose from {list(PROTOCOLS)}")
    low, high = PROTOCOLS[protocol]
    labels = df.label.astype("Float64")
    mask = (df.status == "ok") & labels.notna() & (labels >= low)
    if high is not None:
        mask &= labels <= high
    return mask.fillna(False).astype(bool)


def stratified_assign(ids: list[str], labels: list[int], ratios: tuple[float, ...],
                      seed: int, names: tuple[str, ...] = SPLITS) -> dict[str, str]:
    """Shuffle each count's ids with the seed and cut them by the ratios."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != len(names) or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise BinventoryError(f"split ratios must be {len(names)} non-negative numbers summing "
                              f"to 1, got {ratios}")
    rng = np.random.default_rng(seed)
    by_stratum: dict[int, list[str]] = {}
    for image_id, label in zip(ids, labels):
        by_stratum.setdefault(min(int(label), STRATUM_CAP), []).append(image_id)
    cumulative = np.cumsum(ratios)
    out: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum])
        order = rng.permutation(len(members))
        # Round the cut points, not the sizes: the parts always add up to the stratum.
        cuts = np.floor(cumulative * len(members) + 0.5).astype(int)
        cuts[-1] = len(members)
        start = 0
        for name, stop in zip(names, cuts):
            for k in order[start:stop]:
                out[members[k]] = name
            start = stop
    return out


def assign_splits(df: pd.DataFrame, protocol: str = "challenge", seed: int = 0,
                  ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  lists: dict[str, Path] | None = None, val_fraction: float = 0.1) -> pd.DataFrame:
    """Return a copy of the manifest with a ``split`` column: train, val, test or excluded."""
    df = df.copy()
    mask = protocol_mask(df, protocol)
    eligible = df[mask]
    if eligible.empty:
        raise BinventoryError(f"no valid images with counts in the {protocol!r} protocol "
                              f"{PROTOCOLS[protocol]}")
    ids, labels = list(eligible.image_id), list(eligible.label.astype(int))
    if lists:
        assigned = _from_lists(ids, labels, lists, set(df.image_id), seed, val_fraction)
    else:
        assigned = stratified_assign(ids, labels, ratios, seed)
    df["split"] = pd.Series([assigned.get(i, EXCLUDED) for i in df.image_id],
                            index=df.index, dtype="string")
    return df


def _from_lists(ids: list[str], labels: list[int], lists: dict[str, Path], known: set[str],
                seed: int, val_fraction: float) -> dict[str, str]:
    label_of = dict(zip(ids, labels))
    assigned: dict[str, str] = {}
    for name, path in lists.items():
        if name not in SPLITS:
            raise BinventoryError(f"unknown split {name!r}: choose from {SPLITS}")
        listed = read_id_list(path)
        unknown = [i for i in listed if i not in known]
        if unknown:
            log.warning("%s: %d of %d ids are not in the manifest (e.g. %s)", path, len(unknown),
                        len(listed), ", ".join(unknown[:3]))
        for image_id in listed:
            if assigned.get(image_id, name) != name:
                raise BinventoryError(f"id {image_id!r} is in both the {assigned[image_id]} "
                                      f"and the {name} lists")
            if image_id in label_of:
                assigned[image_id] = name
    if "val" not in lists and "train" in lists and val_fraction > 0:
        if not 0 < val_fraction < 1:
            raise BinventoryError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
        train = [i for i, s in assigned.items() if s == "train"]
        carved = stratified_assign(train, [label_of[i] for i in train],
                                   (1 - val_fraction, val_fraction), seed, names=("train", "val"))
        assigned.update(carved)
    return assigned

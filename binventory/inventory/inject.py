"""Known-wrong records for calibration and benchmarks: copies of right records with one injected
error (one SKU line moved by +-1..+-3, never below 0; a phantom line in an empty bin), and records
far off (another bin's). ``inventory calibrate`` fits and tests the verifier on them;
``import-abid --inject-errors`` builds an inventory with them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from binventory.inventory.verify import ERROR_DELTAS, ItemRecord

DELTAS = ERROR_DELTAS
# Records far off, fitted on only (thresholds stay on DELTAS): a verifier that never saw one
# takes a photo of 2 against a record of 12 for a counter error, as both "right" and "off by
# 1-3" are all but ruled out there, and scores it above a record off by 3.
FAR = 4              # items off
N_FAR = 2            # far-off wrong records per validation image


def inject_error(lines: Sequence, expected: int, rng: np.random.Generator,
                 donors: Sequence[Sequence] = ()) -> tuple[list, int]:
    """A copy of a record with one SKU line's quantity moved by +-1..+-3 (never below 0).

    Lines are any dataclass with a ``quantity`` (ItemRecord here, SkuRecord when import-abid
    injects errors). An empty record gets a phantom line of 1-3, copied from a random donor line
    (its SKU, dimensions and weight). Returns the wrong lines and the wrong expected quantity.
    """
    lines = list(lines)
    if not lines:
        pool = [line for d in donors for line in d]
        donor = pool[rng.integers(len(pool))] if pool else ItemRecord(0)
        q = int(rng.integers(1, 4))
        return [replace(donor, quantity=q)], expected + q
    k = int(rng.integers(len(lines)))
    line = lines[k]
    deltas = [d for d in DELTAS if line.quantity + d >= 0 and expected + d >= 0]
    d = int(deltas[rng.integers(len(deltas))])
    lines[k] = replace(line, quantity=line.quantity + d)
    return lines, expected + d


def variants(expected: Sequence[int], records: Sequence[Sequence[ItemRecord]], n_wrong: int,
             rng: np.random.Generator):
    """Every image's right record plus ``n_wrong`` wrong copies.

    Returns (image index, expected, records, right) over all variants.
    """
    index, exp, recs, right = [], [], [], []
    for i, (e, lines) in enumerate(zip(expected, records)):
        index.append(i), exp.append(int(e)), recs.append(list(lines)), right.append(1)
        for _ in range(n_wrong):
            wrong_lines, wrong_e = inject_error(lines, int(e), rng, records)
            index.append(i), exp.append(wrong_e), recs.append(wrong_lines), right.append(0)
    return np.array(index, dtype=np.int64), np.array(exp), recs, np.array(right)


def far_variants(expected: Sequence[int], records: Sequence[Sequence[ItemRecord]], n_far: int,
                 rng: np.random.Generator):
    """Up to ``n_far`` wrong records per image, each another image's record at least ``FAR``
    items off (a bin taken for another): (image index, expected, records)."""
    expected = np.asarray(expected, dtype=np.int64)
    index, exp, recs = [], [], []
    for i, e in enumerate(expected):
        others = np.flatnonzero(np.abs(expected - e) >= FAR)
        for j in rng.choice(others, size=min(n_far, len(others)), replace=False):
            index.append(i), exp.append(int(expected[j])), recs.append(list(records[j]))
    return np.array(index, dtype=np.int64), np.array(exp, dtype=np.int64), recs


def with_errors(expected: Sequence[int], records: Sequence[Sequence[ItemRecord]],
                error_rate: float, rng: np.random.Generator):
    """An inventory where a share ``error_rate`` of the bins carry one injected error.

    Returns (expected, records, right) with one entry per bin.
    """
    n = len(expected)
    wrong = np.zeros(n, dtype=bool)
    wrong[rng.choice(n, size=int(round(error_rate * n)), replace=False)] = True
    exp, recs = [], []
    for i, (e, lines) in enumerate(zip(expected, records)):
        if wrong[i]:
            lines, e = inject_error(lines, int(e), rng, records)
        exp.append(int(e)), recs.append(list(lines))
    return np.array(exp), recs, (~wrong).astype(int)

"""The decision rule: confirm a bin's record, flag a discrepancy, or queue it for review.

For each bin a verifier gives ``score`` = P(the record is right). Then

- ``confirm`` when score >= t_confirm (the photo agrees; nothing to do),
- ``flag`` when score <= t_flag (a clear discrepancy: an audit task with the predicted count and
  the variance),
- ``review`` otherwise (doubtful: a person looks when there is time).

Priority ranks the work a person should do first: how likely the record is wrong times how large
the error is expected to be, squashed into [0, 1); flags get +1 so that every flag ranks above
every review. Confirmed bins get 0.

A policy is saved as plain JSON (``Policy.save``/``Policy.load``): no pickle, so loading a policy
file never runs code. ``binventory inventory calibrate`` writes one; ``Policy.default()`` is used
when none exists.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from binventory import BinventoryError
from binventory.files import atomic_write
from binventory.inventory.verify import (BlindVerifier, ItemRecord, RecordVerifier,
                                         class_counts, expected_abs_error, verifier_from_dict)
from binventory.model.classes import CountClasses

FORMAT = "binventory-policy"
FORMAT_VERSION = 1
ACTIONS = ("confirm", "flag", "review")
# Without calibration: confirm only when the counter is very sure of e, flag when it all but
# rules e out. Conservative on purpose: most bins go to review until a calibration exists.
DEFAULT_T_CONFIRM = 0.9
DEFAULT_T_FLAG = 0.02


@dataclass
class Decision:
    action: str            # "confirm" | "flag" | "review"
    score: float           # P(the record is right) per the verifier
    priority: float        # higher = a person should look first; 0.0 for "confirm"
    predicted_count: int   # the counting model's most probable count (overflow class = max+1)
    variance: int          # predicted_count - expected


@dataclass
class Policy:
    verifier: BlindVerifier | RecordVerifier = field(default_factory=BlindVerifier)
    t_confirm: float = DEFAULT_T_CONFIRM
    t_flag: float = DEFAULT_T_FLAG
    target_fcr: float = 0.01
    model_version: str | None = None
    # What calibration measured on validation data (shares, counts, split, error rate, ...).
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        # t_confirm may exceed 1: "confirm nothing" (no threshold met the target on validation).
        if not (0.0 <= self.t_flag <= 1.0 and math.isfinite(self.t_confirm)):
            raise BinventoryError(f"need t_flag in [0, 1] and a finite t_confirm, got "
                                  f"t_flag={self.t_flag}, t_confirm={self.t_confirm}")
        if self.t_flag >= self.t_confirm:
            raise BinventoryError(f"need t_flag < t_confirm, got {self.t_flag} >= {self.t_confirm}")

    @classmethod
    def default(cls) -> "Policy":
        """Blind verifier with conservative thresholds, for when no calibration exists."""
        return cls(BlindVerifier(), DEFAULT_T_CONFIRM, DEFAULT_T_FLAG, 0.01, None,
                   {"calibrated": False})

    def scores(self, probs: np.ndarray, classes: CountClasses, expected: Sequence[int],
               records: Sequence[Sequence[ItemRecord]]) -> np.ndarray:
        return self.verifier.score(probs, classes, expected, records)

    def actions(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        return np.where(scores >= self.t_confirm, "confirm",
                        np.where(scores <= self.t_flag, "flag", "review"))

    def decide(self, probs: np.ndarray, classes: CountClasses, expected: Sequence[int],
               records: Sequence[Sequence[ItemRecord]]) -> list[Decision]:
        probs = np.asarray(probs, dtype=np.float64)
        expected = [int(e) for e in expected]
        if any(e < 0 for e in expected):
            raise BinventoryError("expected quantities must be non-negative")
        if len(records) != len(expected):
            raise ValueError(f"{len(expected)} expected quantities but {len(records)} records")
        if len(expected) == 0:
            return []
        scores = np.clip(self.scores(probs, classes, expected, records), 0.0, 1.0)
        actions = self.actions(scores)
        err = expected_abs_error(probs, classes, expected)
        predicted = class_counts(classes)[probs.argmax(axis=1)].astype(int)
        out = []
        for i, e in enumerate(expected):
            raw = (1.0 - scores[i]) * err[i]
            squashed = raw / (1.0 + raw)
            priority = 0.0 if actions[i] == "confirm" else squashed + (1.0 if actions[i] == "flag" else 0.0)
            out.append(Decision(action=str(actions[i]), score=float(scores[i]),
                                priority=float(priority), predicted_count=int(predicted[i]),
                                variance=int(predicted[i]) - e))
        return out

    def mismatch(self, model_id: str | None) -> str | None:
        """Why these thresholds do not fit the model ``model_id``, or None. They were chosen on
        one model's probabilities; another model's scores mean something else. A policy
        calibrated for no model in particular (the defaults) fits any."""
        if self.model_version and self.model_version != model_id:
            return f"the policy was calibrated for model {self.model_version!r}, not {model_id!r}"
        return None

    # ---- files ----

    def to_dict(self) -> dict:
        return _finite({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "verifier": self.verifier.to_dict(), "t_confirm": float(self.t_confirm),
                        "t_flag": float(self.t_flag), "target_fcr": float(self.target_fcr),
                        "model_version": self.model_version, "stats": self.stats})

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise BinventoryError("not a binventory policy")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise BinventoryError(f"the policy needs a newer binventory (format {d['format_version']})")
        try:
            return cls(verifier_from_dict(d["verifier"]), float(d["t_confirm"]), float(d["t_flag"]),
                       float(d.get("target_fcr", 0.01)), d.get("model_version"),
                       dict(d.get("stats") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise BinventoryError(f"bad policy: {e!r}") from None

    def save(self, path: str | Path) -> Path:
        text = json.dumps(self.to_dict(), allow_nan=False)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        path = Path(path)
        if not path.is_file():
            raise BinventoryError(f"policy file not found: {path} (make one with "
                                  "'binventory inventory calibrate')")
        try:
            d = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BinventoryError(f"{path} is not a policy file (bad JSON: {e})") from None
        try:
            return cls.from_dict(d)
        except BinventoryError as e:
            raise BinventoryError(f"{path}: {e}") from None


def check_policy(policy: Policy, predictor, *, allow_mismatch: bool = False,
                 override: str | None = None) -> str | None:
    """The check ``reconcile`` and ``serve`` share: does ``policy`` fit the model ``predictor``
    (a binventory.serving.predictor.Predictor) serves? Raises BinventoryError when not, unless
    ``allow_mismatch``; then returns why not, for whoever runs it that way to show. ``override``
    names the option that allows it, for the error message."""
    problem = policy.mismatch(predictor.model_id)
    if problem and not allow_mismatch:
        hint = f", or pass {override} to use it anyway" if override else ""
        raise BinventoryError(f"{problem}: calibrate it for this model "
                              f"('binventory inventory calibrate'){hint}")
    return problem


def _finite(x):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x

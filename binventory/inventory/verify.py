"""Record verification: how likely is a bin's inventory record right, given its photo?

Two verifiers, both serialisable to plain JSON (a policy file never executes code when loaded):

- ``BlindVerifier``: the counting model's calibrated P(count = e) for the expected quantity e.
  It looks only at the photo.
- ``RecordVerifier``: P(record is right) from the photo's class probabilities *and* the record:
  the expected quantity, the number of SKU lines, how many of each, and the items' dimensions and
  weights (ABID's ``BIN_FCSKU_DATA``). A gradient-boosted tree ensemble (or a logistic
  regression) over the features of ``record_features``, fitted on validation images with injected
  record errors (``binventory.inventory.calibrate``).

Counts map to classes as ``CountClasses`` says: a count above ``max_count`` falls in the overflow
class when there is one; without one, P(count = e) = 0 for such an e.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from binventory import BinventoryError
from binventory.model.classes import CountClasses


@dataclass(frozen=True)
class ItemRecord:
    """One SKU line of a bin's record in the inventory."""
    quantity: int
    length: float | None = None   # inches, as ABID metadata gives them
    width: float | None = None
    height: float | None = None
    weight: float | None = None   # pounds


# ---- features --------------------------------------------------------------------------------

PROB_FEATURES = ["p_e", "p_lo", "p_hi", "p_far", "log_p_e", "p_e_over_max", "mean_minus_e",
                 "argmax_minus_e", "entropy", "e", "e_in_overflow", "log_lr"]
# log_lr: log P(count = e) - log mean_d P(count = e - d), d in +-1..3 with e - d >= 0: the
# likelihood ratio of "the record is right" against "it is off by one to three items".
ERROR_DELTAS = (-3, -2, -1, 1, 2, 3)
RECORD_FEATURES = ["n_lines", "max_line_qty", "share_qty_one", "log_volume", "log_item_volume",
                   "log_weight", "log_item_weight", "missing_dims", "log_volume_per_mean",
                   "max_item_side"]
FEATURES = PROB_FEATURES + RECORD_FEATURES
# Stand-ins when a record has no usable dimension or weight (with the missing_dims flag set).
_MISSING = -1.0


def class_counts(classes: CountClasses) -> np.ndarray:
    """The count each class stands for (overflow = max_count + 1), as float64."""
    return classes.counts.double().numpy()


def _check(probs: np.ndarray, classes: CountClasses, expected: Sequence[int]) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != classes.num_classes:
        raise ValueError(f"probs must be N x {classes.num_classes}, got {probs.shape}")
    if len(expected) != len(probs):
        raise ValueError(f"{len(probs)} probability rows but {len(expected)} expected quantities")
    return probs


def p_expected(probs: np.ndarray, classes: CountClasses, expected: Sequence[int]) -> np.ndarray:
    """P(count = e) per row."""
    probs = _check(probs, classes, expected)
    idx = np.array([classes.index_of(e) for e in expected], dtype=np.int64)
    out = probs[np.arange(len(probs)), np.maximum(idx, 0)] if len(probs) else np.zeros(0)
    return np.where(idx >= 0, out, 0.0)


def expected_abs_error(probs: np.ndarray, classes: CountClasses, expected: Sequence[int]) -> np.ndarray:
    """E|count - e| under the probabilities (the overflow class agrees with any e above max)."""
    probs = _check(probs, classes, expected)
    counts = class_counts(classes)
    e = np.asarray(expected, dtype=np.float64)[:, None]
    dist = np.abs(counts[None, :] - e)
    if classes.overflow:
        # "max+1 or more": no error when e is in it, at least max+1-e items missing otherwise.
        dist[:, -1] = np.maximum(counts[-1] - e[:, 0], 0.0)
    return (probs * dist).sum(axis=1)


def prob_features(probs: np.ndarray, classes: CountClasses, expected: Sequence[int]) -> np.ndarray:
    """Features of the photo's class probabilities relative to the expected quantity."""
    probs = _check(probs, classes, expected)
    n, k = probs.shape
    counts = class_counts(classes)
    out = np.zeros((n, len(PROB_FEATURES)))
    safe = np.clip(probs, 1e-12, 1.0)
    entropy = -(safe * np.log(safe)).sum(axis=1)
    mean = probs @ counts
    argmax = counts[probs.argmax(axis=1)] if n else np.zeros(0)
    for i, e in enumerate(expected):
        e = int(e)
        j = classes.index_of(e)
        if j >= 0:
            p_e = probs[i, j]
            p_lo = probs[i, j - 1] if j > 0 else 0.0
            p_hi = probs[i, j + 1] if j + 1 < k else 0.0
        else:
            p_e = p_lo = 0.0
            p_hi = 0.0
            if e < classes.min_count:
                p_hi = probs[i, 0]
            else:
                p_lo = probs[i, -1]
        others = np.delete(probs[i], j) if j >= 0 else probs[i]
        e_cap = min(e, counts[-1])
        alt = [classes.index_of(e - d) for d in ERROR_DELTAS if e - d >= 0]
        p_alt = float(np.mean([probs[i, a] if a >= 0 else 0.0 for a in alt]))
        log_lr = math.log(max(p_e, 1e-6)) - math.log(max(p_alt, 1e-6))
        out[i] = [p_e, p_lo, p_hi, max(1.0 - p_e - p_lo - p_hi, 0.0), math.log(max(p_e, 1e-6)),
                  p_e - (others.max() if len(others) else 0.0), mean[i] - e_cap, argmax[i] - e_cap,
                  entropy[i], min(e, 20), float(classes.overflow and e > classes.max_count), log_lr]
    return out


def _positive(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) and x > 0 else None


def record_features(records: Sequence[Sequence[ItemRecord]], mean_counts: np.ndarray | None = None
                    ) -> np.ndarray:
    """Features of each bin's record. Lines with quantity 0 claim nothing and are ignored."""
    out = np.full((len(records), len(RECORD_FEATURES)), 0.0)
    for i, lines in enumerate(records):
        lines = [r for r in lines if r.quantity > 0]
        qty = [int(r.quantity) for r in lines]
        volume = weight = 0.0
        sides: list[float] = []
        missing = 0
        for r in lines:
            dims = [_positive(r.length), _positive(r.width), _positive(r.height)]
            w = _positive(r.weight)
            if any(d is None for d in dims) or w is None:
                missing += 1
                continue
            volume += r.quantity * dims[0] * dims[1] * dims[2]
            weight += r.quantity * w
            sides.append(max(dims))
        total = sum(qty)
        if volume > 0 and total:
            log_v, log_w = math.log(volume), math.log(max(weight, 1e-3))
            log_iv, log_iw = math.log(volume / total), math.log(max(weight / total, 1e-3))
            mean = float(mean_counts[i]) if mean_counts is not None else float(total)
            log_vpm = log_v - math.log(max(mean, 0.5))
            side = max(sides)
        else:
            log_v = log_w = log_iv = log_iw = log_vpm = side = _MISSING
        out[i] = [len(lines), max(qty, default=0), (sum(q == 1 for q in qty) / len(qty)) if qty else 0.0,
                  log_v, log_iv, log_w, log_iw, float(missing > 0 or not lines), log_vpm, side]
    return out


def features(probs: np.ndarray, classes: CountClasses, expected: Sequence[int],
             records: Sequence[Sequence[ItemRecord]]) -> np.ndarray:
    """All features (``FEATURES`` order) for N bins."""
    probs = _check(probs, classes, expected)
    if len(records) != len(probs):
        raise ValueError(f"{len(probs)} probability rows but {len(records)} records")
    mean = probs @ class_counts(classes) if len(probs) else np.zeros(0)
    return np.hstack([prob_features(probs, classes, expected), record_features(records, mean)])


# ---- verifiers -------------------------------------------------------------------------------

class BlindVerifier:
    """Score = the counting model's calibrated P(count = e); the record beyond e is not used."""
    kind = "blind"

    def score(self, probs: np.ndarray, classes: CountClasses, expected: Sequence[int],
              records: Sequence[Sequence[ItemRecord]] | None = None) -> np.ndarray:
        return p_expected(probs, classes, expected)

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "BlindVerifier":
        return cls()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


@dataclass
class Trees:
    """A list of regression trees in flat arrays (sklearn's layout): leaves have left == -1."""
    left: list[list[int]]
    right: list[list[int]]
    feature: list[list[int]]
    threshold: list[list[float]]
    value: list[list[float]]

    def __post_init__(self):
        # All trees in one flat array, children as absolute indices: every tree is walked at once.
        sizes = [len(v) for v in self.value]
        if not (len(self.left) == len(self.right) == len(self.feature) == len(self.threshold)
                == len(sizes)) or any(len(a) != n for arrays in (self.left, self.right, self.feature,
                                                                   self.threshold)
                                     for a, n in zip(arrays, sizes)):
            raise ValueError("tree arrays of different lengths")
        offsets = np.cumsum([0] + sizes[:-1]).astype(np.int64)
        shift = np.repeat(offsets, sizes)
        flat = (lambda a, t: np.concatenate([np.asarray(v, dtype=t) for v in a]) if sizes
                else np.zeros(0, dtype=t))
        left, right = flat(self.left, np.int64), flat(self.right, np.int64)
        self._leaf = left < 0
        self._left = np.where(self._leaf, -1, left + shift)
        self._right = np.where(self._leaf, -1, right + shift)
        self._feature = np.maximum(flat(self.feature, np.int64), 0)
        self._threshold = flat(self.threshold, np.float64)
        self._value = flat(self.value, np.float64)
        self._roots = offsets

    def predict(self, x: np.ndarray) -> np.ndarray:
        if len(self._roots) == 0:
            return np.zeros(len(x))
        # scikit-learn compares float32 features with float64 thresholds: so do we, to agree
        # with it exactly on a value next to a threshold.
        x = np.asarray(x, dtype=np.float32)
        node = np.broadcast_to(self._roots, (len(x), len(self._roots))).copy()
        rows = np.arange(len(x))[:, None]
        while True:
            inner = ~self._leaf[node]
            if not inner.any():
                break
            go_left = x[rows, self._feature[node]] <= self._threshold[node]
            node = np.where(inner, np.where(go_left, self._left[node], self._right[node]), node)
        return self._value[node].sum(axis=1)

    def to_dict(self) -> dict:
        return {"left": self.left, "right": self.right, "feature": self.feature,
                "threshold": self.threshold, "value": self.value}


class RecordVerifier:
    """P(record is right) from the photo's probabilities and the record's features.

    ``model`` is "logistic" (standardised features, a linear logit) or "trees" (gradient-boosted
    regression trees on the raw features, summed logit). ``prior_logit`` shifts the logit from
    the training mix of right and wrong records to the stated share of wrong records.
    """
    kind = "record"

    def __init__(self, model: str, feature_names: list[str], *, intercept: float = 0.0,
                 coef: list[float] | None = None, mean: list[float] | None = None,
                 scale: list[float] | None = None, trees: Trees | None = None,
                 learning_rate: float = 1.0, prior_logit: float = 0.0):
        if model not in ("logistic", "trees"):
            raise BinventoryError(f"unknown record verifier model {model!r}")
        unknown = [f for f in feature_names if f not in FEATURES]
        if unknown:
            raise BinventoryError(f"record verifier uses unknown features {unknown}")
        self.model, self.feature_names = model, list(feature_names)
        self.intercept, self.coef, self.mean, self.scale = float(intercept), coef, mean, scale
        self.trees, self.learning_rate, self.prior_logit = trees, float(learning_rate), float(prior_logit)
        self._columns = [FEATURES.index(f) for f in self.feature_names]

    def logit(self, x: np.ndarray) -> np.ndarray:
        """Logit from a full feature matrix (``FEATURES`` order)."""
        x = x[:, self._columns]
        if self.model == "logistic":
            z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
            raw = self.intercept + z @ np.asarray(self.coef)
        else:
            raw = self.intercept + self.learning_rate * self.trees.predict(x)
        return raw + self.prior_logit

    def score(self, probs: np.ndarray, classes: CountClasses, expected: Sequence[int],
              records: Sequence[Sequence[ItemRecord]]) -> np.ndarray:
        if len(probs) == 0:
            return np.zeros(0)
        return _sigmoid(self.logit(features(probs, classes, expected, records)))

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "model": self.model, "features": self.feature_names,
             "intercept": self.intercept, "prior_logit": self.prior_logit}
        if self.model == "logistic":
            d.update(coef=list(map(float, self.coef)), mean=list(map(float, self.mean)),
                     scale=list(map(float, self.scale)))
        else:
            d.update(learning_rate=self.learning_rate, trees=self.trees.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RecordVerifier":
        try:
            trees = Trees(**{k: d["trees"][k] for k in Trees.__dataclass_fields__}) \
                if d["model"] == "trees" else None
            return cls(d["model"], list(d["features"]), intercept=float(d["intercept"]),
                       coef=d.get("coef"), mean=d.get("mean"), scale=d.get("scale"), trees=trees,
                       learning_rate=float(d.get("learning_rate", 1.0)),
                       prior_logit=float(d.get("prior_logit", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise BinventoryError(f"bad record verifier in policy file: {e!r}") from None

    # ---- fitting (sklearn is needed only here) ----

    @classmethod
    def fit(cls, x: np.ndarray, right: np.ndarray, *, model: str = "trees",
            feature_names: Sequence[str] | None = None, error_rate: float = 0.2,
            seed: int = 0) -> "RecordVerifier":
        """Fit on full feature rows ``x`` (FEATURES order) labelled right (1) / wrong (0).

        Wrong and right records are weighted to equal total weight; ``prior_logit`` then moves
        the scores to a population where ``error_rate`` of the records are wrong.
        """
        right = np.asarray(right).astype(int)
        if len(np.unique(right)) < 2:
            raise BinventoryError("need both right and wrong records to fit a record verifier")
        names = list(feature_names or FEATURES)
        cols = [FEATURES.index(f) for f in names]
        xs = x[:, cols]
        n_right, n_wrong = right.sum(), len(right) - right.sum()
        weight = np.where(right == 1, 0.5 / n_right, 0.5 / n_wrong) * len(right)
        prior = math.log((1 - error_rate) / error_rate)
        if model == "logistic":
            from sklearn.linear_model import LogisticRegression
            mean, scale = xs.mean(axis=0), xs.std(axis=0)
            scale = np.where(scale > 1e-9, scale, 1.0)
            lr = LogisticRegression(C=1.0, max_iter=2000)
            lr.fit((xs - mean) / scale, right, sample_weight=weight)
            return cls("logistic", names, intercept=float(lr.intercept_[0]),
                       coef=lr.coef_[0].tolist(), mean=mean.tolist(), scale=scale.tolist(),
                       prior_logit=prior)
        if model != "trees":
            raise BinventoryError(f"unknown record verifier model {model!r}")
        from sklearn.ensemble import GradientBoostingClassifier
        gb = GradientBoostingClassifier(n_estimators=150, learning_rate=0.05, max_depth=3,
                                        min_samples_leaf=20, subsample=0.8, random_state=seed)
        gb.fit(xs, right, sample_weight=weight)
        return cls.from_gradient_boosting(gb, names, prior_logit=prior)

    @classmethod
    def from_gradient_boosting(cls, gb, feature_names: Sequence[str], *,
                               prior_logit: float = 0.0) -> "RecordVerifier":
        """The trees of a fitted binary scikit-learn GradientBoostingClassifier, read through its
        public API only (``estimators_``, each tree's documented ``tree_`` arrays, and
        ``decision_function``), so that a scikit-learn upgrade cannot change a saved policy."""
        if getattr(gb, "n_classes_", None) != 2:
            raise BinventoryError("a record verifier needs a binary (right / wrong) classifier")
        t = [est[0].tree_ for est in gb.estimators_]
        trees = Trees(left=[tr.children_left.tolist() for tr in t],
                      right=[tr.children_right.tolist() for tr in t],
                      feature=[tr.feature.tolist() for tr in t],
                      threshold=[tr.threshold.tolist() for tr in t],
                      value=[tr.value[:, 0, 0].tolist() for tr in t])
        # The constant start: the raw score (log-odds) less the trees' part, at any one row.
        probe = np.zeros((1, gb.n_features_in_))
        init = float(gb.decision_function(probe)[0]
                     - gb.learning_rate * sum(est[0].predict(probe)[0] for est in gb.estimators_))
        return cls("trees", list(feature_names), intercept=init, trees=trees,
                   learning_rate=gb.learning_rate, prior_logit=prior_logit)


def verifier_from_dict(d: dict) -> BlindVerifier | RecordVerifier:
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "blind":
        return BlindVerifier.from_dict(d)
    if kind == "record":
        return RecordVerifier.from_dict(d)
    raise BinventoryError(f"unknown verifier kind {kind!r} in policy file")

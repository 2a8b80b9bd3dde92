"""Drift watch: is the stream of photos still like the one the thresholds were calibrated on?

``calibrate`` stores in the policy (``Policy.stats["reference"]``) what it saw on validation: the
shares of bins confirmed, flagged and sent to review (at its ``--error-rate``), the mean
confidence (the model's highest class probability) and its spread, the histogram of predicted
counts, and how many photos that was. ``check`` measures the same per UTC day from the
observation table (one grouped SQL query for the whole window) and says what moved past its
bounds. A new camera, lighting or product mix changes these before false confirms pile up; the
false confirms themselves only show when someone recounts.

The bounds (``Bounds``; defaults in brackets), and why:

- a day is checked only with ``min_n`` [50] photos or more: below that, a share's normal
  approximation is poor and a quiet day (a few bins, all of one kind) would alarm on noise;
- a share (confirm, flag, review) warns when a two-proportion z-test rejects "same share as at
  calibration" at ``alpha`` [0.001, two-sided, z >= 3.29] AND it moved by ``min_share_shift``
  [10 points] or more. The test keeps noise out on small days: 3 shares a day over a month is
  ~90 tests, and alpha = 0.001 makes a false alarm about one month in eleven. The minimum shift
  keeps busy days (thousands of photos, where 2 points are "significant") from alarming on
  moves nobody should act on, and absorbs the reference's own assumption: its shares are those
  at calibrate's ``--error-rate`` (20% wrong records), and a floor with 5% wrong records
  confirms ~5-8 points more for the same model and cameras;
- the mean confidence warns on a z-test at the same ``alpha`` (the spread at calibration
  stands for the day's, as it would under no change) AND a move of
  ``min_confidence_shift`` [0.05] or more. The model's probabilities are calibrated, so the mean
  confidence is its expected exact-count accuracy: 5 points fewer is 5 points fewer right counts,
  and the thresholds were not chosen for that model behaviour;
- the predicted-count histogram warns when its population stability index (PSI, both
  histograms smoothed by half a photo per class) reaches ``psi`` [0.25, the usual "significant
  shift" band; 0.1-0.25 is "moderate", shown but not a warning] AND exceeds what sampling noise
  alone gives at ``alpha``: under no change PSI ~ (1/n + 1/n_ref) chi2(K-1), which at 50 photos
  and 7 classes is ~0.5 at the 0.999 quantile, so small days need a bigger move.

Photos judged by another model than the policy's are left out: another model's probabilities
are another distribution, and its own policy carries its own reference.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from statistics import NormalDist

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from binventory.inventory.models import DECISIONS, Observation

MEASURES = ("share_confirm", "share_flag", "share_review", "mean_confidence", "count_hist")
LABELS = {"share_confirm": "share confirmed by photo", "share_flag": "share flagged",
          "share_review": "share sent to review", "mean_confidence": "mean confidence",
          "count_hist": "predicted-count mix (PSI)"}
NO_REFERENCE = ("No drift check: the policy in use has no calibration reference (the default "
                "thresholds, or a policy calibrated before drift watch existed); recalibrate "
                "with 'binventory inventory calibrate' to turn it on")


@dataclass(frozen=True)
class Bounds:
    """When a day's figures count as moved; see the module's docstring for the defaults."""
    min_n: int = 50
    alpha: float = 0.001
    min_share_shift: float = 0.10
    min_confidence_shift: float = 0.05
    psi: float = 0.25
    days: int = 14            # days back from today (UTC) that are checked

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(1 - self.alpha / 2)


# ---- the reference, at calibration -----------------------------------------------------------

def reference(probs: np.ndarray, classes, rates: dict) -> dict | None:
    """What ``calibrate`` saw on validation, for ``Policy.stats["reference"]``: the shares of
    all bins the chosen thresholds confirm, flag and review (``rates``, weighted to the stated
    error rate), the mean and spread of the highest class probability and the histogram of
    predicted counts over the images (``probs``: N x K, ``classes``: their CountClasses)."""
    probs = np.asarray(probs, dtype=np.float64)
    if not len(probs) or "confirm_share" not in rates:
        return None
    from binventory.inventory.verify import class_counts

    confidence = probs.max(axis=1)
    predicted = class_counts(classes)[probs.argmax(axis=1)].astype(int)
    values, counts = np.unique(predicted, return_counts=True)
    return {"share": {"confirm": float(rates["confirm_share"]), "flag": float(rates["flag_load"]),
                      "review": float(rates["review_load"])},
            "error_rate": float(rates.get("error_rate", 0.0)),
            "mean_confidence": float(confidence.mean()), "confidence_sd": float(confidence.std()),
            "count_hist": {str(v): float(c / len(probs)) for v, c in zip(values, counts)},
            "classes": list(classes.names), "n": int(len(probs))}


# ---- per day, from the observations ----------------------------------------------------------

@dataclass
class Day:
    """One UTC day's photos: decisions, predicted counts, and the confidence sums."""
    day: str
    decisions: dict = field(default_factory=lambda: dict.fromkeys(DECISIONS, 0))
    hist: dict = field(default_factory=lambda: defaultdict(int))
    conf_n: int = 0           # photos with a stored probability for their predicted count
    conf_sum: float = 0.0

    @property
    def n(self) -> int:
        return sum(self.decisions.values())

    @property
    def mean_confidence(self) -> float | None:
        return self.conf_sum / self.conf_n if self.conf_n else None


def _utc_day(session: Session, column):
    # PostgreSQL's date() of a timestamptz is in the session's time zone, not UTC.
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    # SQLite keeps the UTC wall time the app wrote, as text: its first 10 characters are the
    # day, a third cheaper than date() on a big window.
    return func.substr(column, 1, 10)


def _confidence(class_names: list[str] | None):
    """The probability of the predicted class (the highest), read from the stored JSON."""
    if not class_names:
        return None
    from binventory.model.classes import CountClasses

    counts = CountClasses.from_names(class_names).counts.int().tolist()
    return case(*[(Observation.predicted_count == c, Observation.probabilities[name].as_float())
                  for name, c in zip(class_names, counts)], else_=None)


def days(session: Session, since: datetime, *, model_version: str | None = None,
         class_names: list[str] | None = None) -> list[Day]:
    """Photos taken since ``since`` per UTC day, oldest first: one grouped query, whatever the
    number of days or photos. Only photos judged since then are read (created_at is indexed, so
    the history before the window is never scanned); each row's JSON is read once, by ``avg``
    (the costly part on a big window)."""
    day = _utc_day(session, Observation.captured_at)
    conf = _confidence(class_names)
    columns = [day, Observation.decision, Observation.predicted_count, func.count()]
    if conf is not None:
        columns.append(func.avg(conf))
    query = select(*columns).where(Observation.created_at >= since, Observation.captured_at >= since)
    if model_version:
        query = query.where(Observation.model_version == model_version)
    found: dict[str, Day] = {}
    for row in session.execute(query.group_by(day, Observation.decision, Observation.predicted_count)):
        d = found.setdefault(str(row[0]), Day(str(row[0])))
        d.decisions[row[1]] = d.decisions.get(row[1], 0) + int(row[3])
        d.hist[str(row[2])] += int(row[3])
        if conf is not None and row[4] is not None:  # None: no stored probabilities
            d.conf_n += int(row[3])
            d.conf_sum += float(row[4]) * int(row[3])
    return [found[k] for k in sorted(found)]


# ---- comparing -------------------------------------------------------------------------------

@dataclass
class Shift:
    """A measure that moved past its bound on one day."""
    day: str
    measure: str
    value: float
    reference: float
    n: int
    detail: str = ""

    def describe(self) -> str:
        label = LABELS[self.measure]
        if self.measure == "count_hist":
            return f"{label} {self.value:.2f} ({self.detail})"
        if self.measure == "mean_confidence":
            return (f"{label} {self.value:.2f} against {self.reference:.2f} at calibration "
                    f"({self.value - self.reference:+.2f})")
        return (f"{label} {self.value:.1%} against {self.reference:.1%} at calibration "
                f"({100 * (self.value - self.reference):+.1f} points)")


@dataclass
class DayCheck:
    day: str
    n: int
    checked: bool                       # enough photos to compare
    values: dict                        # measure -> that day's value (None: not measured)
    shifts: list[Shift]


@dataclass
class Report:
    """What ``check`` found: ``note`` says why nothing was checked (no reference, or no day with
    enough photos), ``days`` are oldest first."""
    reference: dict | None
    bounds: Bounds
    days: list[DayCheck]
    note: str | None = None

    @property
    def shifts(self) -> list[Shift]:
        return [s for d in reversed(self.days) for s in d.shifts]

    @property
    def latest(self) -> DayCheck | None:
        """The newest day with enough photos to check."""
        return next((d for d in reversed(self.days) if d.checked), None)


def _z_share(x: int, n: int, p0: float, m: int) -> float:
    """Two-proportion z of x of n against a reference share p0 seen on m photos."""
    pooled = (x + p0 * m) / (n + m)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / m))
    return (x / n - p0) / se


def psi(day: dict, ref: dict, n: int, m: int) -> tuple[float, str]:
    """PSI of a day's count histogram (counts) against the reference's (shares of m photos),
    each smoothed by half a photo per class, and the class that moved most, in words."""
    keys = sorted(set(day) | set(ref), key=lambda k: int(k))
    half = 0.5 * len(keys)
    p = np.array([(day.get(k, 0) + 0.5) / (n + half) for k in keys])
    q = np.array([(ref.get(k, 0.0) * m + 0.5) / (m + half) for k in keys])
    i = int(np.argmax(np.abs(p - q)))
    moved = f"{keys[i]} items predicted for {p[i]:.0%} of photos, {q[i]:.0%} at calibration"
    return float(np.sum((p - q) * np.log(p / q))), moved


def compare(d: Day, ref: dict, bounds: Bounds = Bounds()) -> DayCheck:
    """One day against the reference; a day under ``bounds.min_n`` photos is measured, not checked."""
    n, m = d.n, max(int(ref.get("n") or 0), 1)
    values: dict = {f"share_{k}": (d.decisions.get(k, 0) / n if n else None) for k in DECISIONS}
    values["mean_confidence"] = d.mean_confidence
    values["count_hist"], moved = psi(d.hist, ref.get("count_hist") or {}, n, m) if n else (None, "")
    checked = n >= bounds.min_n
    shifts = []
    if checked:
        for k in DECISIONS:
            p0 = float((ref.get("share") or {}).get(k, 0.0))
            x = d.decisions.get(k, 0)
            if abs(x / n - p0) >= bounds.min_share_shift and abs(_z_share(x, n, p0, m)) >= bounds.z:
                shifts.append(Shift(d.day, f"share_{k}", x / n, p0, n))
        c0 = ref.get("mean_confidence")
        if d.conf_n >= bounds.min_n and c0 is not None:
            # Under "no change" the day's confidences spread as calibration's did.
            se = float(ref.get("confidence_sd") or 0) * math.sqrt(1 / d.conf_n + 1 / m)
            delta = d.mean_confidence - float(c0)
            if abs(delta) >= bounds.min_confidence_shift and abs(delta) >= bounds.z * max(se, 1e-12):
                shifts.append(Shift(d.day, "mean_confidence", d.mean_confidence, float(c0), d.conf_n))
        if ref.get("count_hist"):
            from scipy.stats import chi2

            k = len(set(d.hist) | set(ref["count_hist"]))
            noise = float(chi2.ppf(1 - bounds.alpha, max(k - 1, 1))) * (1 / n + 1 / m)
            if values["count_hist"] >= max(bounds.psi, noise):
                shifts.append(Shift(d.day, "count_hist", values["count_hist"], 0.0, n, moved))
    return DayCheck(d.day, n, checked, values, shifts)


def check(session: Session, policy, bounds: Bounds = Bounds(), now: datetime | None = None) -> Report:
    """The last ``bounds.days`` UTC days of photos judged by ``policy``'s model, each against the
    reference ``policy`` (a binventory.inventory.policy.Policy) was calibrated with."""
    ref = (policy.stats or {}).get("reference") if policy is not None else None
    if not isinstance(ref, dict) or not ref.get("n"):  # none, or not one calibrate wrote
        return Report(None, bounds, [], NO_REFERENCE)
    now = now or datetime.now(timezone.utc)
    since = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) - timedelta(days=bounds.days - 1)
    found = days(session, since, model_version=policy.model_version, class_names=ref.get("classes"))
    report = Report(ref, bounds, [compare(d, ref, bounds) for d in found])
    if report.latest is None:
        whose = f" judged by model {policy.model_version}" if policy.model_version else ""
        report.note = (f"No drift check yet: no day in the last {bounds.days} has {bounds.min_n} "
                       f"photos{whose} or more to compare with calibration")
    return report


# ---- Prometheus ------------------------------------------------------------------------------

class Watch:
    """The drift report of the policy in use (``policy_of()``, asked every time, so a policy
    swapped in is checked at once), computed at most once per ``ttl`` seconds: the overview and
    Prometheus ask often, the figures move by the day, and a big window costs a scan."""

    def __init__(self, db, policy_of, bounds: Bounds = Bounds(), ttl: float = 60.0):
        self.db, self.policy_of, self.bounds, self.ttl = db, policy_of, bounds, ttl
        self._cached: tuple[float, object, Report] | None = None

    def report(self) -> Report:
        policy, cached = self.policy_of(), self._cached
        if cached is None or cached[1] is not policy or time.monotonic() - cached[0] > self.ttl:
            with self.db.reader() as session:
                cached = self._cached = (time.monotonic(), policy, check(session, policy, self.bounds))
        return cached[2]


class DriftCollector:
    """``binventory_drift_*`` gauges on /metrics, for the newest day with enough photos."""

    def __init__(self, watch: Watch):
        self.watch = watch

    def collect(self):
        return iter(self._families(self.watch.report()))

    def _families(self, report: Report) -> list:
        from prometheus_client.core import GaugeMetricFamily

        has = GaugeMetricFamily("binventory_drift_reference",
                                "1 when the policy in use has a calibration reference to check drift against")
        has.add_metric([], 1.0 if report.reference else 0.0)
        out = [has]
        latest = report.latest
        if latest is None:
            return out
        warning = GaugeMetricFamily("binventory_drift_warning",
                                    "1 when the measure moved past its bound on the newest checked day",
                                    labels=["measure"])
        value = GaugeMetricFamily("binventory_drift_value",
                                  "The measure on the newest checked day (count_hist: PSI)", labels=["measure"])
        refv = GaugeMetricFamily("binventory_drift_reference_value",
                                 "The measure at calibration", labels=["measure"])
        moved = {s.measure for s in latest.shifts}
        ref = report.reference
        at_calibration = {**{f"share_{k}": (ref.get("share") or {}).get(k) for k in DECISIONS},
                          "mean_confidence": ref.get("mean_confidence"), "count_hist": 0.0}
        for m in MEASURES:
            warning.add_metric([m], 1.0 if m in moved else 0.0)
            if latest.values.get(m) is not None:
                value.add_metric([m], float(latest.values[m]))
            if at_calibration[m] is not None:
                refv.add_metric([m], float(at_calibration[m]))
        n = GaugeMetricFamily("binventory_drift_observations", "Photos on the newest checked day")
        n.add_metric([], float(latest.n))
        day = GaugeMetricFamily("binventory_drift_day_timestamp_seconds",
                                "Start (UTC) of the newest checked day")
        day.add_metric([], datetime.fromisoformat(latest.day).replace(tzinfo=timezone.utc).timestamp())
        return out + [warning, value, refv, n, day]


def register_metrics(registry, db, policy_of, bounds: Bounds = Bounds()) -> DriftCollector:
    """Add the drift gauges of the policy ``policy_of()`` gives to a Prometheus ``registry``;
    the collector's ``watch`` (cached) can serve the overview too."""
    collector = DriftCollector(Watch(db, policy_of, bounds))
    registry.register(collector)
    return collector

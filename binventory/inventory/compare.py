"""``binventory model compare``: score a candidate model against the active one on the
warehouse's own recounts, before it may be promoted.

The test set is every resolved audit whose photo is at hand, resolved after anything the
candidate trained on (after the newest ``labelled_until`` of its ``data``; every audit when it
names none). An audit gives the photo its observation judged, the count a person made
(``counted_quantity``, the label) and the bin's record as it was when the person counted: the
bin's contents now, less every ledger change made from that moment on. A record is right when
the person's count equals it.

Both models count every photo; per model:

    exact_accuracy        share of audits where the predicted count is the counted one
    rmse                  root mean squared error of the predicted count
    right_confirmed       share of right records the model's own policy confirms (its verifier
                          and thresholds, calibrated for a target false-confirm rate;
                          Policy.default() for a model without one)
    false_confirm_rate    share of wrong records it confirms

each with a 95% interval from a paired, stratified bootstrap over audits (the same resampled
audits score both models, so the interval on a difference is not widened by the audits' own spread).

Audits are not a random sample of the photos: flags and reviews recount only the bins the
serving (baseline) model's policy doubted, spot checks only bins it confirmed. Scored as one
pool, the baseline would confirm nothing on flag/review audits and everything on spot checks by
construction, and flagged bins are enriched in its miscounts. So each audit stands for its
*stratum*, the decision of the observation it audits ('confirm' for a spot check, 'flag',
'review'), with a Horvitz-Thompson weight N_s / n_s: N_s the photos judged with that decision
in the same window (observations created after ``since``), n_s the audits in that stratum.
Every figure is the weighted one, an estimate for the window's photos rather than for the
audits; the bootstrap resamples within each stratum. A stratum with photos but no audits cannot
be estimated: the figures cover the audited strata only (``coverage`` says which share of the
photos that is and which strata are missing). Without spot checks the two confirmation figures
would compare a baseline that confirms nothing by construction: they are then reported as not
measurable and the gate uses exact accuracy and RMSE only.

The rule ("better"): the candidate is *clearly better* on a figure when the whole interval of the
difference lies on the better side of 0, *clearly worse* when it lies on the worse side. It is
better when it is clearly better on exact accuracy or on right records confirmed, and clearly
worse on none of the measurable figures. A candidate that only ties is not better: promoting it
would be a coin flip.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory import registry
from binventory.inventory.audit_outcomes import Moment, item_records, records_at, skus_of, utc
from binventory.inventory.models import AuditTask, Model, Observation, utcnow
from binventory.inventory.photos import default_image_dir, photo_path
from binventory.inventory.policy import Policy
from binventory.inventory.verify import ItemRecord, class_counts

# figure -> does a higher value mean better?
FIGURES = {"exact_accuracy": True, "rmse": False, "right_confirmed": True, "false_confirm_rate": False}
LABELS = {"exact_accuracy": "exact accuracy", "rmse": "RMSE", "right_confirmed": "right records "
          "confirmed", "false_confirm_rate": "false-confirm rate"}
GAINS = ("exact_accuracy", "right_confirmed")  # one of these must clearly improve
RULE = ("better = the paired 95% bootstrap interval of the difference lies above 0 for exact "
        "accuracy or for right records confirmed, and no figure's interval lies wholly on its "
        "worse side")
BATCH = 64
CONFIRMATIONS = ("right_confirmed", "false_confirm_rate")
NO_SPOT_CHECKS = "not measurable without spot checks"


@dataclass
class Case:
    """One resolved audit: its photo, the record when it was counted, and the count."""
    task_id: int
    photo: Path
    expected: int
    records: list[ItemRecord]
    counted: int
    stratum: str = "review"  # the decision of the observation audited


def labelled_until(model: Model) -> datetime | None:
    """The newest label the model trained on (its data's ``labelled_until``), or None."""
    stamps = []
    for entry in model.data or []:
        value = entry.get("labelled_until") if isinstance(entry, dict) else None
        if value:
            stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            stamps.append(utc(stamp))
    return max(stamps, default=None)


def audit_cases(session: Session, since: datetime | None, image_dir: str | Path) -> tuple[list[Case], dict]:
    """The resolved audits after ``since`` whose photo is on disk, oldest first, and how many
    were left out and why."""
    query = (select(AuditTask, Observation.image_uri, Observation.decision).join(Observation, Observation.id == AuditTask.observation_id)
             .where(AuditTask.status == "resolved", AuditTask.counted_quantity.is_not(None))
             .order_by(AuditTask.resolved_at, AuditTask.id))
    if since is not None:
        query = query.where(AuditTask.resolved_at > since)
    rows = session.execute(query).all()
    cases, skipped, kept = [], {"photo on S3 (not read)": 0, "photo missing": 0}, []
    for task, uri, decision in rows:
        if uri.startswith("s3://"):
            skipped["photo on S3 (not read)"] += 1
            continue
        path = photo_path(uri, image_dir)
        if not path.is_file():
            skipped["photo missing"] += 1
            continue
        kept.append((task, path, decision))
    # The record the person counted against: the bin's just before the recount's own booking.
    moments = {task.id: Moment(task.bin_id, utc(task.resolved_at), task.id) for task, _, _ in kept}
    records = records_at(session, moments.values())
    skus = skus_of(session, records.values())
    for task, path, decision in kept:
        lines = item_records(records[moments[task.id]], skus)
        cases.append(Case(task.id, path, sum(r.quantity for r in lines), lines, task.counted_quantity,
                          decision))
    return cases, {k: v for k, v in skipped.items() if v}


def strata(session: Session, since: datetime | None, cases: list[Case]) -> dict:
    """Per decision: the photos judged with it after ``since`` (N), the audits of it (n) and
    each such audit's weight N / n; and the share of the photos whose stratum has audits."""
    query = select(Observation.decision, func.count()).group_by(Observation.decision)
    if since is not None:
        query = query.where(Observation.created_at > since)
    photos = dict(session.execute(query).all())
    audits: dict[str, int] = {}
    for case in cases:
        audits[case.stratum] = audits.get(case.stratum, 0) + 1
    out = {}
    for name in sorted(set(photos) | set(audits)):
        # An audited photo judged before the window still stands for itself at least.
        n, big_n = audits.get(name, 0), max(photos.get(name, 0), audits.get(name, 0))
        out[name] = {"photos": big_n, "audits": n, "weight": big_n / n if n else None}
    total = sum(s["photos"] for s in out.values())
    covered = sum(s["photos"] for s in out.values() if s["audits"])
    return {"strata": out, "coverage": {"share": covered / total if total else None,
                                        "missing": [k for k, v in out.items() if not v["audits"]]}}


def model_policy(model: Model) -> Policy:
    """The policy calibrated for ``model``, else the default one."""
    if model.policy:
        policy = Policy.from_dict(model.policy)
        if policy.mismatch(model.version) is None:
            return policy
    return Policy.default()


def load_predictor(model: Model):
    from binventory.serving.predictor import Predictor

    if not model.path:
        raise BinventoryError(f"model {model.version} has no artifact path in the registry: "
                              "register its model.pt with `binventory model register ARTIFACT`")
    predictor = Predictor.load(model.path, backend="torch")
    if predictor.model_id != model.version:
        raise BinventoryError(f"{model.path} now holds model {predictor.model_id}, not "
                              f"{model.version}: register the artifact again")
    return predictor


def predict(model: Model, cases: list[Case], photos: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Each case's predicted count, and whether the model's policy confirms its record."""
    predictor, policy = load_predictor(model), model_policy(model)
    counts, confirmed = [], []
    for start in range(0, len(cases), BATCH):
        chunk = cases[start:start + BATCH]
        probs = predictor.predict_arrays(np.stack([predictor.decode(b) for b in photos[start:start + BATCH]]))
        counts.append(class_counts(predictor.classes)[probs.argmax(axis=1)])
        decisions = policy.decide(probs, predictor.classes, [c.expected for c in chunk],
                                  [c.records for c in chunk])
        confirmed.append(np.array([d.action == "confirm" for d in decisions]))
    return np.concatenate(counts), np.concatenate(confirmed)


def figures(pred: np.ndarray, confirmed: np.ndarray, counted: np.ndarray, right: np.ndarray,
            weight: np.ndarray) -> dict:
    """The four weighted figures, for the audits in each row of ``pred`` (B x n arrays, paired)."""
    def share(hit, among):
        return (weight * (hit & among)).sum(axis=-1) / (weight * among).sum(axis=-1)

    everything = np.ones_like(right)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"exact_accuracy": share(pred == counted, everything),
                "rmse": np.sqrt((weight * (pred - counted) ** 2).sum(axis=-1) / weight.sum(axis=-1)),
                "right_confirmed": share(confirmed, right),
                "false_confirm_rate": share(confirmed, ~right)}


def _interval(point: float, samples: np.ndarray) -> dict:
    samples = samples[np.isfinite(samples)]
    if not np.isfinite(point) or not len(samples):
        return {"value": None, "low": None, "high": None}
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"value": float(point), "low": float(low), "high": float(high)}


def stratified_indices(stratum: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """resamples x n indices, each row drawing each stratum's audits with replacement from that
    stratum only (so every row keeps the strata's sizes and weights)."""
    rng = np.random.default_rng(seed)
    idx = np.empty((resamples, len(stratum)), dtype=np.int64)
    for name in np.unique(stratum):
        members = np.flatnonzero(stratum == name)
        idx[:, members] = members[rng.integers(0, len(members), (resamples, len(members)))]
    return idx


def bootstrap(cand: tuple, base: tuple, counted: np.ndarray, right: np.ndarray, *,
              weight: np.ndarray | None = None, stratum: np.ndarray | None = None,
              resamples: int = 2000, seed: int = 0, spot_checks: bool = True) -> dict:
    """Each weighted figure for both models and their difference, with paired 95% intervals
    from a stratified bootstrap; the confirmation figures as not measurable without spot checks."""
    weight = np.ones(len(counted)) if weight is None else weight
    stratum = np.zeros(len(counted)) if stratum is None else stratum
    idx = stratified_indices(stratum, resamples, seed)
    out = {}
    point_c, point_b = figures(*cand, counted, right, weight), figures(*base, counted, right, weight)
    boot_c = figures(cand[0][idx], cand[1][idx], counted[idx], right[idx], weight[idx])
    boot_b = figures(base[0][idx], base[1][idx], counted[idx], right[idx], weight[idx])
    for name in FIGURES:
        if name in CONFIRMATIONS and not spot_checks:
            none = _interval(float("nan"), np.array([]))
            out[name] = {"candidate": none, "baseline": dict(none), "difference": dict(none),
                         "note": NO_SPOT_CHECKS}
            continue
        out[name] = {"candidate": _interval(point_c[name], boot_c[name]),
                     "baseline": _interval(point_b[name], boot_b[name]),
                     "difference": _interval(point_c[name] - point_b[name], boot_c[name] - boot_b[name])}
    return out


def _side(name: str, diff: dict) -> int:
    """+1 clearly better, -1 clearly worse, 0 neither (or not measurable)."""
    if diff["low"] is None:
        return 0
    sign = 1 if FIGURES[name] else -1
    if diff["low"] > 0:
        return sign
    if diff["high"] < 0:
        return -sign
    return 0


def _shown(name: str, diff: dict) -> str:
    fmt = "{:+.3f}" if name == "rmse" else "{:+.1%}"
    return (f"{LABELS[name]} {fmt.format(diff['value'])} (95% interval {fmt.format(diff['low'])} "
            f"to {fmt.format(diff['high'])})")


def verdict(result: dict) -> tuple[str, list[str]]:
    """'better' or 'not better' by the module's rule, and why not."""
    diffs = {name: result[name]["difference"] for name in FIGURES}
    worse = [name for name in FIGURES if _side(name, diffs[name]) < 0]
    reasons = [f"{_shown(name, diffs[name])} is worse" for name in worse]
    if not worse and not any(_side(name, diffs[name]) > 0 for name in GAINS):
        shown = " and ".join(_shown(n, diffs[n]) if diffs[n]["value"] is not None
                             else f"{LABELS[n]} {result[n]['note']}" for n in GAINS
                             if diffs[n]["value"] is not None or result[n].get("note"))
        reasons.append(f"no clear gain: {shown or 'no figure measurable'}; an interval must lie "
                       "above 0")
    return ("not better" if reasons else "better"), reasons


def compare(db, candidate_id: str, against: str = "active", *, image_dir: str | Path | None = None,
            resamples: int = 2000, seed: int = 0) -> dict:
    """Compare ``candidate_id`` with ``against`` ('active' or a model id) on the audits after the
    candidate's data, store the result as the candidate's ``comparison`` and return it."""
    with db.reader() as session:
        candidate = registry.get(session, candidate_id)
        baseline = registry.active(session) if against == "active" else registry.get(session, against)
        if baseline is None:
            raise BinventoryError("there is no active model to compare with: pass --against ID "
                                  "(the first promotion needs no comparison)")
        if baseline.version == candidate.version:
            raise BinventoryError(f"model {candidate_id} cannot be compared with itself")
        since = labelled_until(candidate)
        cases, skipped = audit_cases(session, since, image_dir or default_image_dir())
        sampled = strata(session, since, cases)
    result = {"candidate": candidate.version, "against": baseline.version,
              "compared_at": utcnow().isoformat(), "since": since.isoformat() if since else None,
              "audits": len(cases), "skipped": skipped, **sampled, "rule": RULE, "resamples": resamples,
              "seed": seed}
    if cases:
        photos = [c.photo.read_bytes() for c in cases]
        counted = np.array([c.counted for c in cases], dtype=np.float64)
        right = np.array([c.counted == c.expected for c in cases])
        stratum = np.array([c.stratum for c in cases])
        weight = np.array([sampled["strata"][c.stratum]["weight"] for c in cases])
        result["figures"] = bootstrap(predict(candidate, cases, photos), predict(baseline, cases, photos),
                                      counted, right, weight=weight, stratum=stratum, resamples=resamples,
                                      seed=seed, spot_checks="confirm" in stratum)
        result["verdict"], result["reasons"] = verdict(result["figures"])
    else:
        when = f"after {since.isoformat()}" if since else "at all"
        result["verdict"] = "no audits"
        result["reasons"] = [f"no resolved audit with its photo at hand {when} (the candidate's "
                             "data ends there): nothing to compare on"]
    with db.session() as session:
        registry.record_comparison(session, candidate.version, result)
    return result

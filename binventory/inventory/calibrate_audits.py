"""Calibrating the decision policy on the warehouse's own audits: ``inventory calibrate
--from-audits``.

Every resolved audit task is one real outcome: the observation that opened it (the model's class
probabilities, the record it was judged against) and what a person then counted. The record was
right iff the count equals the quantity the observation was judged against. The verifier and its
thresholds are fitted on these the way ``calibrate`` fits them on injected errors (the same
cross-fitting grouped by bin, ``pick_t_confirm``'s Clopper-Pearson rule and ``pick_t_flag``),
so they learn the warehouse's real mix of right and wrong records and its real error sizes.

- The audits, their probabilities under the model being calibrated (stored, or counted again on
  the photo) and the SKU lines at the time come from ``binventory.inventory.audit_outcomes``.
- Selection bias: audits exist mostly for bins the old policy flagged or sent to review; a bin it
  confirmed is audited only by a spot check (a task with a reason other than flag or review).
  The hardest wrong records, those that look right, are exactly the ones the old policy confirmed
  and nobody recounted: a false-confirm rate measured without spot checks is optimistic. The
  report gives the audits per source, the new policy's false confirms per source, and the share
  of the model's observations each source stands for; the policy's stats keep them.
- Too few audits: with no false confirm among n wrong records, the one-sided Clopper-Pearson
  upper bound of the false-confirm rate is 1 - (1 - confidence)^(1/n); below the n at which that
  meets the target (299 wrong records for 1% at 95%) no threshold can be shown to meet it, so no
  policy is written.
"""
from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory.audit import TASK_REASONS
from binventory.inventory.audit_outcomes import (Audit, audit_probabilities, load_audits,
                                                 observation_mix, stored_classes,
                                                 stream_probabilities, utc)
from binventory.inventory.bounds import CONFIDENCE, false_confirm_summary, fcr_upper_bound
from binventory.inventory.calibrate import (FOLDS, MAX_FLAG_RIGHT, MIN_IMAGES, Candidate,
                                            cross_fit_scores, print_table, rates, thresholds)
from binventory.inventory.drift import reference as drift_reference
from binventory.inventory.forecast import ERROR_RATE
from binventory.inventory.models import Model
from binventory.inventory.policy import Policy
from binventory.inventory.verify import BlindVerifier, RecordVerifier, features, p_expected
from binventory.model.classes import CountClasses

POLICY_SOURCES = TASK_REASONS  # the decisions that open a task; any other reason: a spot check
MIN_RIGHT = MIN_IMAGES               # right records below this: nothing to say what is confirmed


def needed_wrong(target_fcr: float, confidence: float = CONFIDENCE) -> int:
    """The fewest wrong records that can show the false-confirm rate meets ``target_fcr``: with
    none of n confirmed, the Clopper-Pearson upper bound is 1 - (1 - confidence)^(1/n)."""
    if not 0 < target_fcr < 1 or not 0 < confidence < 1:
        raise BinventoryError("--target-fcr and --confidence must lie strictly between 0 and 1")
    n = max(math.ceil(math.log(1 - confidence) / math.log(1 - target_fcr)), 1)
    while fcr_upper_bound(0, n, confidence) > target_fcr:  # floating-point rounding at the edge
        n += 1
    return n


# ---- fitting ---------------------------------------------------------------------------------

@dataclass
class AuditSample:
    """The usable audits with their probabilities under the model being calibrated."""
    audits: list[Audit]
    probs: np.ndarray
    classes: CountClasses
    model_version: str
    how: Counter          # how the probabilities were had (stored, rerun, left out: why)
    stream: np.ndarray | None = None  # the model's latest stored probabilities, all decisions

    @property
    def right(self) -> np.ndarray:
        return np.array([a.right for a in self.audits], dtype=int)


def check_enough(sample: AuditSample, needed: int, target_fcr: float,
                 confidence: float = CONFIDENCE) -> None:
    """Refuse, naming the number, an audit set that cannot show the target is met."""
    right = int(sample.right.sum())
    wrong = len(sample.audits) - right
    if wrong < needed or right < MIN_RIGHT:
        left_out = sum(n for k, n in sample.how.items() if k.startswith("left out"))
        raise BinventoryError(
            f"too few audits to calibrate on: {len(sample.audits)} usable ({wrong} of wrong "
            f"records, {right} of right ones{f'; {left_out} left out' if left_out else ''}); a "
            f"policy needs at least {needed} audits of wrong records and {MIN_RIGHT} of right "
            f"ones (with no false confirm among n wrong records the {confidence:.0%} upper "
            f"bound of the false-confirm rate is 1 - {1 - confidence:.2g}^(1/n), which meets the "
            f"target of {target_fcr:.2%} only from n = {needed_wrong(target_fcr, confidence)}). "
            "Resolve more audits (spot checks of confirmed bins count) and run this again; no "
            "policy written")


def fit(sample: AuditSample, *, target_fcr: float, confidence: float = CONFIDENCE,
        error_rate: float = ERROR_RATE, verifier: str = "auto", seed: int = 0,
        model: str = "trees", max_flag_right: float = MAX_FLAG_RIGHT
        ) -> tuple[Policy, list[Candidate], dict[str, np.ndarray]]:
    """The policy fitted on the audits, every candidate measured, and each one's scores
    (out-of-fold, folds grouped by bin, for the record verifier)."""
    right = sample.right
    expected = [a.expected for a in sample.audits]
    candidates, scores = [], {}
    if verifier in ("auto", "blind"):
        scores["blind"] = p_expected(sample.probs, sample.classes, expected)
        tc, tf = thresholds(scores["blind"], right, target_fcr, max_flag_right, confidence)
        candidates.append(Candidate("blind", BlindVerifier(), tc, tf,
                                    rates(scores["blind"], right, tc, tf, confidence, error_rate)))
    if verifier in ("auto", "record"):
        x = features(sample.probs, sample.classes, expected, [a.lines for a in sample.audits])
        groups = np.array([a.bin_id for a in sample.audits])
        scores["record"] = cross_fit_scores(x, right, groups, model=model, error_rate=error_rate,
                                            seed=seed, folds=min(FOLDS, len(np.unique(groups))))
        tc, tf = thresholds(scores["record"], right, target_fcr, max_flag_right, confidence)
        fitted = RecordVerifier.fit(x, right, model=model, error_rate=error_rate, seed=seed)
        candidates.append(Candidate("record", fitted, tc, tf,
                                    rates(scores["record"], right, tc, tf, confidence, error_rate)))
    best = max(candidates, key=lambda c: c.rates["right_confirmed"])
    stats = {"calibrated": True, "source": "audits", "error_rate": error_rate, "seed": seed,
             "max_flag_right": max_flag_right, "threshold_rule": "upper bound",
             "false_confirm": false_confirm_summary(best.rates),
             "measured": {c.name: {"t_confirm": c.t_confirm, "t_flag": c.t_flag, **c.rates}
                          for c in candidates}}
    # Drift watch compares days of photos with this: the stream the model judged, where there is
    # one; the audited photos (doubtful ones mostly) only for a model that judged none yet.
    stream = sample.stream if sample.stream is not None and len(sample.stream) else sample.probs
    stats["reference"] = drift_reference(stream, sample.classes, best.rates)
    stats["reference_from"] = "observations" if stream is not sample.probs else "audits"
    policy = Policy(best.verifier, best.t_confirm, best.t_flag, target_fcr, sample.model_version,
                    stats)
    return policy, candidates, scores


def by_source(sample: AuditSample, scores: np.ndarray, t_confirm: float) -> dict:
    """Per source of audits: right and wrong records, and what the new thresholds confirm."""
    out: dict[str, dict] = {}
    for a, s in zip(sample.audits, scores):
        d = out.setdefault(a.source, {"right": 0, "wrong": 0, "right_confirmed": 0,
                                      "wrong_confirmed": 0})
        side = "right" if a.right else "wrong"
        d[side] += 1
        d[f"{side}_confirmed"] += int(s >= t_confirm)
    return dict(sorted(out.items()))


def estimated_error_rate(sources: dict, mix: dict) -> float | None:
    """The share of wrong records among all judged bins, each decision's audits standing for its
    observations (spot checks for the confirmed ones); None when a decision has none audited."""
    share = {d: n / sum(mix.values()) for d, n in mix.items() if n} if mix else {}
    total = 0.0
    for decision, p in share.items():
        audited = [v for k, v in sources.items()
                   if k == decision or (decision == "confirm" and k not in POLICY_SOURCES)]
        n = sum(v["right"] + v["wrong"] for v in audited)
        if not n:
            return None
        total += p * sum(v["wrong"] for v in audited) / n
    return total if share else None


# ---- command line ----------------------------------------------------------------------------

def define_options(p: argparse.ArgumentParser) -> None:
    """``calibrate``'s options for fitting on the inventory's resolved audits."""
    p.description += (
        " With --from-audits it fits on the inventory's resolved audits instead: the record a "
        "photo was judged against was right iff the recount agrees with it. It refuses to "
        "write a policy from too few: with no false confirm among n wrong records, the "
        "one-sided Clopper-Pearson upper bound of the false-confirm rate is "
        "1 - (1 - confidence)^(1/n), so the target needs n >= log(1 - confidence) / "
        "log(1 - target) audits of wrong records (299 for 1% at 95%), and "
        f"{MIN_RIGHT} of right ones. Audits exist mostly for bins the old policy flagged or "
        "queued; spot checks (tasks with any other reason) of confirmed bins are what "
        "measures the false confirms that matter: the report counts each source.")
    p.epilog += ("\n  binventory inventory calibrate --from-audits --db sqlite:///data/inventory.db "
                 "--model runs/m/model.pt --out runs/m/policy.json")
    g = p.add_argument_group("from audits")
    g.add_argument("--from-audits", action="store_true",
                   help="fit on the inventory's resolved audits (needs no --manifest)")
    g.add_argument("--db", default=None,
                   help="database URL (default: $BINVENTORY_DB_URL, else sqlite:///data/inventory.db)")
    g.add_argument("--min-audits", type=int, default=None, metavar="N",
                   help="audits of wrong records needed (default and least: what the target and "
                        "confidence need, 299 for 1%% at 95%%)")
    g.add_argument("--since", default=None, help="only audits resolved from then on (ISO date)")
    g.add_argument("--image-dir", type=Path, default=None,
                   help="the image store observations' photos are relative to (default: "
                        "$BINVENTORY_DATA_DIR/observations), for audits another model judged")
    g.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint (unset: AWS)")


def _model(session: Session, given: str | None, audits: list[Audit]) -> tuple[str, Path | None]:
    """The model to calibrate (its id) and its artifact where there is one: --model's file, or
    the path the inventory recorded for --model's id; without --model the registry's active
    model, else the newest audit's (stored probabilities only)."""
    from binventory.inventory.registry import active

    if given is not None and Path(given).is_file():
        return "", Path(given)
    row = session.get(Model, str(given)) if given is not None else active(session)
    if row is None and given is not None:
        raise BinventoryError(f"--model {given}: neither a model artifact nor a model id the "
                              "inventory knows")
    if row is None:
        return audits[-1].model_version, None
    return row.version, Path(row.path) if row.path and Path(row.path).is_file() else None


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        raise BinventoryError(f"--since wants an ISO date or time (2026-11-01), got {text!r}") from None


def load_sample(db, model: str | None = None, *, since: str | None = None, image_dir=None,
                endpoint_url: str | None = None, batch_size: int = 32) -> tuple[AuditSample, dict]:
    """The usable audits under the model being calibrated, and the observations' decisions
    over the audits' period."""
    from binventory.serving.predictor import Predictor

    with db.reader() as session:
        audits = load_audits(session, _since(since))
        if not audits:
            raise BinventoryError("no resolved audit task in the inventory: nothing to calibrate on")
        model_id, path = _model(session, model, audits)
        mix = observation_mix(session, audits[0].observed_at, audits[-1].resolved_at)
        predictor = Predictor.load(path) if path else None
        model_id = predictor.model_id if predictor else model_id
        classes = predictor.classes if predictor else stored_classes(audits, model_id)
        stream = stream_probabilities(session, model_id, classes)
    kept, probs, how = audit_probabilities(audits, model_id, classes, predictor=predictor,
                                           image_dir=image_dir, endpoint_url=endpoint_url,
                                           batch_size=batch_size)
    return AuditSample([audits[i] for i in kept], probs, classes, model_id, how, stream), mix


def selection_note(sources: dict) -> str:
    spot = {k: v for k, v in sources.items() if k not in POLICY_SOURCES}
    wrong = sum(v["wrong"] for v in spot.values())
    if not spot:
        return ("none of these audits is a spot check of a confirmed bin: the wrong records the "
                "old policy confirmed were never recounted, and they are the ones that look "
                "right, so the false-confirm rate is measured on the wrong records that were "
                "caught and is likely optimistic. Recount a random sample of confirmed bins "
                "('binventory inventory spot-check --n N') to measure it where it matters.")
    caught = sum(v["wrong_confirmed"] for v in spot.values())
    return (f"{sum(v['right'] + v['wrong'] for v in spot.values())} spot checks of confirmed "
            f"bins among the audits; of their {wrong} wrong records the new thresholds confirm "
            f"{caught}. Audits of flagged and reviewed bins still outnumber them: the rate "
            "leans on wrong records the old policy caught.")


def run(args: argparse.Namespace) -> int:
    """``binventory inventory calibrate --from-audits``."""
    from binventory.inventory.db import Database

    needed = needed_wrong(args.target_fcr, args.confidence)
    if args.min_audits is not None and args.min_audits < needed:
        raise BinventoryError(f"--min-audits {args.min_audits} is below the {needed} audits of "
                              f"wrong records that can show a false-confirm rate of "
                              f"{args.target_fcr:.2%} at {args.confidence:.0%} confidence")
    needed = max(needed, args.min_audits or 0)
    sample, mix = load_sample(Database.open(args.db), args.model, since=args.since,
                              image_dir=args.image_dir, endpoint_url=args.s3_endpoint_url,
                              batch_size=args.batch_size)
    check_enough(sample, needed, args.target_fcr, args.confidence)
    policy, candidates, scores = fit(sample, target_fcr=args.target_fcr,
                                     confidence=args.confidence, error_rate=args.error_rate,
                                     verifier=args.verifier, seed=args.seed)
    sources = by_source(sample, scores[policy.verifier.kind], policy.t_confirm)
    right = int(sample.right.sum())
    policy.stats.update(
        audits=len(sample.audits), right=right, wrong=len(sample.audits) - right,
        needed_wrong=needed, by_source=sources, probabilities=dict(sample.how),
        first_resolved=min(a.resolved_at for a in sample.audits).isoformat(),
        last_resolved=max(a.resolved_at for a in sample.audits).isoformat(),
        lines={"at_the_time": sum(a.lines_at_the_time for a in sample.audits),
               "current_contents": sum(not a.lines_at_the_time for a in sample.audits)},
        observations_by_decision=mix, estimated_error_rate=estimated_error_rate(sources, mix),
        selection=selection_note(sources))
    policy.save(args.out)
    report(policy, candidates, args.out)
    return 0


def report(policy: Policy, candidates: list[Candidate], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    st = policy.stats
    console = Console(width=max(Console().width, 200))
    console.print(f"audits used: {st['audits']:,} ({st['right']:,} right records, {st['wrong']:,} "
                  f"wrong), resolved {st['first_resolved'][:10]} to {st['last_resolved'][:10]}; "
                  "probabilities: " + ", ".join(f"{k} {n:,}" for k, n in st["probabilities"].items()),
                  soft_wrap=True)
    print_table(candidates, policy.verifier.kind, console,
                title="verification on resolved audits (record verifier: out-of-fold scores, "
                      "folds by bin)")
    table = Table(title="audits per source, and what the new thresholds confirm")
    for col in ("source", "right", "wrong", "right confirmed", "false confirms",
                "photos so judged in the period"):
        table.add_column(col, justify="right", no_wrap=True)
    mix = st["observations_by_decision"]
    for name, d in st["by_source"].items():
        decision = name if name in POLICY_SOURCES else "confirm"  # a spot check: a confirmed bin
        table.add_row(name, f"{d['right']:,}", f"{d['wrong']:,}",
                      f"{d['right_confirmed'] / d['right']:.1%}" if d["right"] else "-",
                      f"{d['wrong_confirmed']}/{d['wrong']}", f"{mix.get(decision, 0):,} {decision}")
    console.print(table)
    fc, m = st["false_confirm"], st["measured"][policy.verifier.kind]
    console.print(f"false confirms on audits: {fc['estimate']:.2%} ({fc['wrong_confirmed']} of "
                  f"{fc['wrong_records']} wrong records); {fc['confidence']:.0%} upper bound "
                  f"{fc['upper_bound']:.2%} (target {policy.target_fcr:.2%}); right records "
                  f"confirmed: {m['right_confirmed']:.1%}", soft_wrap=True)
    if st["lines"]["current_contents"]:
        console.print(f"{st['lines']['current_contents']:,} audits used the bin's current SKU "
                      "lines: the ledger did not add up to the record they were judged against",
                      soft_wrap=True)
    console.print(f"selection: {st['selection']}", soft_wrap=True)
    console.print(f"policy ({policy.verifier.kind} verifier, t_confirm={policy.t_confirm:.4f}, "
                  f"t_flag={policy.t_flag:.4f}, model {policy.model_version}) -> {out}",
                  soft_wrap=True)

"""Calibrating the decision policy on validation data: ``binventory inventory calibrate``.

1. Count every image of a manifest split with the model (calibrated probabilities).
2. Each image's metadata gives the right record; copies with one injected error (one SKU line's
   quantity moved by +-1..+-3, never below 0; a phantom line in an empty bin) give wrong ones,
   ``n_wrong`` variants per image so that a 1% false-confirm rate can be estimated.
3. The record verifier is fitted with K-fold cross-fitting grouped by image: every validation
   score used to pick thresholds comes from a model that never saw that image. The shipped
   verifier is then refitted on all of them.
4. Thresholds, per verifier, from those scores:
   - t_confirm: the lowest threshold at which a one-sided 95% Clopper-Pearson upper bound of
     the share of WRONG records confirmed (the false-confirm rate) is <= the target. The point
     estimate alone lands above the target on unseen photos about half the time; the bound
     holds on them unless the validation split is unlike them;
   - t_flag: the highest threshold at which <= ``max_flag_right`` (5%) of RIGHT records are
     flagged, so a flag is a strong signal and audit tasks are mostly real discrepancies; bins in
     between go to review.
5. ``--verifier auto`` keeps the verifier that confirms more right records at the target.
"""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from binventory import BinventoryError
from binventory.inventory.bounds import (CONFIDENCE, allowed_false_confirms,
                                         describe_false_confirms, false_confirm_summary,
                                         fcr_upper_bound)
from binventory.inventory.drift import reference as drift_reference
from binventory.inventory.forecast import ERROR_RATE, describe_forecast, shares_at
from binventory.inventory.inject import N_FAR, far_variants, variants
from binventory.inventory.policy import Policy
from binventory.inventory.verify import (BlindVerifier, ItemRecord, RecordVerifier,
                                         features, p_expected)
from binventory.model.classes import CountClasses

log = logging.getLogger(__name__)

VERIFIERS = ("auto", "blind", "record")
N_WRONG = 8          # wrong variants per validation image
FOLDS = 5
MAX_FLAG_RIGHT = 0.05
MIN_IMAGES = 30      # fewer validation images than this: no record verifier (blind only)


# ---- data ------------------------------------------------------------------------------------

def item_records(record) -> list[ItemRecord]:
    """A ``binventory.data.abid.BinRecord``'s SKU lines as ItemRecords."""
    return [ItemRecord(int(s.quantity), s.length, s.width, s.height, s.weight) for s in record.skus]


@dataclass
class Sample:
    """Images of one split with their predictions and right records."""
    ids: list[str]
    probs: np.ndarray                 # N x K calibrated probabilities
    expected: np.ndarray              # N, the right expected quantity (EXPECTED_QUANTITY)
    records: list[list[ItemRecord]]   # N, the right SKU lines
    classes: CountClasses
    model_version: str | None = None


def load_images(manifest: str | Path, split: str):
    """(root, rows) of a manifest's valid images in ``split``, which must have some."""
    from binventory.data.manifest import split_rows

    root, rows = split_rows(manifest, split)
    if rows.empty:
        raise BinventoryError(f"{manifest} has no valid images in split {split!r}")
    return root, rows


def predict_paths(predictor, paths: Sequence[Path], batch_size: int = 64,
                  progress: bool = True) -> np.ndarray:
    """Calibrated probabilities for image files, in batches (decoding on a few threads)."""
    from tqdm import tqdm

    out = []
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=None if progress else True)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        out.append(predictor.predict_arrays(predictor.preprocess.load_many(chunk)))
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, predictor.classes.num_classes))


def load_sample(model: str | Path, manifest: str | Path, split: str, batch_size: int = 64,
                progress: bool = True) -> Sample:
    from binventory.data.abid import read_metadata
    from binventory.serving.predictor import Predictor

    root, rows = load_images(manifest, split)
    predictor = Predictor.load(model)
    metas = [read_metadata(root / p, i) for i, p in zip(rows.image_id, rows.metadata_path)]
    probs = predict_paths(predictor, [root / p for p in rows.image_path], batch_size, progress)
    return Sample(ids=list(rows.image_id), probs=probs,
                  expected=np.array([m.expected_quantity for m in metas]),
                  records=[item_records(m) for m in metas], classes=predictor.classes,
                  model_version=predictor.model_id)


# ---- injected errors: binventory.inventory.inject ----------------------------------------------

# ---- thresholds and rates --------------------------------------------------------------------

def pick_t_confirm(scores: np.ndarray, right: np.ndarray, target_fcr: float,
                   confidence: float | None = CONFIDENCE) -> float:
    """The lowest threshold t whose false-confirm rate (wrong records with score >= t) meets
    the target: its Clopper-Pearson upper bound at ``confidence``, or the point estimate when
    ``confidence`` is None. Above 1 (confirm nothing) when too few wrong records can bound it.
    """
    wrong = np.sort(np.asarray(scores)[np.asarray(right) == 0])[::-1]
    allowed = allowed_false_confirms(len(wrong), target_fcr, confidence)
    if allowed < 0:
        log.warning("%d wrong records cannot bound the false-confirm rate at %.2g with %.0f%% "
                    "confidence: confirming nothing", len(wrong), target_fcr, 100 * confidence)
        return float(np.nextafter(1.0, np.inf))
    if allowed >= len(wrong):
        return 0.0
    # Confirm strictly above the (allowed+1)-th highest wrong score.
    return float(np.nextafter(wrong[allowed], np.inf))


def pick_t_flag(scores: np.ndarray, right: np.ndarray, max_flag_right: float = MAX_FLAG_RIGHT
                ) -> float:
    """The highest threshold t with share(right records with score <= t) <= max_flag_right."""
    good = np.sort(np.asarray(scores)[np.asarray(right) == 1])
    if len(good) == 0:
        return 0.0
    allowed = int(math.floor(max_flag_right * len(good) + 1e-9))
    if allowed >= len(good):
        return float(good[-1])
    return max(float(np.nextafter(good[allowed], -np.inf)), 0.0)


def rates(scores: np.ndarray, right: np.ndarray, t_confirm: float, t_flag: float,
          confidence: float = CONFIDENCE, error_rate: float = ERROR_RATE) -> dict:
    """What the thresholds do to right and to wrong records, and the shares of all bins they
    confirm, flag and queue where ``error_rate`` of the records are wrong.

    The validation mix (one right record to ``n_wrong`` wrong ones) is there to measure the
    false-confirm rate, not to forecast a floor: its own review share overstates the wrong
    records' weight eightfold, so every share of all bins is weighted to ``error_rate``."""
    scores, right = np.asarray(scores), np.asarray(right).astype(bool)
    confirm, flag = scores >= t_confirm, scores <= t_flag
    n_right, n_wrong = max(right.sum(), 1), max((~right).sum(), 1)
    false_confirms = int((confirm & ~right).sum())
    out = {
        "right": int(right.sum()), "wrong": int((~right).sum()),
        "right_confirmed": float((confirm & right).sum() / n_right),
        "false_confirm_rate": float(false_confirms / n_wrong),
        "wrong_confirmed": false_confirms,
        "false_confirm_upper": fcr_upper_bound(false_confirms, int((~right).sum()), confidence),
        "confidence": confidence,
        "wrong_flagged_or_queued": float((~confirm & ~right).sum() / n_wrong),
        "wrong_flagged": float((flag & ~right).sum() / n_wrong),
        "right_flagged": float((flag & right).sum() / n_right),
    }
    return {**out, **shares_at(out, error_rate)}


def thresholds(scores: np.ndarray, right: np.ndarray, target_fcr: float,
               max_flag_right: float = MAX_FLAG_RIGHT, confidence: float | None = CONFIDENCE
               ) -> tuple[float, float]:
    t_confirm = pick_t_confirm(scores, right, target_fcr, confidence)
    t_flag = pick_t_flag(scores, right, max_flag_right)
    if t_flag >= t_confirm:  # a weak verifier: keep the confirm rule, flag only below it
        t_flag = max(float(np.nextafter(t_confirm, -np.inf)), 0.0) if t_confirm > 0 else 0.0
        t_flag = min(t_flag, max(t_confirm - 1e-9, 0.0))
    return t_confirm, t_flag


# ---- fitting ---------------------------------------------------------------------------------

def cross_fit_scores(x: np.ndarray, right: np.ndarray, groups: np.ndarray, *, model: str = "trees",
                     folds: int = FOLDS, error_rate: float = 0.2, seed: int = 0,
                     feature_names: Sequence[str] | None = None,
                     far: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Out-of-fold record-verifier scores, folds grouped by image. ``far``: (features, image)
    of more wrong records, fitted on in the folds that leave their image out, never scored."""
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    fold_of = dict(zip(rng.permutation(unique), np.arange(len(unique)) % folds))
    fold = np.array([fold_of[g] for g in groups])
    out = np.zeros(len(x))
    for f in range(folds):
        test = fold == f
        if not test.any():
            continue
        fit_x, fit_right = x[~test], right[~test]
        if far is not None:
            keep = ~np.isin(far[1], groups[test])
            fit_x = np.vstack([fit_x, far[0][keep]])
            fit_right = np.concatenate([fit_right, np.zeros(int(keep.sum()), dtype=fit_right.dtype)])
        v = RecordVerifier.fit(fit_x, fit_right, model=model, error_rate=error_rate,
                               seed=seed, feature_names=feature_names)
        out[test] = 1.0 / (1.0 + np.exp(-np.clip(v.logit(x[test]), -40, 40)))
    return out


@dataclass
class Candidate:
    name: str
    verifier: BlindVerifier | RecordVerifier
    t_confirm: float
    t_flag: float
    rates: dict


def calibrate(sample: Sample, *, target_fcr: float = 0.01, error_rate: float = ERROR_RATE,
              verifier: str = "auto", seed: int = 0, n_wrong: int = N_WRONG, model: str = "trees",
              max_flag_right: float = MAX_FLAG_RIGHT, confidence: float | None = CONFIDENCE
              ) -> tuple[Policy, list[Candidate]]:
    """Fit and choose a policy on one sample; returns it and every candidate measured.

    ``confidence`` is that of the false-confirm rate's upper bound kept under the target (None:
    the point estimate, which the bound then reports at ``CONFIDENCE``).
    """
    if verifier not in VERIFIERS:
        raise BinventoryError(f"--verifier must be one of {VERIFIERS}, got {verifier!r}")
    if not 0 < target_fcr < 1 or not 0 < error_rate < 1:
        raise BinventoryError("--target-fcr and --error-rate must lie strictly between 0 and 1")
    if confidence is not None and not 0 < confidence < 1:
        raise BinventoryError(f"--confidence must lie strictly between 0 and 1, got {confidence}")
    bound_at = confidence or CONFIDENCE
    rng = np.random.default_rng(seed)
    index, expected, records, right = variants(sample.expected, sample.records, n_wrong, rng)
    probs = sample.probs[index]
    candidates: list[Candidate] = []

    if verifier in ("auto", "blind"):
        scores = p_expected(probs, sample.classes, expected)
        tc, tf = thresholds(scores, right, target_fcr, max_flag_right, confidence)
        candidates.append(Candidate("blind", BlindVerifier(), tc, tf,
                                    rates(scores, right, tc, tf, bound_at, error_rate)))

    if verifier in ("auto", "record"):
        n_images = len(sample.expected)
        if n_images < MIN_IMAGES:
            message = (f"only {n_images} validation images (need {MIN_IMAGES}): no record "
                       "verifier, using the blind one")
            if verifier == "record":
                raise BinventoryError(message)
            log.warning(message)
        else:
            x = features(probs, sample.classes, expected, records)
            far_index, far_e, far_records = far_variants(sample.expected, sample.records, N_FAR, rng)
            far_x = features(sample.probs[far_index], sample.classes, far_e, far_records)
            scores = cross_fit_scores(x, right, index, model=model, error_rate=error_rate,
                                      seed=seed, folds=min(FOLDS, n_images),
                                      far=(far_x, far_index))
            tc, tf = thresholds(scores, right, target_fcr, max_flag_right, confidence)
            fitted = RecordVerifier.fit(np.vstack([x, far_x]),
                                        np.concatenate([right, np.zeros(len(far_x), dtype=int)]),
                                        model=model, error_rate=error_rate, seed=seed)
            candidates.append(Candidate("record", fitted, tc, tf,
                                        rates(scores, right, tc, tf, bound_at, error_rate)))

    if not candidates:
        candidates.append(Candidate("blind", BlindVerifier(), 1.0, 0.0, {}))
    best = max(candidates, key=lambda c: c.rates.get("right_confirmed", 0.0))
    stats = {"calibrated": True, "images": len(sample.expected), "wrong_variants_per_image": n_wrong,
             "error_rate": error_rate, "seed": seed, "max_flag_right": max_flag_right,
             "threshold_rule": "point estimate" if confidence is None else "upper bound",
             "false_confirm": false_confirm_summary(best.rates),
             "measured": {c.name: {"t_confirm": c.t_confirm, "t_flag": c.t_flag, **c.rates}
                          for c in candidates}}
    stats["reference"] = drift_reference(sample.probs, sample.classes, best.rates)  # for drift watch
    policy = Policy(best.verifier, best.t_confirm, best.t_flag, target_fcr, sample.model_version,
                    stats)
    return policy, candidates


def print_table(candidates: Sequence[Candidate], chosen: str, console=None,
                title: str = "verification on validation (record verifier: out-of-fold scores)"
                ) -> None:
    from rich.console import Console
    from rich.table import Table

    # A piped log gets the whole table too: rich would cut it to 80 columns there.
    console = console or Console(width=max(Console().width, 200))
    e = next((c.rates["error_rate"] for c in candidates if c.rates), ERROR_RATE)
    table = Table(title=f"{title}; shares of all bins at {e:.0%} wrong records")
    for col in ("verifier", "t_confirm", "t_flag", "right confirmed", "false confirms",
                "false-confirm bound", "wrong flagged/queued", "right flagged",
                "bins confirmed", "bins flagged", "bins to review"):
        table.add_column(col, justify="right", no_wrap=True)
    for c in candidates:
        r = c.rates
        if not r:
            continue
        table.add_row(c.name + (" *" if c.name == chosen else ""), f"{c.t_confirm:.4f}",
                      f"{c.t_flag:.4f}", f"{r['right_confirmed']:.1%}",
                      f"{r['false_confirm_rate']:.2%} ({r['wrong_confirmed']}/{r['wrong']})",
                      f"{r['false_confirm_upper']:.2%}", f"{r['wrong_flagged_or_queued']:.1%}",
                      f"{r['right_flagged']:.1%}", f"{r['confirm_share']:.1%}",
                      f"{r['flag_load']:.1%}", f"{r['review_load']:.1%}")
    console.print(table)


# ---- command line ----------------------------------------------------------------------------

def define_parser(p: argparse.ArgumentParser) -> None:
    """The options of ``binventory inventory calibrate``, defined on the sub-command's parser only
    when it is the command given (importing this module loads numpy and scikit-learn)."""
    p.description = ("Count a manifest split's images, inject record errors into copies of their "
                     "metadata (one SKU's quantity +-1..+-3, several wrong copies per image), fit "
                     "the record verifier (cross-fitted by image) and pick t_confirm = the lowest "
                     "threshold at which an upper confidence bound (Clopper-Pearson) of the "
                     "false-confirm rate (wrong records confirmed / wrong records) is <= the "
                     f"target, and t_flag = the highest at which <= {MAX_FLAG_RIGHT:.0%} "
                     "of right records are flagged. Writes the policy as JSON.")
    p.epilog = ("example:\n  binventory inventory calibrate --model runs/m/model.pt "
                "--manifest data/abid/manifest.parquet --out runs/m/policy.json")
    p.add_argument("--model", default=None,
                   help="counting model artifact (model.pt); with --from-audits also a model id "
                        "the inventory knows, or none: the registry's active model, else the "
                        "newest audit's")
    p.add_argument("--manifest", type=Path, default=None,
                   help="manifest with a split column (not with --from-audits)")
    p.add_argument("--split", default="val", help="split to calibrate on (never the test split)")
    p.add_argument("--target-fcr", type=float, default=0.01,
                   help="highest share of wrong records that may be confirmed")
    p.add_argument("--confidence", type=float, default=CONFIDENCE,
                   help="confidence of the false-confirm rate's upper bound kept under the target")
    p.add_argument("--error-rate", type=float, default=ERROR_RATE,
                   help="share of records assumed wrong: sets the verifier's prior and the mix "
                        "at which the shares of bins confirmed, flagged and reviewed and the "
                        "workload forecast are reported")
    p.add_argument("--verifier", choices=VERIFIERS, default="auto",
                   help="auto = whichever confirms more right records at the target")
    p.add_argument("--wrong-variants", type=int, default=N_WRONG,
                   help="wrong copies of each image's record")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--seed", type=int, default=0, help="random seed (error injection, folds)")
    p.add_argument("--out", type=Path, required=True, help="policy JSON to write")
    from binventory.inventory.calibrate_audits import define_options
    define_options(p)
    p.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    if args.from_audits:
        from binventory.inventory.calibrate_audits import run
        return run(args)
    if args.model is None or args.manifest is None:
        raise BinventoryError("calibrate needs --model and --manifest (or --from-audits --db URL)")
    if args.wrong_variants < 1:
        raise BinventoryError("--wrong-variants must be at least 1")
    if args.split == "test":
        log.warning("calibrating on the test split: its figures are then no longer a test")
    sample = load_sample(args.model, args.manifest, args.split, args.batch_size)
    policy, candidates = calibrate(sample, target_fcr=args.target_fcr, error_rate=args.error_rate,
                                   verifier=args.verifier, seed=args.seed,
                                   n_wrong=args.wrong_variants, confidence=args.confidence)
    policy.stats.update(split=args.split, manifest=str(args.manifest))
    policy.save(args.out)
    print_table(candidates, policy.verifier.kind)
    print(f"policy ({policy.verifier.kind} verifier, t_confirm={policy.t_confirm:.4f}, "
          f"t_flag={policy.t_flag:.4f}) -> {args.out}")
    print(describe_false_confirms(policy))
    chosen = policy.stats["measured"].get(policy.verifier.kind, {})
    if "recounts_per_1000" in chosen:
        print(describe_forecast(chosen))
    return 0

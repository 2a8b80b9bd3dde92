"""Verification end to end: how much of an inventory the photos can confirm, through the real
pipeline (import-abid -> reconcile -> the database).

On the public test images of ../shared/abid-sample, builds an inventory in which 20% of the bins'
records carry an injected error (one SKU line moved by +-1..+-3, never below 0; ``import-abid
--inject-errors``), reconciles every photo with a policy calibrated on the model's validation
split (never on public test), reads the decisions back from the database and reports:

- correct confirmed: share of right records auto-confirmed (target >= 50%)
- false confirms:    share of wrong records confirmed (target <= 1%), per seed and pooled; the
                     policy's t_confirm keeps a 95% upper bound of the validation rate under the
                     target (``--rule point`` adds the point-estimate rule for comparison)
- wrong caught:      share of wrong records flagged or queued (target >= 95%)
- review / flag load: share of all bins sent to review / flagged

for the blind counter's P(count = e) and for the record verifier, over several seeds.

    python bench/verification.py --sample ../shared/abid-sample \\
        --model runs/bench/accuracy/ours/model.pt --manifest runs/bench/accuracy/manifest-all.parquet
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from sqlalchemy import select

from binventory.data.abid import read_id_list
from binventory.inventory.calibrate import (CONFIDENCE, calibrate, describe_false_confirms,
                                            load_sample, rates)
from binventory.inventory.inject import variants
from binventory.inventory.db import Database
from binventory.inventory.importer import import_abid
from binventory.inventory.models import Observation
from binventory.inventory.reconcile import reconcile
from binventory.serving.predictor import Predictor


def test_folder(sample: Path, out: Path, limit: int | None = None) -> Path:
    """An ABID-layout folder of the public test bins (the first ``limit``): symlinks, never copies."""
    for sub in ("bin-images", "metadata"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for image_id in read_id_list(sample / "splits" / "public_test.txt")[:limit]:
        for sub, suffix in (("bin-images", ".jpg"), ("metadata", ".json")):
            link = out / sub / f"{image_id}{suffix}"
            if not link.exists():
                link.symlink_to((sample / sub / f"{image_id}{suffix}").resolve())
    return out


def run_once(predictor: Predictor, policy, folder: Path, db_path: Path, seed: int,
             error_rate: float) -> dict:
    db = Database.open(f"sqlite:///{db_path}", create=True)
    injected = import_abid(db, folder, inject_errors=error_rate, seed=seed, progress=False).injected
    start = time.perf_counter()
    report = reconcile(db, predictor, policy, folder, progress=False)
    seconds = time.perf_counter() - start
    with db.reader() as s:
        decisions = {o.bin.code: o.decision for o in s.scalars(select(Observation))}
    db.close()
    wrong = np.array([code in injected for code in decisions])
    action = np.array(list(decisions.values()))
    return {"bins": len(decisions), "wrong": int(wrong.sum()),
            "right_confirmed": float((action[~wrong] == "confirm").mean()),
            "false_confirms": float((action[wrong] == "confirm").mean()),
            "wrong_caught": float((action[wrong] != "confirm").mean()),
            "review_load": float((action == "review").mean()),
            "flag_load": float((action == "flag").mean()),
            "images_per_s": report.observed / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=Path("../shared/abid-sample"))
    parser.add_argument("--model", type=Path, default=Path("runs/bench/accuracy/ours/model.pt"))
    parser.add_argument("--manifest", type=Path, default=Path("runs/bench/accuracy/manifest-all.parquet"),
                        help="the model's training manifest: its val split calibrates the policies")
    parser.add_argument("--error-rate", type=float, default=0.2, help="share of wrong records")
    parser.add_argument("--target-fcr", type=float, default=0.01, help="false-confirm target")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="inventories to draw and reconcile (none: --dense only)")
    parser.add_argument("--dense", action="store_true",
                        help="also score every test image with its right record and 8 wrong ones "
                             "(about 8,000 wrong records: a steadier false-confirm rate)")
    parser.add_argument("--rules", nargs="+", choices=RULES, default=["bound"],
                        help="t_confirm rules: bound (95%% upper bound <= target, shipped), point "
                             "(validation rate <= target)")
    parser.add_argument("--verifiers", nargs="+", choices=("blind", "record"),
                        default=["blind", "record"])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    if not (args.sample / "splits" / "public_test.txt").is_file():
        raise SystemExit(f"no ABID sample at {args.sample} (see its README)")

    work = args.work or Path(tempfile.mkdtemp(prefix="binventory-verification-"))
    folder = test_folder(args.sample, work / "public-test")
    val = load_sample(args.model, args.manifest, "val")
    predictor = Predictor.load(args.model)
    test = load_sample(args.model, args.manifest, "test") if args.dense else None
    rows = []
    for rule in args.rules:
        for verifier in args.verifiers:
            policy, _ = calibrate(val, target_fcr=args.target_fcr, error_rate=args.error_rate,
                                  verifier=verifier, confidence=RULES[rule])
            print(f"{verifier}, {rule} rule: t_confirm={policy.t_confirm:.4f}; "
                  f"{describe_false_confirms(policy)}", flush=True)
            if test is not None:
                print(f"  dense public test: {dense(policy, test)}", flush=True)
            runs = []
            for seed in args.seeds:
                db_path = work / f"{verifier}-{rule}-{seed}.db"
                for leftover in work.glob(f"{db_path.name}*"):
                    leftover.unlink()
                runs.append(run_once(predictor, policy, folder, db_path, seed, args.error_rate))
                print(f"{verifier} {rule} seed {seed}: {runs[-1]}", flush=True)
            rows.append((verifier, rule, policy, runs))
    if args.seeds:
        print_table(rows, args, len(val.ids))


def dense(policy, test, n_wrong: int = 8, seed: int = 0) -> str:
    """The policy's rates on every test image with its right record and n_wrong wrong ones."""
    index, expected, records, right = variants(test.expected, test.records, n_wrong,
                                               np.random.default_rng(seed))
    scores = policy.scores(test.probs[index], test.classes, expected, records)
    r = rates(scores, right, policy.t_confirm, policy.t_flag)
    return (f"right confirmed {r['right_confirmed']:.1%}, false confirms "
            f"{r['false_confirm_rate']:.2%} ({r['wrong_confirmed']}/{r['wrong']}, 95% bound "
            f"{r['false_confirm_upper']:.2%}), wrong flagged or queued "
            f"{r['wrong_flagged_or_queued']:.1%}")


RULES = {"bound": CONFIDENCE, "point": None}


def print_table(rows, args, val_images: int) -> None:
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {date.today()}; "
          f"{rows[0][3][0]['bins']:.0f} public-test bins, {args.error_rate:.0%} wrong records, "
          f"mean of seeds {args.seeds}; policies calibrated on {val_images} val images; "
          f"false-confirm target {args.target_fcr:.1%}")
    print("| verifier | t_confirm rule | t_confirm | val: false confirms (of wrong) | val: 95% bound | "
          "test: correct confirmed | test: false confirms per seed | test: pooled | "
          "wrong flagged or queued | review load | flag load | reconcile img/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for verifier, rule, policy, runs in rows:
        m = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        fc = policy.stats["false_confirm"]
        per_seed = ", ".join(f"{r['false_confirms']:.2%}" for r in runs)
        pooled = (sum(r["false_confirms"] * r["wrong"] for r in runs)
                  / max(sum(r["wrong"] for r in runs), 1))
        wrong = sum(r["wrong"] for r in runs)
        held = all(r["false_confirms"] <= args.target_fcr for r in runs)
        print(f"| {verifier} | {rule} | {policy.t_confirm:.3f} | {fc['estimate']:.2%} "
              f"({fc['wrong_confirmed']}/{fc['wrong_records']}) | {fc['upper_bound']:.2%} | "
              f"{m['right_confirmed']:.1%} | {per_seed}{'' if held else ' (over)'} | "
              f"{pooled:.2%} of {wrong} | {m['wrong_caught']:.1%} | {m['review_load']:.1%} | "
              f"{m['flag_load']:.1%} | {m['images_per_s']:.0f} |")


if __name__ == "__main__":
    main()

"""Research behind the record verifier: blind P(count = e) against verifiers that read the record.

Fits on the validation split of the model's own training manifest (dev images the model never
trained on), with injected record errors; picks thresholds there (out-of-fold scores); then
evaluates once on the public test images, where 20% of the records carry an injected error
(+-1..+-3 on one SKU line, never below 0). Public test is never used to fit or tune.

    python bench/verification_research.py --sample ../shared/abid-sample \
        --model runs/bench/accuracy/ours/model.pt

Predictions are cached under runs/bench/verification/ (keyed by the model's version and the ids).
Prints one Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import time
from pathlib import Path

import numpy as np

from binventory.inventory import calibrate as cal
from binventory.inventory.verify import FEATURES, PROB_FEATURES, RecordVerifier, features, p_expected

FEATURE_SETS = {
    # the photo's likelihood ratio "right" vs "off by 1-3" alone: a better blind score than P(e)
    "log_lr": ["log_lr"],
    # the photo only (plus e itself): what a recalibrated blind counter can do
    "probs": PROB_FEATURES,
    # + the record's structure: number of SKU lines and quantities per line
    "probs+lines": PROB_FEATURES + ["n_lines", "max_line_qty", "share_qty_one"],
    # + item dimensions and weights
    "all": FEATURES,
}


def cached_sample(model: Path, manifest: Path, split: str, cache: Path):
    from binventory.model.artifact import load_artifact

    root, rows = cal.load_images(manifest, split)
    counting = load_artifact(model)
    key = hashlib.sha256(("\n".join(rows.image_id) + counting.model_id + str(model.stat().st_mtime))
                         .encode()).hexdigest()[:12]
    path = cache / f"preds-{split}-{key}.npz"
    if path.is_file():
        from binventory.data.abid import read_metadata
        z = np.load(path)
        metas = [read_metadata(root / p, i) for i, p in zip(rows.image_id, rows.metadata_path)]
        return cal.Sample(list(rows.image_id), z["probs"],
                          np.array([m.expected_quantity for m in metas]),
                          [cal.item_records(m) for m in metas], counting.classes, counting.model_id)
    sample = cal.load_sample(model, manifest, split)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, probs=sample.probs)
    return sample


def test_sets(sample, seeds: int, n_wrong: int):
    """(a) the benchmark's inventory: 20% of bins wrong, one draw per seed; (b) every test image
    with its right record and n_wrong wrong ones (a steadier estimate of the same rates)."""
    draws = []
    for s in range(seeds):
        e, r, right = cal.with_errors(sample.expected, sample.records, 0.2, np.random.default_rng(1000 + s))
        draws.append((np.arange(len(e)), e, r, right))
    index, e, r, right = cal.variants(sample.expected, sample.records, n_wrong, np.random.default_rng(7))
    return draws, (index, e, r, right)


def evaluate(score_fn, sample, t_confirm, t_flag, draws, dense) -> dict:
    per_draw = []
    for index, e, r, right in draws:
        per_draw.append(cal.rates(score_fn(sample.probs[index], e, r), right, t_confirm, t_flag))
    mean = {k: float(np.mean([d[k] for d in per_draw])) for k in per_draw[0]}
    index, e, r, right = dense
    mean["dense"] = cal.rates(score_fn(sample.probs[index], e, r), right, t_confirm, t_flag)
    mean["first_draw"] = per_draw[0]
    return mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, default=Path("../shared/abid-sample"))
    ap.add_argument("--model", type=Path, default=Path("runs/bench/accuracy/ours/model.pt"))
    ap.add_argument("--manifest", type=Path, default=Path("runs/bench/accuracy/manifest-all.parquet"),
                    help="the model's training manifest (its val split is held out from training)")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench/verification"))
    ap.add_argument("--target-fcr", type=float, default=0.01)
    ap.add_argument("--n-wrong", type=int, default=cal.N_WRONG)
    ap.add_argument("--seeds", type=int, default=20, help="20%%-error draws on public test to average")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from binventory.data.manifest import manifest_hash, read_manifest
    from binventory.model.artifact import load_artifact

    df, _ = read_manifest(args.manifest)
    trained_on = load_artifact(args.model).manifest_hash
    if trained_on and trained_on != manifest_hash(df):
        raise SystemExit(f"{args.model} was not trained on {args.manifest}: its val split may not be held out")
    test_ids = set((args.sample / "splits" / "public_test.txt").read_text().split())
    start = time.perf_counter()
    val = cached_sample(args.model, args.manifest, "val", args.cache)
    test = cached_sample(args.model, args.manifest, "test", args.cache)
    assert not set(val.ids) & test_ids and set(test.ids) <= test_ids, "val/test overlap"
    print(f"val {len(val.ids)} images, public test {len(test.ids)} images "
          f"({time.perf_counter() - start:.0f} s to predict or load)")

    rng = np.random.default_rng(args.seed)
    index, e_val, r_val, right_val = cal.variants(val.expected, val.records, args.n_wrong, rng)
    probs_val = val.probs[index]
    draws, dense = test_sets(test, args.seeds, args.n_wrong)
    classes = val.classes
    results = []

    # Blind: P(count = e), thresholds on validation.
    s = p_expected(probs_val, classes, e_val)
    tc, tf = cal.thresholds(s, right_val, args.target_fcr)
    blind_fn = lambda p, e, r: p_expected(p, classes, e)  # noqa: E731
    results.append(("blind P(count=e)", cal.rates(s, right_val, tc, tf),
                    evaluate(blind_fn, test, tc, tf, draws, dense), tc, tf))
    curves = {"blind P(count=e)": (s, blind_fn)}

    x_val = features(probs_val, classes, e_val, r_val)
    for model in ("logistic", "trees"):
        for name, names in FEATURE_SETS.items():
            t0 = time.perf_counter()
            oof = cal.cross_fit_scores(x_val, right_val, index, model=model, seed=args.seed,
                                       feature_names=names)
            tc, tf = cal.thresholds(oof, right_val, args.target_fcr)
            v = RecordVerifier.fit(x_val, right_val, model=model, feature_names=names, seed=args.seed)
            fn = (lambda v: lambda p, e, r: v.score(p, classes, e, r))(v)
            results.append((f"record {model} [{name}]", cal.rates(oof, right_val, tc, tf),
                            evaluate(fn, test, tc, tf, draws, dense), tc, tf))
            curves[f"record {model} [{name}]"] = (oof, fn)
            print(f"  {model} {name}: {time.perf_counter() - t0:.1f} s", flush=True)

    print(f"\n{platform.node() or 'machine'}: target false-confirm rate {args.target_fcr:.0%}; "
          f"val = {len(val.ids)} held-out dev images x (1 right + {args.n_wrong} wrong records); "
          f"public test = {len(test.ids)} images, 20% wrong, mean of {args.seeds} draws "
          f"(dense = every test image with 1 right + {args.n_wrong} wrong records)\n")
    print("| verifier | t_confirm | val: right confirmed | val: FCR | test: right confirmed | "
          "test: FCR | test: wrong flagged or queued | test: review load | test: flag load | "
          "dense: right confirmed | dense: FCR | dense: wrong flagged or queued |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rv, rt, tc, tf in results:
        d = rt["dense"]
        print(f"| {name} | {tc:.3f} | {rv['right_confirmed']:.1%} | {rv['false_confirm_rate']:.2%} | "
              f"{rt['right_confirmed']:.1%} | {rt['false_confirm_rate']:.2%} | "
              f"{rt['wrong_flagged_or_queued']:.1%} | {rt['review_load']:.1%} | {rt['flag_load']:.1%} | "
              f"{d['right_confirmed']:.1%} | {d['false_confirm_rate']:.2%} | "
              f"{d['wrong_flagged_or_queued']:.1%} |")

    # The trade-off at other targets, and where the confirmations come from (dense public test).
    index, e, r, right = dense
    true = test.expected[index]
    bucket = np.minimum(true, 6)
    targets = (0.01, 0.02, 0.05, 0.10)
    print("\n| verifier (dense public test) | " + " | ".join(f"right confirmed at {t:.0%} (FCR)" for t in targets)
          + " | " + " | ".join(f"count {b if b < 6 else '6+'}" for b in range(7)) + " |")
    print("|---|" + "---|" * (len(targets) + 7))
    for name in ("blind P(count=e)", "record logistic [log_lr]", "record trees [probs]", "record trees [all]"):
        oof, fn = curves[name]
        st = fn(test.probs[index], e, r)
        cells = []
        for t in targets:
            tc, tf = cal.thresholds(oof, right_val, t)
            rr = cal.rates(st, right, tc, tf)
            cells.append(f"{rr['right_confirmed']:.1%} ({rr['false_confirm_rate']:.1%})")
        tc, _ = cal.thresholds(oof, right_val, args.target_fcr)
        by = [f"{((st >= tc) & (right == 1) & (bucket == b)).sum() / max(((right == 1) & (bucket == b)).sum(), 1):.0%}"
              for b in range(7)]
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(by) + " |")
    print("(count columns: share of right records confirmed at the target, by true count; "
          f"right records per count: {np.bincount(bucket[right == 1], minlength=7).tolist()})")


if __name__ == "__main__":
    main()

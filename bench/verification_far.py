"""Records far off: does the record verifier flag a bin whose photo shows 2 where 12 are expected?

Calibrates a policy on the model's val split twice, without and with the far-off wrong records
``calibrate`` fits on (another image's record, >= 4 items off: ``cal.N_FAR`` per image),
and scores the public test images (never calibrated on) with every image's right record,
8 wrong copies off by +-1..+-3 (the stated error model, the one thresholds are picked on) and
2 far-off ones. Prints, per policy: right records confirmed, near and far false confirms, and
the share of far-off records flagged and their median score beside the near ones'.

    python bench/verification_far.py --model runs/bench/quick/model/model.pt \\
        --manifest runs/bench/quick/manifest-all.parquet
"""
from __future__ import annotations

import argparse
from datetime import date

import numpy as np

from binventory.inventory import calibrate as cal
from binventory.inventory import inject


def measure(policy, test: cal.Sample, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    index, expected, records, right = inject.variants(test.expected, test.records, cal.N_WRONG, rng)
    far_index, far_e, far_records = inject.far_variants(test.expected, test.records, 2, rng)
    near = policy.scores(test.probs[index], test.classes, expected, records)
    far = policy.scores(test.probs[far_index], test.classes, far_e, far_records)
    wrong = near[right == 0]
    return {"right confirmed": np.mean(near[right == 1] >= policy.t_confirm),
            "near false confirms": np.mean(wrong >= policy.t_confirm),
            "far false confirms": np.mean(far >= policy.t_confirm),
            "near flagged": np.mean(wrong <= policy.t_flag),
            "far flagged": np.mean(far <= policy.t_flag),
            "near median score": np.median(wrong), "far median score": np.median(far)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    val = cal.load_sample(args.model, args.manifest, "val", progress=False)
    test = cal.load_sample(args.model, args.manifest, "test", progress=False)
    n_far = cal.N_FAR
    rows = []
    for label, far in (("record verifier fitted on +-1..+-3 only", 0),
                       (f"+ {n_far} far-off records per image (shipped)", n_far)):
        cal.N_FAR = far
        got = [measure(cal.calibrate(val, verifier="record", seed=s)[0], test, 100 + s)
               for s in range(args.seeds)]
        rows.append((label, {k: np.mean([g[k] for g in got]) for k in got[0]}))
    cal.N_FAR = n_far
    print(f"{date.today()}; val {len(val.ids)} images, public test {len(test.ids)}; "
          f"mean of {args.seeds} seeds\n")
    keys = list(rows[0][1])
    print("| verifier | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for label, r in rows:
        print(f"| {label} | " + " | ".join(f"{r[k]:.3f}" if "score" in k else f"{r[k]:.1%}"
                                           for k in keys) + " |")


if __name__ == "__main__":
    main()

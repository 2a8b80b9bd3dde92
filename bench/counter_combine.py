"""Test-time augmentation and ensembles of the proxy models bench/counter_ablation.py trained.

No training: each named run's model.pt counts the dev-only validation images and the public test
images as they are and flipped (horizontally, vertically, both: the flips training augments
with), and the figures come from

- a model alone, then with TTA (the mean of its logits over the four views);
- the ensemble of the named models (the mean of their logits), then with TTA.

Every combination gets the tempered correction the way ``--prior-correction tempered`` ships it:
the fraction of the logit adjustment that validation prefers, and a temperature fitted on
validation. Selection is on validation, 0-5 protocol; public test is printed for information.

    python bench/counter_combine.py --runs extra-k15,lite1,lite2 --ensembles extra-k15+lite1,extra-k15+lite1+lite2
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from counter_ablation import (VARIANTS, add_data_arguments, manifests, row, score_tempered,
                              uncorrected)  # bench/ is on sys.path when run as a script

from binventory.data.manifest import split_rows
from binventory.serving.predictor import Predictor

VIEWS = {"as is": lambda x: x, "hflip": lambda x: x[:, :, ::-1], "vflip": lambda x: x[:, ::-1],
         "hvflip": lambda x: x[:, ::-1, ::-1]}


def raw_logits(predictor: Predictor, images: np.ndarray, shift: torch.Tensor, temperature: float,
               batch_size: int = 128) -> torch.Tensor:
    """The uncorrected model's logits for each view (views x N x classes)."""
    out = []
    for view in VIEWS.values():
        probs = np.concatenate([predictor.predict_arrays(np.ascontiguousarray(view(images[i:i + batch_size])))
                                for i in range(0, len(images), batch_size)])
        out.append(uncorrected(probs, temperature, shift))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--runs", default="extra-k15,lite0,lite1",
                        help="comma-separated finished runs of bench/counter_ablation.py with one "
                             "head and one image size (the ensemble averages their logits)")
    parser.add_argument("--ensembles", default="",
                        help="which ensembles, as groups of runs joined by '+', comma-separated "
                             "(default: all the runs together)")
    args = parser.parse_args()
    names = args.runs.split(",")
    groups = [g.split("+") for g in args.ensembles.split(",") if g]
    if not groups and len(names) > 1:
        groups = [names]
    manifest = manifests(args.sample, args.extra, args.out)[VARIANTS[names[0]][0]]
    predictors = {n: Predictor.load(args.out / n / "model.pt") for n in names}
    first = next(iter(predictors.values()))
    images, counts = {}, {}
    for split in ("val", "test"):
        root, rows = split_rows(manifest, split)
        images[split] = first.preprocess.load_many([root / p for p in rows.image_path])
        counts[split] = torch.tensor(rows.label.to_numpy(dtype=np.int64))
    logits, shift = {}, None
    for name, predictor in predictors.items():
        metrics = json.loads((args.out / name / "metrics.json").read_text())
        shift = torch.tensor(metrics["prior_shift"])  # the same data and head: the same shift
        logits[name] = {split: raw_logits(predictor, images[split], shift, metrics["temperature"])
                        for split in images}
        print(f"{name}: counted", flush=True)
    classes = first.classes
    results = {}
    print("\n| combination | val acc. 0-5 | val RMSE 0-5 | test acc. 0-5 | test RMSE 0-5 | fraction |")
    print("| --- | --- | --- | --- | --- | --- |")
    combos = {n: [n] for n in names} | {f"ensemble of {' + '.join(g)}": g for g in groups}
    for label, members in combos.items():
        for tta in (False, True):
            pick = (lambda v: v.mean(0)) if tta else (lambda v: v[0])
            val = torch.stack([pick(logits[m]["val"]) for m in members]).mean(0)
            test = torch.stack([pick(logits[m]["test"]) for m in members]).mean(0)
            r = score_tempered(val, test, shift, counts, classes)
            key = f"{label}{', TTA (4 flips)' if tta else ''}"
            results[key] = r
            print(row(key, r["val"], r["test"], f"{r['fraction']:g}"), flush=True)
    (args.out / f"combine-{'+'.join(names)}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

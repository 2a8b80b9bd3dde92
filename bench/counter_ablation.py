"""Counter v2 levers, each against the same short proxy recipe on real ABID images.

Every variant trains on dev.txt (validation carved out of it, 10%, always dev-only) and, where
named, on ../shared/abid-extra as well (count folders, all of it in train). Selection is on
validation, 0-5 protocol (the heads differ in classes, so "all counts" does not compare); the
public-test figures are printed for information only, never for choosing.

    python bench/counter_ablation.py --epochs 6 --image-size 128 --variants dev,extra
    python bench/counter_ablation.py --variants extra-k15,lite1 --out runs/bench/ablation

A finished variant is not trained again (its results.json is read back): rerun to add variants.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from accuracy import V1, dev_extra_manifest, make_manifest  # bench/ is on sys.path when run as a script

from binventory.data.split import PROTOCOLS
from binventory.model.classes import CountClasses
from binventory.model.metrics import evaluate_logits
from binventory.training.config import TrainConfig
from binventory.training.train import train

K15 = {"prior_correction": "logit_adjust", "max_count": 15}
# name: (train on abid-extra too, overrides of the accuracy benchmark's recipe)
VARIANTS = {
    "dev": (False, {}),
    "extra": (True, {"prior_correction": "logit_adjust"}),  # also reports the uncorrected model
    "extra-weights": (True, {"prior_correction": "class_weights"}),
    "extra-k15": (True, K15),
    # The backbones and the regularisation lever change one thing each against extra-k15, the
    # kept proxy (its tempered row is the one to beat, so run them with --tempered).
    "lite0": (True, {**K15, "backbone": "efficientnet_lite0"}),
    "lite1": (True, {**K15, "backbone": "efficientnet_lite1"}),
    "lite2": (True, {**K15, "backbone": "efficientnet_lite2"}),
    "reg": (True, {**K15, "dropout": 0.5, "weight_decay": 0.1, "label_smoothing": 0.2,
                   "color": 0.4}),
    # the extra-k15 recipe, from a model pretrained on synthetic bins (synth_pretrained) rather
    # than from ImageNet weights alone
    "synth": (True, {**K15, "weights": "none", "init_from": "synthetic"}),
    # the extra-k15 recipe (MobileNetV2) learning, beside the labels, the distribution of the
    # best ensemble of bench/counter_combine.py (its TEACHERS, run first): one network to serve
    "distill": (True, {**K15, "distill_from": "ensemble"}),
}
TEACHERS = ("extra-k15", "lite1", "lite2")
SYNTH_IMAGES, SYNTH_EPOCHS = 4000, 3


def manifests(sample: Path, extra: Path, out: Path) -> dict[bool, Path]:
    dev = make_manifest(sample, out, "all", seed=0)
    return {False: dev, True: dev_extra_manifest(dev, extra, out)}


def test_without_correction(run: Path, metrics: dict, cfg: TrainConfig) -> dict | None:
    """The public-test 0-5 figures of the same model before the post-hoc correction (argmax
    figures do not depend on the temperature, so the corrected model's is kept)."""
    if not metrics.get("prior_shift"):
        return None
    z = np.load(run / "test_predictions.npz")
    logits = torch.from_numpy(z["logits"]) - torch.tensor(metrics["prior_shift"])
    classes = CountClasses(cfg.min_count, cfg.max_count, cfg.overflow)
    return evaluate_logits(logits, torch.from_numpy(z["counts"]), classes, metrics["temperature"],
                           PROTOCOLS["challenge"])


def uncorrected(probs: np.ndarray, temperature: float, shift: torch.Tensor) -> torch.Tensor:
    """An artifact's calibrated probabilities back to its uncorrected logits: log-probabilities x
    T are the shipped logits up to a per-image constant, which no argmax or softmax sees; minus
    the folded-in shift they are the uncorrected model's."""
    return torch.from_numpy(np.log(np.clip(probs, 1e-12, None))).float() * temperature - shift


def score_tempered(val: torch.Tensor, test: torch.Tensor, shift: torch.Tensor, counts: dict,
                   classes) -> dict:
    """Uncorrected val and test logits as ``--prior-correction tempered`` ships them: the fraction
    of the shift validation prefers (priors.best_fraction) and a temperature fitted on val, then
    both splits' 0-5 figures."""
    from binventory.model.metrics import fit_temperature
    from binventory.training import priors

    fraction = priors.best_fraction(val, classes.to_class(counts["val"]), shift)
    val, test = val + fraction * shift, test + fraction * shift
    t = fit_temperature(val, classes.to_class(counts["val"]))
    return {"fraction": fraction,
            "val": evaluate_logits(val, counts["val"], classes, t, PROTOCOLS["challenge"]),
            "test": evaluate_logits(test, counts["test"], classes, t, PROTOCOLS["challenge"])}


def tempered(name: str, args, paths: dict[bool, Path]) -> dict | None:
    """The variant's model as ``--prior-correction tempered`` would have shipped it, from its
    saved artifact (no training)."""
    from binventory.data.manifest import split_rows
    from binventory.inventory.calibrate import predict_paths
    from binventory.serving.predictor import Predictor

    run = args.out / name
    metrics = json.loads((run / "metrics.json").read_text())
    if not metrics.get("prior_shift"):
        return None
    shift = torch.tensor(metrics["prior_shift"])
    predictor = Predictor.load(run / "model.pt")
    root, rows = split_rows(paths[VARIANTS[name][0]], "val")
    probs = predict_paths(predictor, [root / p for p in rows.image_path], progress=False)
    z = np.load(run / "test_predictions.npz")
    counts = {"val": torch.tensor(rows.label.to_numpy(dtype=np.int64)),
              "test": torch.from_numpy(z["counts"])}
    return score_tempered(uncorrected(probs, metrics["temperature"], shift),
                          torch.from_numpy(z["logits"]) - shift, shift, counts, predictor.classes)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", type=Path, default=Path("../shared/abid-sample"))
    parser.add_argument("--extra", type=Path, default=Path("../shared/abid-extra"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ablation"))


def synth_pretrained(args) -> Path:
    """ImageNet MobileNetV2 trained on SYNTH_IMAGES synthetic bins of 0-15 items (binventory data
    synth: counts are free there, also far above 5) for SYNTH_EPOCHS epochs, the 0-15 head."""
    from binventory.data.manifest import build_manifest, write_manifest
    from binventory.data.split import assign_splits
    from binventory.data.synth import generate

    root, run = args.out / "synth-data", args.out / "synth-pretrain"
    if not (root / "manifest.parquet").is_file():
        generate(root, SYNTH_IMAGES, seed=0, max_count=15, progress=False)
        df = assign_splits(build_manifest(root, progress=False), protocol="all", seed=0,
                           ratios=(0.9, 0.1, 0.0))
        write_manifest(df, root / "manifest.parquet", root)
    if not (run / "model.pt").is_file():
        train(TrainConfig(**{**V1, "epochs": SYNTH_EPOCHS, "image_size": args.image_size,
                             "max_count": 15}, manifest=str(root / "manifest.parquet"),
                          output=str(run), cache_dir=str(args.out / "cache"), progress=False,
                          workers=1))
    return run / "model.pt"


def run_variant(name: str, args, paths: dict[bool, Path]) -> dict:
    run = args.out / name
    if (run / "results.json").is_file():
        return json.loads((run / "results.json").read_text())
    use_extra, overrides = VARIANTS[name]
    values = {**V1, "epochs": args.epochs, "image_size": args.image_size, **overrides}
    if values.get("init_from") == "synthetic":
        values["init_from"] = str(synth_pretrained(args))
    if values.get("distill_from") == "ensemble":
        for teacher in TEACHERS:  # trained first where missing
            run_variant(teacher, args, paths)
        values["distill_from"] = ",".join(str(args.out / t / "model.pt") for t in TEACHERS)
    cfg = TrainConfig(**values, manifest=str(paths[use_extra]), output=str(run),
                      cache_dir=str(args.out / "cache"), progress=False, workers=1)
    start = time.perf_counter()
    # given = every option of the recipe: a run from a pretrained model keeps the full schedule
    # rather than --init-from's short fine-tune
    metrics = train(cfg, given=set(values))["metrics"]
    result = {"config": cfg.to_dict(), "minutes": (time.perf_counter() - start) / 60,
              "val": metrics["val_protocols"]["challenge"], "test": metrics["test"]["challenge"],
              "test_udacity": metrics["test"]["udacity"], "test_6_15": metrics["test"].get("6-15"),
              "val_without_correction": (metrics.get("val_without_correction") or {}).get("challenge"),
              "test_without_correction": test_without_correction(run, metrics, cfg)}
    (run / "results.json").write_text(json.dumps(result, indent=2))
    print(f"{name}: done in {result['minutes']:.1f} min", flush=True)
    return result


def row(name: str, val: dict, test: dict, minutes: float | str) -> str:
    return (f"| {name} | {val['accuracy']:.1%} | {val['rmse']:.3f} | {test['accuracy']:.1%} | "
            f"{test['rmse']:.3f} | {minutes if isinstance(minutes, str) else f'{minutes:.0f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--variants", default="dev,extra,extra-weights",
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--tempered", action="store_true",
                        help="also score each logit-adjusted variant with the fraction of its "
                             "adjustment validation prefers (--prior-correction tempered)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    paths = manifests(args.sample, args.extra, args.out)
    print(f"{args.epochs} epochs at {args.image_size} px, otherwise the accuracy benchmark's recipe; "
          "val = dev-only validation, 0-5 protocol\n")
    print("| variant | val acc. 0-5 | val RMSE 0-5 | test acc. 0-5 | test RMSE 0-5 | minutes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.variants.split(","):
        r = run_variant(name, args, paths)
        if r["val_without_correction"] and r["test_without_correction"]:
            print(row(f"{name}, no correction", r["val_without_correction"],
                      r["test_without_correction"], "same run"), flush=True)
        print(row(name, r["val"], r["test"], r["minutes"]), flush=True)
        t = tempered(name, args, paths) if args.tempered else None
        if t is not None:
            print(row(f"{name}, tempered ({t['fraction']:g} of the shift)", t["val"], t["test"],
                      "same run"), flush=True)


if __name__ == "__main__":
    main()

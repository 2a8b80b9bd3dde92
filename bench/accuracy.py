"""Accuracy benchmark on the real ABID sample: our recipe against the reference recipe.

Trains on the ids of splits/dev.txt (validation carved out of them, always dev-only) plus every
image of ../shared/abid-extra when it is there (count folders, all in train; --extra '' leaves it
out), reports on splits/public_test.txt, for the 0-5 (challenge) and 1-5 (udacity) protocols, and trains and tests
the reference SageMaker recipe (frozen backbone + small head, random crops, 3 epochs) in the same
run. Prints a Markdown table for BENCHMARKS.md and writes OUT/results.json.

    python bench/accuracy.py --sample ../shared/abid-sample --out runs/bench/accuracy
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest

from binventory.data.manifest import build_manifest, split_rows, write_manifest
from binventory.data.merge import merge_manifests
from binventory.data.split import PROTOCOLS, assign_splits
from binventory.inventory.calibrate import predict_paths
from binventory.model.metrics import protocol_view
from binventory.serving.predictor import Predictor
from binventory.training.config import TrainConfig
from binventory.training.train import train

# The v1 recipe (issue: counting model): classes 0-5 plus "6 or more". The proxy ablations of
# bench/counter_ablation.py and bench/learning_loop.py start from it.
V1 = dict(backbone="mobilenet_v2", weights="imagenet", image_size=160, epochs=14, batch_size=32,
          lr=1e-3, head_lr_mult=10.0, weight_decay=0.05, warmup_epochs=1.0, label_smoothing=0.1,
          loss="ordinal", loss_weight=1.0, ema_decay=0.998, dropout=0.3, hflip=0.5, vflip=0.5,
          color=0.2, affine=1.0, min_count=0, max_count=5, overflow=True)
# The recommended recipe, as issue 12's ablation chose it on validation (BENCHMARKS.md, "Counter
# v2 levers"): dev + abid-extra, classes 0-15 plus "16 or more", half the logit adjustment
# (--prior-correction tempered picks the fraction), 10 epochs (more data per epoch).
OURS = {**V1, "epochs": 10, "max_count": 15, "prior_correction": "tempered"}
# A warm restart from that model (train --init-from), measured and not kept: the 10-epoch run's
# best epoch was its last, but 4 more epochs gained 0.8 points on validation (within noise) and
# none on test (BENCHMARKS.md, "Counter v2 levers"). --continue-epochs 4 reruns it.
CONTINUE = dict(epochs=4, lr=3e-4, warmup_epochs=0.2, ema_decay=0.998,
                prior_correction="tempered")
# Candidates for the next recipe, each OURS with the changes the proxies of
# bench/counter_ablation.py favoured, trained at full length beside it with --candidate NAME and
# kept only if validation says so (BENCHMARKS.md, "Counter v2 levers"). --distill-from adds
# teachers to a candidate (train --distill-from).
CANDIDATES = {"reg": dict(dropout=0.5, weight_decay=0.1, label_smoothing=0.2, color=0.4),
              "plain": {}}
# The SageMaker reference: frozen ImageNet backbone (ResNet-50 there; its weights need a download,
# so the offline default is MobileNetV2), a 5-way head on 1-5 items, random crops, 3 epochs.
REFERENCE = dict(backbone="mobilenet_v2", weights="imagenet", image_size=224, epochs=3,
                 batch_size=32, lr=1e-3, head_lr_mult=1.0, weight_decay=0.0, warmup_epochs=0.0,
                 label_smoothing=0.0, loss="ce", ema_decay=0.0, dropout=0.0, freeze=-1,
                 random_crop=True, hflip=0.5, vflip=0.0, color=0.0, affine=0.0, min_count=1,
                 max_count=5, overflow=False, eval_protocols="udacity")


def make_manifest(sample: Path, out: Path, protocol: str, seed: int) -> Path:
    path = out / f"manifest-{protocol}.parquet"
    df = build_manifest(sample, progress=False)
    df = assign_splits(df, protocol=protocol, seed=seed, val_fraction=0.1,
                       lists={"train": sample / "splits" / "dev.txt",
                              "test": sample / "splits" / "public_test.txt"})
    write_manifest(df, path, sample)
    return path


def dev_extra_manifest(dev: Path, extra: Path, out: Path) -> Path:
    """dev's manifest with every abid-extra image added to train (its validation stays dev-only)."""
    merged = out / "manifest-dev+extra.parquet"
    if not merged.is_file():
        df = assign_splits(build_manifest(extra, progress=False), protocol="all", seed=0,
                           ratios=(1.0, 0.0, 0.0))
        write_manifest(df, out / "manifest-extra.parquet", extra)
        df, root = merge_manifests([dev, out / "manifest-extra.parquet"])
        write_manifest(df, merged, root)
    return merged


def run(name: str, cfg: TrainConfig, reuse: dict | None = None, given: set | None = None) -> dict:
    """Train (or with ``reuse``, an earlier results.json's entry, take its finished run)."""
    if reuse and name in reuse and (Path(cfg.output) / "model.pt").is_file():
        print(f"{name}: reusing {cfg.output}", flush=True)
        return reuse[name]
    start = time.perf_counter()
    result = train(cfg, given=given)
    minutes = (time.perf_counter() - start) / 60
    print(f"{name}: {minutes:.1f} min", flush=True)
    return {"config": cfg.to_dict(), "metrics": result["metrics"], "minutes": minutes}


@functools.cache  # ours is paired with every run: count its images once
def right_0_5(model: Path, manifest: Path, split: str) -> np.ndarray:
    """Per image of ``split`` with 0-5 items: does the model count it right (0-5 protocol)?"""
    predictor = Predictor.load(model)
    root, rows = split_rows(manifest, split)
    probs = predict_paths(predictor, [root / p for p in rows.image_path], progress=False)
    logits, targets, _, _ = protocol_view(torch.from_numpy(probs).log(),
                                          torch.tensor(rows.label.to_numpy(dtype=np.int64)),
                                          predictor.classes, PROTOCOLS["challenge"])
    return (logits.argmax(1) == targets).numpy()


def paired(a: Path, b: Path, manifest: Path, split: str) -> str:
    """Images only a / only b counts right, and the exact McNemar p of the difference: the
    figures share their images, so a paired test says more than two intervals."""
    right_a, right_b = right_0_5(a, manifest, split), right_0_5(b, manifest, split)
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = binomtest(only_b, only_a + only_b).pvalue if only_a + only_b else 1.0
    return f"{only_a} / {only_b} (p = {p:.2f})"


def row(name: str, m: dict, minutes: float) -> str:
    return (f"| {name} | {m['n']} | {m['accuracy']:.1%} | {m['rmse']:.3f} | {m['mae']:.3f} | "
            f"{m['within1']:.1%} | {m['ece']:.3f} | {minutes:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=Path("../shared/abid-sample"))
    parser.add_argument("--extra", type=Path, default=Path("../shared/abid-extra"),
                        help="count-folder images added to train ('' = dev only)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/accuracy"))
    parser.add_argument("--epochs", type=int, default=OURS["epochs"], help="epochs of our recipe")
    parser.add_argument("--image-size", type=int, default=OURS["image_size"])
    parser.add_argument("--reference-backbone", default=REFERENCE["backbone"],
                        help="resnet50 with --reference-weights DEFAULT reproduces the original (online)")
    parser.add_argument("--reference-weights", default=REFERENCE["weights"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--continue-epochs", type=int, default=0,
                        help="epochs of a warm restart that continues our run (lr 3e-4; 0 = "
                             "none, the shipped recipe)")
    parser.add_argument("--candidate", choices=CANDIDATES,
                        help="also train this change of our recipe at full length (OUT/ours-NAME)")
    parser.add_argument("--distill-from", default="",
                        help="comma list of teacher models for the candidate (train --distill-from)")
    parser.add_argument("--reuse", action="store_true",
                        help="take the runs OUT/results.json lists as finished instead of "
                             "training them again (to add the continued run to an earlier one)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = dict(cache_dir=str(args.out / "cache"), seed=args.seed, progress=False, workers=1)

    earlier = args.out / "results.json"
    reuse = json.loads(earlier.read_text()) if args.reuse and earlier.is_file() else None
    # Reusing, the earlier runs stay in results.json beside the new ones.
    results = {**(reuse or {}), "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                          f"{torch.get_num_threads()} threads, torch {torch.__version__}",
               "date": time.strftime("%Y-%m-%d")}
    manifest_all = make_manifest(args.sample, args.out, "all", args.seed)
    if str(args.extra) not in ("", ".") and args.extra.is_dir():
        manifest_all = dev_extra_manifest(manifest_all, args.extra, args.out)
    results["train_data"] = Path(manifest_all).name
    ours = TrainConfig(manifest=str(manifest_all), output=str(args.out / "ours"),
                       **{**OURS, "epochs": args.epochs, "image_size": args.image_size}, **common)
    results["ours"] = run("ours", ours, reuse)
    if args.continue_epochs:
        cont = {**CONTINUE, "epochs": args.continue_epochs}
        longer = replace(ours, **cont, init_from=str(args.out / "ours" / "model.pt"),
                         weights="none", output=str(args.out / "ours-continued"))
        results["ours-continued"] = run("ours-continued", longer, reuse, given=set(cont))
    if args.candidate:
        name = f"ours-{args.candidate}" + ("-distilled" if args.distill_from else "")
        candidate = replace(ours, **CANDIDATES[args.candidate], distill_from=args.distill_from,
                            output=str(args.out / name))
        results[name] = run(name, candidate, reuse)
    if not args.skip_reference:
        manifest_1_5 = make_manifest(args.sample, args.out, "udacity", args.seed)
        reference = TrainConfig(manifest=str(manifest_1_5), output=str(args.out / "reference"),
                                **REFERENCE, **common)
        reference = replace(reference, backbone=args.reference_backbone,
                            weights=args.reference_weights)
        results["reference"] = run("reference", reference, reuse)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    print(f"\n{results['machine']}, {results['date']}\n")
    print("| recipe / protocol | test images | exact acc. | RMSE | MAE | within 1 | ECE | train min |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ours_runs = [k for k in results if k.startswith("ours")]
    for name in ours_runs:
        test, minutes = results[name]["metrics"]["test"], results[name]["minutes"]
        print(row(f"{name}, 0-5 (challenge)", test["challenge"], minutes))
        print(row(f"{name}, 1-5 (udacity)", test["udacity"], minutes))
    if "reference" in results:
        ref = results["reference"]
        print(row("reference, 1-5 (udacity)", ref["metrics"]["test"]["udacity"], ref["minutes"]))
    print("\nSelection (dev-only validation, 0-5); against ours, the images only ours / only the "
          "run counts right, exact McNemar p (test: for information):\n\n"
          "| run | val images | exact acc. | RMSE | val: paired | test: paired |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for name in ours_runs:
        val = results[name]["metrics"]["val_protocols"]["challenge"]
        pairs = ([paired(args.out / "ours" / "model.pt", args.out / name / "model.pt",
                         manifest_all, split) for split in ("val", "test")]
                 if name != "ours" else ["", ""])
        print(f"| {name} | {val['n']} | {val['accuracy']:.1%} | {val['rmse']:.3f} | "
              f"{pairs[0]} | {pairs[1]} |", flush=True)


if __name__ == "__main__":
    main()

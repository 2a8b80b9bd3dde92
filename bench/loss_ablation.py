"""Which counting loss? Plain cross-entropy against the two ordinal-aware objectives, with the
same short recipe on the real ABID sample. Selection is by validation accuracy (carved out of
dev.txt); test figures are printed for information only.

    python bench/loss_ablation.py --sample ../shared/abid-sample --epochs 5 --image-size 128
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from accuracy import V1, make_manifest  # bench/ is on sys.path when run as a script

from binventory.training.config import TrainConfig
from binventory.training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=Path("../shared/abid-sample"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/loss"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--losses", default="ce,ordinal,expected")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = make_manifest(args.sample, args.out, "all", seed=0)
    rows = {}
    for loss in args.losses.split(","):
        cfg = TrainConfig(**{**V1, "epochs": args.epochs, "image_size": args.image_size,
                             "loss": loss}, manifest=str(manifest), output=str(args.out / loss),
                          cache_dir=str(args.out / "cache"), progress=False, workers=1)
        start = time.perf_counter()
        metrics = train(cfg)["metrics"]
        rows[loss] = {"val": metrics["val"], "test": metrics["test"]["challenge"],
                      "minutes": (time.perf_counter() - start) / 60}
        print(f"{loss}: done in {rows[loss]['minutes']:.1f} min", flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{args.epochs} epochs at {args.image_size}px, MobileNetV2, otherwise the accuracy "
          "benchmark's recipe\n")
    print("| loss | val acc. (all counts) | val RMSE | test acc. 0-5 | test RMSE 0-5 | minutes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for loss, r in rows.items():
        print(f"| {loss} | {r['val']['accuracy']:.1%} | {r['val']['rmse']:.3f} | "
              f"{r['test']['accuracy']:.1%} | {r['test']['rmse']:.3f} | {r['minutes']:.0f} |")


if __name__ == "__main__":
    main()

"""``binventory export`` and ``binventory predict``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads with a command, not with every 'binventory --help'
    import numpy as np


def add_parsers(commands, formatter) -> None:
    p = commands.add_parser(
        "export", formatter_class=formatter,
        help="export a model artifact to ONNX (optionally also int8)",
        description="Export a model artifact to ONNX for ONNX Runtime: uint8 images (N x S x S x 3,\n"
                    "RGB, resized like training) in, calibrated probabilities out, any batch size.\n"
                    "The export is checked against torch (max probability difference < 1e-4) and\n"
                    "refused otherwise. Model version, classes, preprocessing and temperature are\n"
                    "stored in the ONNX file's metadata.",
        epilog="examples:\n"
               "  binventory export --model runs/r1/model.pt\n"
               "  binventory export --model runs/r1/model.pt --quantize "
               "--manifest data/abid/manifest.parquet")
    p.add_argument("--model", type=Path, required=True, help="model artifact (model.pt)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    p.add_argument("--out", type=Path, default=None,
                   help="ONNX file to write; None: the artifact's path with .onnx")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--quantize", action="store_true",
                   help="also write an int8 copy (<out>.int8.onnx, static QDQ quantization): "
                        "no faster than fp32 on the CPU measured in BENCHMARKS.md, and its "
                        "counts differ from fp32's on some images")
    p.add_argument("--manifest", type=Path, default=None,
                   help="manifest with splits: its train images calibrate int8 (None: "
                        "synthetic bins) and its test images measure int8 vs fp32 accuracy")
    p.add_argument("--calibration-images", type=int, default=256,
                   help="train images used to calibrate int8 (more: steadier ranges)")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="compare int8 and fp32 on at most this many test images; None: all")
    p.set_defaults(func=_export)

    p = commands.add_parser(
        "predict", formatter_class=formatter,
        help="count every image of a folder, S3 prefix or manifest into a Parquet file",
        description="Batch prediction: one output row per image (image_id, source, sha256, count,\n"
                    "label, confidence, p_<class> probabilities, model_version, error). Bad images\n"
                    "get a row with their error instead of a prediction. Resumable: rerun the same\n"
                    "command after an interruption and only the missing images are processed.\n"
                    "Under torchrun each process takes a share of the images and rank 0 merges the\n"
                    "result. With --backend onnx, the ONNX file is exported first when it is\n"
                    "missing or stale (exported from another artifact).",
        epilog="inputs:\n"
               "  DIR                  an ABID-layout dataset (bin-images/*.jpg) or any folder "
               "of .jpg/.jpeg/.png\n"
               "  s3://bucket/prefix   images under an S3 prefix, read anonymously\n"
               "  MANIFEST.parquet     the valid images of a 'binventory data index' manifest\n"
               "examples:\n"
               "  binventory predict --model model.pt --input data/abid --out preds.parquet\n"
               "  binventory predict --model model.pt --input s3://aft-vbi-pds/bin-images "
               "--out preds.parquet\n"
               "  torchrun --nproc-per-node 4 -m binventory predict --model model.pt "
               "--input data/abid --out preds.parquet")
    p.add_argument("--model", type=Path, required=True, help="model artifact (model.pt)")
    p.add_argument("--input", required=True, metavar="DIR|s3://BUCKET/PREFIX|MANIFEST",
                   help="images to count (see below)")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx", help="inference engine")
    p.add_argument("--onnx", type=Path, default=None,
                   help="ONNX file for --backend onnx; None: the artifact's path with .onnx, "
                        "exported automatically when missing or stale")
    p.add_argument("--batch-size", type=int, default=64, help="images per inference call")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="threads reading and decoding images")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads; None: the cores, shared among local processes")
    p.add_argument("--endpoint-url", default=None,
                   help="S3-compatible endpoint for s3:// inputs (MinIO, a local mirror, moto)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over instead of skipping the images already in --out "
                        "(resume: %(default)s)")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from binventory.serving.batch import predict_batch
    from binventory.world import world_from_env

    report = predict_batch(args.model, args.input, args.out, backend=args.backend,
                           batch_size=args.batch_size, workers=args.workers, resume=args.resume,
                           endpoint_url=args.endpoint_url, threads=args.threads,
                           onnx_path=args.onnx)
    world = world_from_env()
    print((f"rank {world.rank}/{world.size}: " if world.enabled else "") + report.describe())
    return 0


# ---- export ------------------------------------------------------------------------------------

def _export(args: argparse.Namespace) -> int:
    from binventory.model.artifact import load_artifact
    from binventory.serving.export import export_model

    counting = load_artifact(args.model)  # a clear error for a missing or foreign file first
    calibration = check = test = None
    if args.manifest is not None:
        calibration, _ = _split_images(args.manifest, "train", counting.preprocess,
                                       args.calibration_images)
        test = _split_images(args.manifest, "test", counting.preprocess, args.eval_limit)
        check = test[0][:16] if len(test[0]) else None
    result = export_model(args.model, args.out, opset=args.opset, quantize=args.quantize,
                          calibration=calibration, check_images=check)
    print(f"wrote {result.path} (max probability difference to torch: {result.parity:.1e})")
    if result.int8_path is None:
        return 0
    print(f"wrote {result.int8_path} (int8 vs fp32 on the check images: max probability "
          f"difference {result.int8_diff:.3f}, same count for {result.int8_agreement:.0%})")
    if test is not None and len(test[0]):
        _compare_int8(result.path, result.int8_path, *test, counting.classes)
    elif args.manifest is not None:
        print(f"{args.manifest} has no test split: int8 accuracy not measured")
    return 0


def _split_images(manifest: Path, split: str, preprocess, limit: int | None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images of one split of a manifest (a seeded sample of ``limit``) and labels."""
    from binventory.data.manifest import split_rows

    root, rows = split_rows(manifest, split)
    if limit is not None and len(rows) > limit:
        rows = rows.sample(limit, random_state=seed)
    pixels = preprocess.load_many([root / rel for rel in rows.image_path],
                                  workers=min(8, os.cpu_count() or 1))
    return pixels, rows.label.astype(int).to_numpy()


def _compare_int8(fp32_path: Path, int8_path: Path, images: np.ndarray, labels: np.ndarray,
                  classes) -> None:
    import torch

    from binventory.serving.export import onnx_session, run_session

    target = classes.to_class(torch.tensor(labels)).numpy()
    fp32 = run_session(onnx_session(fp32_path), images).argmax(1)
    int8 = run_session(onnx_session(int8_path), images).argmax(1)
    acc32, acc8 = (fp32 == target).mean(), (int8 == target).mean()
    print(f"test split ({len(images):,} images): accuracy fp32 {acc32:.3f}, int8 {acc8:.3f} "
          f"({(acc8 - acc32) * 100:+.1f} points); same count for {(fp32 == int8).mean():.1%}")

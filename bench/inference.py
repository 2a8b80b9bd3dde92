"""Batch inference throughput: a reference-style predictor against ours (torch, ONNX Runtime fp32
and int8), each from JPEG files to counts, and how close each gets to the machine's FLOP ceiling.

    python bench/inference.py [--model model.pt] [--manifest m.parquet] [--n 1000]

Engines:
  reference    eager torch, one image at a time, PIL decode + resize + normalize per image
  ours torch   ``predict_batch`` (threaded decoding, batched inference, Parquet output)
  ours onnx    the same with ONNX Runtime on the exported fp32 model
  ours int8    the same with the static-int8 (QDQ) model

"end to end" = files to Parquet rows (the reference: files to probabilities); "model only" =
inference on already decoded images. FLOP ceiling: model FLOPs per image (FlopCounterMode) x
images/s / the fp32 FLOP/s of a large matmul on this machine (int8 kernels can beat it).

Images: the test split of --manifest when given (then accuracy is reported too), else the real
ABID sample in ../shared/abid-sample, else synthetic bins. Without --model, an untrained
MobileNetV2 at 224 px: the same compute as a trained one, so the timings hold; its accuracy
figures mean nothing and are not printed.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from binventory.data.preprocess import Preprocess
from binventory.model.artifact import load_artifact, save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import create_model
from binventory.serving.batch import predict_batch
from binventory.serving.export import export_model
from binventory.serving.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "abid-sample"


def pick_images(args, workdir: Path) -> tuple[list[Path], dict[str, int] | None, str]:
    """Image files to run on, their labels by file name (when known), and a description."""
    if args.manifest:
        from binventory.data.manifest import dataset_root, read_manifest
        df, meta = read_manifest(args.manifest)
        test = df[(df.status == "ok") & (df.get("split") == "test")].head(args.n)
        root = dataset_root(meta, args.manifest)
        files = [root / p for p in test.image_path]
        return files, dict(zip((f.name for f in files), test.label.astype(int))), \
            f"test split of {args.manifest}"
    if (SAMPLE / "bin-images").is_dir():
        return sorted((SAMPLE / "bin-images").glob("*.jpg"))[:args.n], None, f"real ABID sample ({SAMPLE})"
    from binventory.data.synth import generate
    generate(workdir / "synth", args.n, progress=False)
    return sorted((workdir / "synth" / "bin-images").glob("*.jpg")), None, "synthetic bins"


def untrained_model(path: Path) -> Path:
    model = create_model("mobilenet_v2", 7, weights="none").eval()
    return save_artifact(path, model, classes=CountClasses(), preprocess=Preprocess(224),
                         name="untrained-mobilenet_v2-224")


def peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 FLOP/s of the best of a few large matmuls: a practical ceiling for this CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def model_flops(model: torch.nn.Module, size: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def reference(model_path: Path, files: list[Path]) -> float:
    """images/s of the reference-style predictor: eager, batch 1, PIL preprocessing per image."""
    counting = load_artifact(model_path)
    model, pre = counting.model.eval(), counting.preprocess

    def run(paths):
        with torch.no_grad():
            for path in paths:
                (model(pre(path)[None]) / counting.temperature).softmax(dim=1)

    run(files[:4])  # warm-up
    return len(files) / _timed(lambda: run(files))


def model_only(model_path: Path, backend: str, onnx_path, pixels: np.ndarray, batch: int,
               threads: int) -> float:
    predictor = Predictor.load(model_path, backend=backend, onnx_path=onnx_path, threads=threads)
    predictor.predict_arrays(pixels[:batch])  # warm-up

    def run():
        for i in range(0, len(pixels), batch):
            predictor.predict_arrays(pixels[i:i + batch])

    return len(pixels) / _timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: untrained 224 px)")
    parser.add_argument("--manifest", type=Path, default=None, help="manifest with a test split")
    parser.add_argument("--n", type=int, default=1000, help="images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="inference threads")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="decoding threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files, labels, where = pick_images(args, work)
        model_note = str(args.model)
        if args.model is None:
            args.model, model_note = untrained_model(work / "model.pt"), "untrained MobileNetV2 (speed only)"
        counting = load_artifact(args.model)
        pre = counting.preprocess
        folder = work / "images"  # links, so predict_batch reads exactly these files
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f.resolve())
        pixels = np.stack([pre.load(f) for f in files])
        # Exported into the scratch folder: a benchmark never writes beside the user's model.
        exported = export_model(args.model, work / "model.onnx", quantize=True,
                                calibration=pixels[:32], check_images=pixels[:8])
        flops = model_flops(counting.model, pre.image_size)
        peak = peak_flops()
        print(f"{platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"onnxruntime {onnxruntime.__version__}, {time.strftime('%Y-%m-%d')}")
        print(f"model: {model_note}, {pre.image_size} px, {flops / 1e9:.2f} GFLOP/image; "
              f"images: {len(files)} from {where}; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s; "
              f"ONNX parity {exported.parity:.1e}\n")
        rows = [("reference: eager torch, batch 1, PIL per image", 1,
                 reference(args.model, files), None)]
        outputs = {}
        for name, backend, onnx_path in (("ours: torch", "torch", None),
                                         ("ours: ONNX Runtime fp32", "onnx", exported.path),
                                         ("ours: ONNX Runtime int8", "onnx", exported.int8_path)):
            out = work / f"{name.split()[-1]}.parquet"
            report = predict_batch(args.model, folder, out, backend=backend, onnx_path=onnx_path,
                                   batch_size=args.batch_size, workers=args.workers,
                                   threads=args.threads, resume=False, progress=False)
            outputs[name] = pd.read_parquet(out)
            rows.append((name, args.batch_size, len(files) / report.seconds,
                         model_only(args.model, backend, onnx_path, pixels, args.batch_size,
                                    args.threads)))
        # The ceiling share uses the model-only rate (the reference has none: its end to end).
        print("| engine | batch | images/s end to end | images/s model only | of FLOP ceiling |")
        print("| --- | --- | --- | --- | --- |")
        for name, batch, e2e, inference in rows:
            rate = inference or e2e
            print(f"| {name} | {batch} | {e2e:,.1f} | {'' if inference is None else f'{inference:,.1f}'} "
                  f"| {flops * rate / peak:.1%} |")
        fp32, int8 = outputs["ours: ONNX Runtime fp32"], outputs["ours: ONNX Runtime int8"]
        ok = fp32.error.isna()
        same = (fp32.label[ok] == int8.label[ok]).mean()
        untrained = counting.name == "untrained-mobilenet_v2-224"
        print(f"\nint8 vs fp32: same count for {same:.1%} of {ok.sum()} images, max probability "
              f"difference {exported.int8_diff:.3f} on the check images"
              + (" (untrained model: not meaningful)" if untrained else ""))
        if labels is not None and not untrained:
            truth = counting.classes.to_class(torch.tensor(
                [labels[Path(s).name] for s in fp32.source[ok]])).numpy()
            for name, df in (("fp32", fp32), ("int8", int8)):
                predicted = df["count"][ok].astype(int).to_numpy() - counting.classes.min_count
                print(f"accuracy {name}: {(predicted == truth).mean():.3f}")


if __name__ == "__main__":
    main()

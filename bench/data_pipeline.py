"""Data pipeline throughput: synthetic generation, indexing, and dataset reads with and without
the resized-image cache.

    python bench/data_pipeline.py [--sample ../shared/abid-sample] [--n 400]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from binventory.data.dataset import BinDataset
from binventory.data.manifest import build_manifest, write_manifest
from binventory.data.preprocess import Preprocess
from binventory.data.split import assign_splits
from binventory.data.synth import generate


def timed(label: str, n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"| {label} | {n:,} | {seconds:.2f} | {n / seconds:,.0f} |", flush=True)
    return seconds


def dataset_reads(root: Path, workdir: Path, size: int) -> None:
    df = assign_splits(build_manifest(root, progress=False), protocol="all", ratios=(1.0, 0.0, 0.0))
    manifest = workdir / f"{root.name}.parquet"
    write_manifest(df, manifest, root)
    plain = BinDataset(manifest, "train", Preprocess(size))
    n = min(len(plain), 2000)
    timed(f"read {root.name} at {size}px, decode every time", n, lambda: [plain[i] for i in range(n)])
    cached = BinDataset(manifest, "train", Preprocess(size), cache_dir=workdir / "cache")
    timed(f"read {root.name} at {size}px, first pass fills cache", n,
          lambda: [cached[i] for i in range(n)])
    timed(f"read {root.name} at {size}px, warm cache", n, lambda: [cached[i] for i in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=Path("../shared/abid-sample"))
    parser.add_argument("--n", type=int, default=400, help="synthetic images to generate")
    args = parser.parse_args()
    print(f"{platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")
    print("| step | images | seconds | images/s |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timed("synth, 1 process", args.n, lambda: generate(tmp / "s1", args.n, workers=1, progress=False))
        timed(f"synth, {os.cpu_count()} processes", args.n,
              lambda: generate(tmp / "s2", args.n, progress=False))
        timed("index synthetic", args.n, lambda: build_manifest(tmp / "s2", progress=False))
        if (args.sample / "bin-images").is_dir():
            n = len(os.listdir(args.sample / "bin-images"))
            timed("index real ABID sample", n, lambda: build_manifest(args.sample, progress=False))
            dataset_reads(args.sample, tmp, 224)
        (tmp / "s2").rename(tmp / "synthetic")
        dataset_reads(tmp / "synthetic", tmp, 224)


if __name__ == "__main__":
    main()

"""What training diagnostics cost: MobileNetV2 training steps with the Collector off and on.

    python bench/diagnostics_overhead.py [--image-size 128] [--batch-size 16] [--steps 40]

The step is training's own (binventory.training.step.TrainStep, as build_step makes it: forward,
loss, backward, clip, AdamW step, scheduler; EMA and channels_last off) on in-memory batches, so
that the figure is the collection's cost and not the data pipeline's. Blocks of `--steps` steps
alternate between the modes, `--repeats` times; each mode's figure is the median block time per
step, and the overhead is relative to "off".
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from binventory.diagnostics.collect import Collector
from binventory.model.classes import CountClasses
from binventory.training.config import TrainConfig
from binventory.training.train import build_step


def run_block(step, batches, every: int) -> tuple[float, int]:
    diag = Collector(every, enabled=every > 0)
    diag.attach(step.model, step.optimizer, step.to_targets)
    start = time.perf_counter()
    for images, counts in diag.batches(batches):
        loss, _, _ = step(images, counts, diag)
        loss.item()
    elapsed = time.perf_counter() - start
    diag.detach()
    return elapsed / len(batches), len(diag.data["samples"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=40, help="steps per block")
    p.add_argument("--repeats", type=int, default=5, help="blocks per mode")
    p.add_argument("--every", type=int, nargs="+", default=[20, 5, 1],
                   help="sampling intervals to measure (20 is the training default)")
    args = p.parse_args()

    torch.manual_seed(0)
    classes = CountClasses(0, 5, True)
    # Training's defaults (clip 2.0, ordinal loss, AdamW, schedule) on random initial weights;
    # EMA and channels_last off, as in the figures BENCHMARKS.md reports.
    cfg = TrainConfig(backbone="mobilenet_v2", weights="none", lr=1e-4, epochs=1000,
                      ema_decay=0.0, channels_last=False)
    step = build_step(cfg, classes, torch.device("cpu"), 1000)
    step.model.train()
    batches = [(torch.randn(args.batch_size, 3, args.image_size, args.image_size),
                torch.randint(0, 9, (args.batch_size,))) for _ in range(args.steps)]
    modes = [0, *args.every]
    run_block(step, batches[:3], 0)  # warm-up
    times: dict[int, list[float]] = {m: [] for m in modes}
    samples: dict[int, int] = {}
    for _ in range(args.repeats):
        for mode in modes:
            per_step, samples[mode] = run_block(step, batches, mode)
            times[mode].append(per_step)
    base = statistics.median(times[0])
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}; MobileNetV2, batch {args.batch_size}, "
          f"{args.image_size}px, blocks of {args.steps} steps x {args.repeats}")
    print("| diagnostics | samples per block | ms per step (median of blocks) | overhead |")
    print("| --- | --- | --- | --- |")
    for mode in modes:
        median = statistics.median(times[mode])
        label = "off" if mode == 0 else f"every {mode} steps"
        overhead = "-" if mode == 0 else f"{(median - base) / base:+.1%}"
        print(f"| {label} | {samples[mode]} | {median * 1000:.1f} | {overhead} |", flush=True)


if __name__ == "__main__":
    main()

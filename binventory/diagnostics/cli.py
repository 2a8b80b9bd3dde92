"""``binventory profile``: a few training steps under torch.profiler, set up like ``binventory train``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from binventory import BinventoryError
from binventory.training.config import add_config_arguments, config_from_args


def add_parsers(commands, formatter) -> None:
    p = commands.add_parser(
        "profile", formatter_class=formatter, help="profile a few training steps",
        description="Build the model, data and optimizer exactly as 'binventory train' would, run "
                    "a few steps under torch.profiler and write OUT/trace.json (open it in "
                    "https://ui.perfetto.dev or chrome://tracing), OUT/summary.json and "
                    "OUT/summary.txt: top operators and the step time split into data, forward, "
                    "backward and optimizer. Every training run also writes report.html and "
                    "rules.json (see --diagnostics-every); this command is for a closer look.",
        epilog="example:\n  binventory profile --manifest m.parquet --steps 10 --out runs/profile")
    group = p.add_argument_group("profile")
    group.add_argument("--steps", type=int, default=10, help="steps recorded")
    group.add_argument("--warmup", type=int, default=2, help="steps run first and not recorded")
    group.add_argument("--out", type=Path, default=Path("runs/profile"), help="output folder")
    add_config_arguments(p)
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    from binventory.diagnostics.profile import format_summary

    cfg = config_from_args(args)
    if not cfg.manifest:
        raise BinventoryError("--manifest is required")
    if args.steps < 1 or args.warmup < 0:
        raise BinventoryError("--steps must be at least 1 and --warmup at least 0")
    summary = profile_training(cfg, args.out, args.steps, args.warmup)
    print(format_summary(summary))
    print(json.dumps({k: summary[k] for k in ("step_ms", "trace")}))
    return 0


def profile_training(cfg, out: Path, steps: int, warmup: int) -> dict:
    """The training set-up and step of binventory.training.train, one process, profiled."""
    from binventory.data.preprocess import Preprocess
    from binventory.diagnostics.profile import profile_steps
    from binventory.model.classes import CountClasses
    from binventory.model.factory import normalization, set_train_mode
    from binventory.training import distributed
    from binventory.training.train import build_step, load_data, seed_everything

    info = distributed.DistInfo(device=distributed.pick_device(cfg.device))
    seed_everything(cfg.seed)
    classes = CountClasses(cfg.min_count, cfg.max_count, cfg.overflow)
    preprocess = Preprocess(cfg.image_size, cfg.resize, *normalization(cfg.backbone))
    loader = load_data(cfg, info, preprocess)[3]
    step = build_step(cfg, classes, info.device, len(loader))
    set_train_mode(step.model)
    return profile_steps(step, loader, out, steps, warmup, info.device)

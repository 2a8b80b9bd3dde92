"""``binventory train`` (and, later, evaluate and tune)."""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from pathlib import Path

from binventory import BinventoryError
from binventory.training.config import TrainConfig, add_config_arguments, config_from_args

log = logging.getLogger(__name__)


def add_parsers(commands, formatter) -> None:
    p = commands.add_parser(
        "train", formatter_class=formatter, help="train a counting model",
        description="Fine-tune a pretrained backbone to count the items in bin photos. Runs on "
                    "one process, under torchrun (DistributedDataParallel, gloo on CPU, nccl on "
                    "GPU) and inside SageMaker training jobs (SM_CHANNEL_*, SM_MODEL_DIR, SM_HOSTS).",
        epilog="examples:\n"
               "  binventory train --manifest data/demo/synth/manifest.parquet --epochs 5\n"
               "  torchrun --nproc-per-node 2 -m binventory train --manifest m.parquet\n"
               "  binventory train --config runs/tune/best_config.json --resume\n"
               "  binventory train --init-from runs/train/model.pt --manifest base.parquet "
               "--manifest audits.parquet")
    p.add_argument("--config", type=Path, default=None,
                   help="JSON config (e.g. from 'binventory tune'); command-line options override it")
    add_config_arguments(p)
    p.set_defaults(func=_train, parser=p)

    p = commands.add_parser(
        "evaluate", formatter_class=formatter, help="evaluate a model on a manifest split",
        description="Exact accuracy, RMSE, MAE, within-1 accuracy, per-class accuracy, confusion "
                    "matrix, reliability diagram and ECE of a model artifact (with its stored "
                    "temperature) on one split, per count protocol.")
    p.add_argument("--model", type=Path, required=True, help="model artifact (model.pt)")
    p.add_argument("--manifest", type=Path, required=True, help="manifest with a split")
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument("--protocols", default="challenge,udacity",
                   help="comma-separated protocols (udacity, challenge, all)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: next to the model)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.set_defaults(func=_evaluate)

    p = commands.add_parser(
        "tune", formatter_class=formatter, help="search hyperparameters with Optuna",
        description="Search learning rate, weight decay, batch size, image size, label smoothing "
                    "and frozen stages with Optuna (TPE sampler, median pruning on validation "
                    "accuracy). The study is stored in STUDY_DIR/study.db: rerunning the same "
                    "command resumes it. The best configuration is written to "
                    "STUDY_DIR/best_config.json, ready for 'binventory train --config'.",
        epilog="example:\n  binventory tune --manifest m.parquet --trials 20 --epochs 6")
    tune = p.add_argument_group("search")
    tune.add_argument("--trials", type=int, default=20, help="trials in the study (finished ones count)")
    tune.add_argument("--study-dir", type=Path, default=Path("runs/tune"), help="study folder")
    tune.add_argument("--image-sizes", default="128,160,224", help="image sizes to try")
    tune.add_argument("--max-freeze", type=int, default=8, help="most backbone stages to freeze")
    tune.add_argument("--timeout", type=float, default=None, help="stop starting trials after S seconds")
    p.add_argument("--config", type=Path, default=None, help="JSON base config")
    add_config_arguments(p)
    p.set_defaults(func=_tune, parser=p)


def apply_config_file(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    """Options given on the command line win over the file, the file over the defaults. The
    file's values become the command's defaults and ``argv`` (the command line that gave
    ``args``) is parsed again, so that argparse itself tells what was given: abbreviations
    (--epoch), --name=value and --no-name included."""
    if args.config is None:
        return config_from_args(args)
    from_file = TrainConfig.from_json(args.config).to_dict()
    # A list given on the command line replaces the file's instead of appending to it.
    lists = {name for name, value in from_file.items() if isinstance(value, list)}
    args.parser.set_defaults(**{k: None if k in lists else v for k, v in from_file.items()})
    reparsed = args.parser.parse_args(argv[argv.index(args.command) + 1:])
    for name in lists:
        if getattr(reparsed, name) is None:
            setattr(reparsed, name, from_file[name])
    return config_from_args(reparsed)


def given_options(args: argparse.Namespace, argv: list[str]) -> set[str]:
    """The training options the user set, on the command line or in --config: what --init-from
    must not override. argparse sets a default only on a namespace that lacks the attribute, so
    parsing into one that has every option as None leaves exactly the given ones set."""
    names = [f.name for f in fields(TrainConfig)]
    probe = argparse.Namespace(**dict.fromkeys(names))
    args.parser.parse_args(argv[argv.index(args.command) + 1:], namespace=probe)
    given = {name for name in names if getattr(probe, name) is not None}
    if args.config is not None:
        given |= set(json.loads(args.config.read_text()))  # apply_config_file has checked it
    return given


def sagemaker_defaults(cfg: TrainConfig, environ=None) -> TrainConfig:
    """Inside a SageMaker job, read data from its channel and write the model to SM_MODEL_DIR."""
    from binventory.training.distributed import sagemaker_paths

    paths = sagemaker_paths(environ)
    if not cfg.manifest and "data_dir" in paths:
        cfg.manifest = str(Path(paths["data_dir"]) / "manifest.parquet")
    if "model_dir" in paths and cfg.output == TrainConfig.output:
        cfg.output = paths["model_dir"]
    return cfg


def _train(args: argparse.Namespace) -> int:
    from binventory.training.train import train

    cfg = sagemaker_defaults(apply_config_file(args, args.argv))
    if not cfg.manifest:
        raise BinventoryError("--manifest is required (build one with 'binventory data index' "
                              "and 'binventory data split')")
    result = train(cfg, given=given_options(args, args.argv))
    if "model" in result:
        metrics = result["metrics"]
        summary = {"model": result["model"], "val_accuracy": metrics["val"]["accuracy"],
                   "temperature": round(metrics["temperature"], 3)}
        for name, m in metrics.get("test", {}).items():
            if m.get("n"):
                summary[f"test_{name}"] = {k: round(m[k], 4) for k in ("accuracy", "rmse", "mae",
                                                                       "within1", "ece")}
        report = Path(result["output"]) / "report.html"
        if report.is_file():
            summary["diagnostics"] = str(report)
        print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from binventory.data.split import PROTOCOLS
    from binventory.training.report import evaluate_artifact

    protocols = [p for p in args.protocols.split(",") if p]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise BinventoryError(f"unknown protocols {unknown}: choose from {list(PROTOCOLS)}")
    out = args.out or args.model.parent / f"eval-{args.split}"
    results = evaluate_artifact(args.model, args.manifest, args.split, out, protocols,
                                args.batch_size, args.workers)
    for name, m in results["protocols"].items():
        print(f"{name:10s} n={m['n']:5d}  accuracy {m['accuracy']:.1%}  RMSE {m['rmse']:.3f}  "
              f"MAE {m['mae']:.3f}  within-1 {m['within1']:.1%}  ECE {m['ece']:.3f}")
    print(f"report: {out}/metrics.json, confusion_*.png, reliability_*.png")
    if "training_report" in results:
        print(f"training diagnostics: {results['training_report']} (rules: rules.json beside it)")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from binventory.training.tune import tune

    base = apply_config_file(args, args.argv)
    if not base.manifest:
        raise BinventoryError("--manifest is required")
    try:
        sizes = [int(x) for x in args.image_sizes.split(",") if x]
    except ValueError:
        raise BinventoryError(f"--image-sizes wants numbers like 128,160,224, got {args.image_sizes!r}") from None
    summary = tune(base, args.trials, args.study_dir, sizes, args.max_freeze, base.seed, args.timeout)
    print(json.dumps(summary, indent=2))
    return 0

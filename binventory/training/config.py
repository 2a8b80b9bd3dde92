"""Training configuration as one typed dataclass; the CLI's options are generated from it."""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from binventory import BinventoryError
from binventory.diagnostics.rules import RULE_NAMES


def _opt(default, help: str, group: str, **kw):
    if isinstance(default, list):  # a mutable default needs a factory
        return field(default_factory=lambda: list(default), metadata={"help": help, "group": group, **kw})
    return field(default=default, metadata={"help": help, "group": group, **kw})


@dataclass
class TrainConfig:
    # data
    # A str (one path or a comma list), not a list: configs and artifacts keep naming one
    # manifest as before; --manifest repeated joins its values (see JoinAction).
    manifest: str = _opt("", "manifest with a split (binventory data index + split); repeat it "
                         "or give a comma list to train on several at once (base data + audit "
                         "exports: an image in two is counted once)", "data", join=True)
    cache_dir: str = _opt(".cache/images", "on-disk cache of resized images ('' = off)", "data")
    image_size: int = _opt(224, "input size (square)", "data")
    resize: str = _opt("stretch", "stretch or letterbox (never crop)", "data",
                       choices=("stretch", "letterbox"))
    workers: int = _opt(2, "data-loading processes per rank", "data")
    # model
    backbone: str = _opt("mobilenet_v2", "mobilenet_v2, efficientnet_lite0|1|2 or a torchvision model",
                         "model")
    weights: str = _opt("imagenet", "imagenet, none, a torchvision weights name, or a file", "model")
    init_from: str = _opt("", "fine-tune this binventory model (model.pt): its backbone, classes "
                          "and preprocessing, and for the options left out a short schedule: "
                          "--epochs 3 --lr 0.0001 --warmup-epochs 0.2 --ema-decay 0.99", "model")
    dropout: float = _opt(0.2, "dropout before the head", "model")
    freeze: int = _opt(0, "freeze the first N backbone stages (-1 = the whole backbone)", "model")
    min_count: int = _opt(0, "smallest count class", "model")
    max_count: int = _opt(5, "largest exact count class", "model")
    overflow: bool = _opt(True, "add a 'max_count+1 or more' class", "model")
    loss: str = _opt("ordinal", "ce, ordinal (ce + EMD) or expected (ce + expected-count L1)",
                     "model", choices=("ce", "ordinal", "expected"))
    loss_weight: float = _opt(1.0, "weight of the ordinal term", "model")
    # "none" by default: on dev + abid-extra, full logit adjustment over-corrected (validation 0-5
    # exact 37.3% against 43.0% without; BENCHMARKS.md, "Counter v2 levers").
    prior_correction: str = _opt("none", "when training rows without records (count folders) "
                                 "shift the count mix: none, logit_adjust, tempered (a fraction of "
                                 "the adjustment, chosen on validation) or class_weights",
                                 "model", choices=("none", "logit_adjust", "tempered", "class_weights"))
    tta: bool = _opt(False, "the saved model counts each image as is and flipped three ways and "
                     "averages its logits: 4x the inference cost (BENCHMARKS.md, 'Counter v2 "
                     "levers'); --init-from MODEL --epochs 0 --tta adds it to a trained model",
                     "model")
    # distillation (binventory.training.distill)
    distill_from: str = _opt("", "comma list of trained models (model.pt, with this run's "
                             "classes) whose mean distribution over counts the student learns "
                             "beside the labels: one network's serving cost for an ensemble's "
                             "counts", "distill")
    distill_weight: float = _opt(0.5, "share of the loss that is the teachers' distribution (the "
                                 "rest: the count labels)", "distill")
    distill_temperature: float = _opt(2.0, "softening temperature of the teachers' and the "
                                      "student's distributions", "distill")
    # optimization
    epochs: int = _opt(15, "training epochs", "optim")
    batch_size: int = _opt(32, "images per step per rank", "optim")
    lr: float = _opt(1e-3, "peak learning rate (AdamW)", "optim")
    head_lr_mult: float = _opt(10.0, "learning-rate multiplier of the new head", "optim")
    weight_decay: float = _opt(0.05, "AdamW weight decay (not on norms and biases)", "optim")
    warmup_epochs: float = _opt(1.0, "linear warmup before the cosine decay", "optim")
    label_smoothing: float = _opt(0.1, "label smoothing", "optim")
    clip_grad: float = _opt(2.0, "gradient-norm clip (0 = off)", "optim")
    ema_decay: float = _opt(0.999, "EMA of weights, evaluated and saved (0 = off)", "optim")
    amp: bool = _opt(True, "bf16 autocast on GPU", "optim")
    channels_last: bool = _opt(True, "channels-last memory format", "optim")
    patience: int = _opt(0, "early stop after N epochs without improvement (0 = off)", "optim")
    # augmentation (all keep the count true: no crops unless asked)
    hflip: float = _opt(0.5, "horizontal flip probability", "augment")
    vflip: float = _opt(0.0, "vertical flip probability", "augment")
    color: float = _opt(0.2, "colour jitter strength", "augment")
    affine: float = _opt(1.0, "small-affine strength (1 = up to 5 degrees, 4%% shift, 5%% scale)",
                         "augment")
    random_crop: bool = _opt(False, "random resized crops (the reference recipe; changes counts)",
                             "augment")
    # run
    output: str = _opt("runs/train", "run folder: checkpoints, metrics, model.pt", "run")
    seed: int = _opt(0, "random seed", "run")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N", "run")
    resume: bool = _opt(False, "continue from OUTPUT/last.pt", "run")
    eval_protocols: str = _opt("challenge,udacity",
                               "protocols reported on the test split (comma-separated)", "run")
    progress: bool = _opt(True, "show progress bars", "run")
    # diagnostics (binventory.diagnostics): report.html and rules.json in the run folder
    diagnostics_every: int = _opt(20, "sample gradients, weights, activations and utilization "
                                  "every N steps (0 = no diagnostics)", "diagnostics")
    stop_on_issue: list[str] = _opt([], "stop after the epoch in which this rule finds an issue "
                                    f"(repeatable): {', '.join(RULE_NAMES)}", "diagnostics",
                                    choices=RULE_NAMES)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise BinventoryError(f"unknown training options: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise BinventoryError(f"cannot read config {path}: {e}") from None


class JoinAction(argparse.Action):
    """A repeated str option joined with commas; a config file's value is replaced, not extended."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, "_joined", {})
        given.setdefault(self.dest, []).append(values)
        namespace._joined = given
        setattr(namespace, self.dest, ",".join(given[self.dest]))


def add_config_arguments(parser: argparse.ArgumentParser, cls=TrainConfig) -> None:
    """One option per field, grouped, with the field's help (the formatter adds the default)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(cls):
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        kwargs = {"default": default, "help": meta["help"], "dest": f.name}
        if f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.get("join"):
            kwargs["action"] = JoinAction
        elif f.type in ("list[str]", list[str]):
            # Default None, not []: argparse would append to the shared default list.
            kwargs.update(action="append", type=str, choices=meta.get("choices"), metavar="RULE")
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, cls=TrainConfig):
    values = {f.name: getattr(args, f.name) for f in fields(cls)}
    for f in fields(cls):  # an append option left out is None; the field wants its empty list
        if values[f.name] is None and f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
    return cls(**values)

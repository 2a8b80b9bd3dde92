"""``train --init-from MODEL``: fine-tune a binventory model instead of an ImageNet backbone.

The model fixes what its weights mean: backbone, count classes and preprocessing are taken from
it, and an option that asks for another is refused rather than silently overridden. Options
the user left out get a short schedule: the head is trained already and the features fit bin
photos, so a few gentle epochs adapt it to new data (audits) without forgetting the old.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from binventory import BinventoryError
from binventory.model.artifact import load_artifact
from binventory.model.factory import without_tta
from binventory.training.config import TrainConfig

# Stated once, in --init-from's help (config.py). EMA 0.99: a ~100-step horizon, a fraction of
# a short run; 0.999 would keep the saved weights close to the parent's for the whole run.
SCHEDULE = {"epochs": 3, "lr": 1e-4, "warmup_epochs": 0.2, "ema_decay": 0.99}


@dataclass
class Start:
    """Where a fine-tune starts: the parent's id (the new artifact's ``parent``) and weights."""
    parent: str
    state_dict: dict[str, torch.Tensor]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def explicit(cfg: TrainConfig) -> set[str]:
    """The options a config built in code sets: those that differ from the defaults."""
    default = TrainConfig()
    return {f.name for f in fields(TrainConfig) if getattr(cfg, f.name) != getattr(default, f.name)}


def resolve(cfg: TrainConfig, given: set[str] | None = None) -> tuple[TrainConfig, Start | None]:
    """The run's config with the parent's architecture (and the short schedule where ``given``,
    the options set by the user, leaves it open), and where it starts. Without --init-from,
    ``cfg`` as it is and no start."""
    if not cfg.init_from:
        return cfg, None
    given = explicit(cfg) if given is None else given
    parent = load_artifact(cfg.init_from)
    theirs = {"backbone": parent.spec.backbone, "min_count": parent.classes.min_count,
              "max_count": parent.classes.max_count, "overflow": parent.classes.overflow,
              "image_size": parent.preprocess.image_size, "resize": parent.preprocess.resize}
    clashes = [f"{_flag(k)} {getattr(cfg, k)} (the model has {v})" for k, v in theirs.items()
               if k in given and getattr(cfg, k) != v]
    if "weights" in given and cfg.weights != "none":
        clashes.append(f"--weights {cfg.weights} (the model's weights are the starting point)")
    if clashes:
        raise BinventoryError(f"--init-from {cfg.init_from} fixes the architecture, classes and "
                              f"preprocessing, but was given {'; '.join(clashes)}: leave these "
                              "out to take the model's, or train without --init-from")
    updates = {**theirs, "weights": "none"}
    updates.update({k: v for k, v in SCHEDULE.items() if k not in given})
    if "dropout" not in given:
        updates["dropout"] = parent.spec.dropout
    state = {k: v.detach().cpu().clone() for k, v in without_tta(parent.model).state_dict().items()}
    return replace(cfg, **updates), Start(parent.model_id, state)

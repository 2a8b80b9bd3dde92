"""Correcting for training data whose count mix is not the warehouse's.

Count-folder sets (e.g. ``abid-extra``: counts 1, 2, 4, 5 only) shift the prior a model learns:
trained on them as they are, it stops predicting the counts they lack. The target prior is the
label mix of the rows that come with records (the ABID-layout data, train and val), which is the
best estimate of what the cameras will see. Two corrections:

- ``logit_adjust`` (Menon et al., 2021): after training, add log(target / train prior) to the
  logits; folded into the head's bias, so the artifact and its ONNX export need nothing new;
- ``tempered``: the same shift scaled by the fraction of ``FRACTIONS`` that gives the best
  validation accuracy (validation is drawn from rows with records, so it has the target mix);
- ``class_weights``: weight each training image's loss by target / train prior of its class.

With every training row carrying a record the two priors are equal and both are no-ops. Neither
is the default: measured on dev + abid-extra, the full logit adjustment over-corrected (see
BENCHMARKS.md); ``train`` reports the uncorrected model beside the corrected one to check.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from binventory.model.classes import CountClasses

CORRECTIONS = ("none", "logit_adjust", "tempered", "class_weights")
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def class_prior(labels, classes: CountClasses) -> torch.Tensor:
    """Share of each count class, add-one smoothed so that no class has probability 0."""
    targets = classes.to_class(torch.as_tensor(list(labels), dtype=torch.long))
    counts = torch.bincount(targets, minlength=classes.num_classes).double() + 1
    return counts / counts.sum()


def prior_log_ratio(df: pd.DataFrame, classes: CountClasses) -> torch.Tensor | None:
    """log(target prior / training prior) per class, or None when the two are the same data."""
    ok = df[df.status == "ok"]
    train = ok[ok.split == "train"]
    target = ok[ok.split.isin(["train", "val"]) & ok.has_record]
    if target.empty or train.has_record.all():
        return None
    return (class_prior(target.label.astype(int), classes).log()
            - class_prior(train.label.astype(int), classes).log()).float()


def loss_weights(log_ratio: torch.Tensor | None, correction: str) -> torch.Tensor | None:
    """Per-class loss weights for ``class_weights`` (mean 1 under the training prior's classes)."""
    if correction != "class_weights" or log_ratio is None:
        return None
    return log_ratio.exp()


def logit_shift(log_ratio: torch.Tensor | None, correction: str) -> torch.Tensor | None:
    """What ``logit_adjust`` adds to the logits, or ``tempered`` before its fraction is chosen
    (None for the other corrections)."""
    return log_ratio if correction in ("logit_adjust", "tempered") and log_ratio is not None else None


def best_fraction(raw_logits: torch.Tensor, targets: torch.Tensor, shift: torch.Tensor) -> float:
    """The fraction of ``shift`` whose adjusted logits are most often right on validation (ties:
    the smaller fraction, the smaller change); argmax accuracy needs no temperature."""
    accuracy = [((raw_logits + f * shift).argmax(dim=1) == targets).float().mean().item()
                for f in FRACTIONS]
    return FRACTIONS[max(range(len(FRACTIONS)), key=lambda i: (accuracy[i], -i))]


def fold_into_head(model: nn.Module, shift: torch.Tensor) -> None:
    """Add ``shift`` to the bias of the model's last linear layer (the counting head)."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        head.bias += shift.to(head.bias)

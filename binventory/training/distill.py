"""Knowledge distillation (Hinton et al., 2015): a student that learns, beside the count labels,
the distribution its teachers give each training image, so one network serves what an ensemble
of several counts.

The teachers are trained binventory models (model.pt) with the student's classes. Each counts the
training images once, un-augmented, in its own preprocessing (TTA included when its artifact has
it), before the first epoch: the flips and small affines of training keep the count, so one soft
target per image serves every epoch, and the teachers cost one pass instead of one per step.
Under torchrun every rank counts all of them: its sampler may draw any image in a later epoch.

What the student learns is the mean of the teachers' logits *before* their prior correction
(each artifact folds its shift into the head; ``metrics.prior_shift`` says which): the student
trains on the training data's mix and gets its own correction after training, like any run.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from binventory import BinventoryError
from binventory.data.dataset import BinDataset
from binventory.model.artifact import CountingModel, load_artifact
from binventory.model.classes import CountClasses

log = logging.getLogger(__name__)


def load_teachers(distill_from: str, classes: CountClasses,
                  device: torch.device | str = "cpu") -> list[CountingModel]:
    """The teachers, checked against the student's classes (a soft target is one probability
    per class: a 0-5 teacher cannot teach a 0-15 student)."""
    teachers = []
    for path in [Path(p) for p in distill_from.split(",") if p]:
        teacher = load_artifact(path, device)
        if teacher.classes != classes:
            raise BinventoryError(
                f"--distill-from {path}: the teacher counts {', '.join(teacher.classes.names)} but "
                f"the student {', '.join(classes.names)}; train the student with the teacher's "
                "--min-count, --max-count and --overflow")
        teachers.append(teacher)
    return teachers


@torch.no_grad()
def raw_logits(teacher: CountingModel, df: pd.DataFrame, root: Path, split: str,
               cache_dir: str | None, batch_size: int, workers: int, progress: bool) -> torch.Tensor:
    """The teacher's logits for every image of ``split``, its prior correction taken out."""
    dataset = BinDataset(df, split, teacher.preprocess, None, cache_dir, root)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    device = next(teacher.model.parameters()).device
    out = [teacher.model(images.to(device)).float().cpu()
           for images, _ in tqdm(loader, desc=f"teacher {teacher.name}", unit="batch",
                                 leave=False, disable=None if progress else True)]
    logits = torch.cat(out)
    shift = teacher.metrics.get("prior_shift")
    return logits - torch.tensor(shift) if shift else logits


def soft_targets(teachers: list[CountingModel], df: pd.DataFrame, root: Path, temperature: float,
                 cache_dir: str | None = None, batch_size: int = 64, workers: int = 0,
                 progress: bool = True) -> torch.Tensor:
    """softmax(mean of the teachers' uncorrected logits / temperature) per training image."""
    logits = torch.stack([raw_logits(t, df, root, "train", cache_dir, batch_size, workers, progress)
                          for t in teachers]).mean(0)
    return (logits / temperature).softmax(dim=1)


class WithTargets(Dataset):
    """A training set whose items also carry the teachers' distribution: (image, count, probs);
    ``teacher_ids`` names the models it came from, for the student's metrics."""

    def __init__(self, dataset: BinDataset, targets: torch.Tensor, teacher_ids: list[str]):
        if len(dataset) != len(targets):
            raise ValueError(f"{len(targets)} soft targets for {len(dataset)} images")
        self.dataset, self.targets, self.teacher_ids = dataset, targets, teacher_ids

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, count = self.dataset[index]
        return image, count, self.targets[index]


class DistillLoss(nn.Module):
    """(1 - weight) * the counting loss on the labels + weight * T^2 * KL(teachers || student at
    temperature T); the T^2 keeps the soft term's gradients at the scale of the hard one's."""

    def __init__(self, base: nn.Module, weight: float = 0.5, temperature: float = 2.0):
        super().__init__()
        if not 0 <= weight <= 1 or temperature <= 0:
            raise BinventoryError(f"distillation needs 0 <= --distill-weight <= 1 and "
                                  f"--distill-temperature > 0, got {weight} and {temperature}")
        self.base, self.weight, self.temperature = base, weight, temperature

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                soft: torch.Tensor | None = None) -> torch.Tensor:
        hard = self.base(logits, target)
        if soft is None:
            return hard
        log_student = F.log_softmax(logits / self.temperature, dim=1)
        kl = F.kl_div(log_student, soft, reduction="batchmean")
        return (1 - self.weight) * hard + self.weight * self.temperature ** 2 * kl


def with_teachers(train_ds: BinDataset, df: pd.DataFrame, root: Path, cfg, classes: CountClasses,
                  device: torch.device) -> WithTargets:
    """The training set with the soft targets of ``cfg.distill_from``'s teachers."""
    teachers = load_teachers(cfg.distill_from, classes, device)
    log.info("distilling from %s: counting %d training images with each",
             ", ".join(t.model_id for t in teachers), len(train_ds))
    targets = soft_targets(teachers, df, root, cfg.distill_temperature, cfg.cache_dir or None,
                           cfg.batch_size * 2, cfg.workers, cfg.progress)
    return WithTargets(train_ds, targets, [t.model_id for t in teachers])

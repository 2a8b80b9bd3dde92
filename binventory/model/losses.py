"""Counting losses: plain cross-entropy, and two ordinal-aware variants.

Counting is ordinal: predicting 4 for a bin of 5 is better than predicting 0. Plain
cross-entropy does not know that; the variants add a term that grows with the distance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from binventory.model.classes import CountClasses

LOSSES = ("ce", "ordinal", "expected")


class CountingLoss(nn.Module):
    """``ce``: cross-entropy with label smoothing.
    ``ordinal``: ce + weight * squared Earth Mover's distance between predicted and true CDFs
    (Hou et al., 2016), which is zero only for the right count and grows with the distance.
    ``expected``: ce + weight * smooth-L1 between the expected count sum(p_k * k) and the truth.
    """

    def __init__(self, kind: str = "ordinal", classes: CountClasses | None = None,
                 label_smoothing: float = 0.1, weight: float = 1.0,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
        self.kind, self.label_smoothing, self.weight = kind, label_smoothing, weight
        self.register_buffer("counts", (classes or CountClasses()).counts, persistent=False)
        # Per-class weights of each image's loss (a prior correction); None = every image alike.
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing, reduction="none")
        if self.kind != "ce":
            probs = logits.float().softmax(dim=1)
            if self.kind == "ordinal":
                true_cdf = (torch.arange(logits.shape[1], device=target.device)[None, :]
                            >= target[:, None]).float()
                extra = ((probs.cumsum(dim=1) - true_cdf) ** 2).sum(dim=1)
            else:
                expected = probs @ self.counts.to(probs.device)
                extra = F.smooth_l1_loss(expected, self.counts[target], reduction="none")
            loss = loss + self.weight * extra
        if self.class_weights is None:
            return loss.mean()
        w = self.class_weights[target]
        return (loss * w).sum() / w.sum()

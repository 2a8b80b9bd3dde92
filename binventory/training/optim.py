"""The optimizer (AdamW, no decay on norms and biases, a faster head) and its schedule (linear
warmup, then cosine decay), per step."""
from __future__ import annotations

import math

import torch
from torch import nn

from binventory.training.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    head = {id(p) for p in _head(model).parameters()}
    groups = {"decay": [], "no_decay": [], "head": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in head:
            groups["head"].append(p)
        elif p.ndim <= 1:  # norms and biases: decaying them only hurts
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    return torch.optim.AdamW([
        {"params": groups["decay"], "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": groups["no_decay"], "weight_decay": 0.0, "lr": cfg.lr},
        {"params": groups["head"], "weight_decay": cfg.weight_decay, "lr": cfg.lr * cfg.head_lr_mult},
    ], lr=cfg.lr)


def _head(model: nn.Module) -> nn.Module:
    heads = [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2
             and isinstance(m[0], nn.Dropout) and isinstance(m[1], nn.Linear)]
    return heads[-1]


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

"""One optimisation step, the one copy that ``binventory train``, ``binventory profile``, the
diagnostics benchmark and the diagnostics tests all run, so that what is profiled or measured is
what trains: device transfer (channels_last), bf16 autocast on CUDA, the loss, backward, gradient
clipping, the optimizer, the learning-rate schedule and the EMA of the weights.

``phase(name)`` brackets the parts ("data", "forward", "backward", "optimizer") for a profiler;
``diag`` is a ``binventory.diagnostics.collect.Collector`` (or anything with its three step
hooks), called where gradients and updates can be read.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from binventory import BinventoryError

Phase = Callable[[str], AbstractContextManager]


def no_phase(name: str) -> AbstractContextManager:
    return nullcontext()


class NonFiniteLoss(BinventoryError):
    def __init__(self, value: float):
        super().__init__(f"loss became {value}: lower --lr or raise --clip-grad")
        self.value = value


@dataclass
class TrainStep:
    model: nn.Module  # as trained: DistributedDataParallel-wrapped under torchrun
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    to_targets: Callable[[torch.Tensor], torch.Tensor] = lambda counts: counts
    device: torch.device = torch.device("cpu")
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: torch.optim.swa_utils.AveragedModel | None = None
    clip_grad: float = 0.0
    amp: bool = False  # bf16 autocast, on CUDA only
    channels_last: bool = False
    # Off only where a diverging run is the point (the diagnostics' exploding-tensor test).
    check_finite: bool = True

    def __call__(self, images: torch.Tensor, counts: torch.Tensor, diag=None,
                 phase: Phase = no_phase, soft: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step on a batch; returns (loss, logits, targets). ``soft``: the teachers'
        distribution per image, for a distillation loss (binventory.training.distill)."""
        with phase("data"):
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = self.to_targets(counts).to(self.device)
            extra = () if soft is None else (soft.to(self.device),)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=self.amp and self.device.type == "cuda")
        with phase("forward"), autocast:
            logits = self.model(images)
            loss = self.loss_fn(logits.float(), targets, *extra)
        if diag is not None:
            diag.loss(loss)
        if self.check_finite and not torch.isfinite(loss):
            raise NonFiniteLoss(loss.item())
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if diag is not None:
            diag.after_backward()  # gradient norms before clipping
        with phase("optimizer"):
            if self.clip_grad > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(getattr(self.model, "module", self.model))
        if diag is not None:
            diag.after_step()
        return loss, logits, targets

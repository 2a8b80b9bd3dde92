"""Tiny training runs built to break one thing each, driven through the Collector like train.py."""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from binventory.diagnostics.collect import Collector
from binventory.diagnostics.rules import evaluate_rules
from binventory.training.step import TrainStep

DIM, CLASSES = 16, 3


def teacher_data(n: int, seed: int = 0, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels from a fixed linear teacher (learnable); noise flips that share of them."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(DIM, CLASSES, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, DIM, generator=g)
    y = (x @ teacher).argmax(1)
    flip = torch.rand(n, generator=g) < noise
    y[flip] = torch.randint(0, CLASSES, (int(flip.sum()),), generator=g)
    return x, y


def mlp(depth: int = 2, width: int = 32, act=nn.ReLU, init_scale: float = 1.0) -> nn.Sequential:
    layers, d = [], DIM
    for _ in range(depth - 1):
        layers += [nn.Linear(d, width), act()]
        d = width
    layers.append(nn.Linear(d, CLASSES))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(init_scale)
    return model


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> list:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return [(x[i], y[i]) for i in order.split(size)]


class SleepyDataset(Dataset):
    """Each item takes `delay` seconds: a slow decode with no worker processes to hide it."""

    def __init__(self, x, y, delay: float):
        self.x, self.y, self.delay = x, y, delay

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.x[i], self.y[i]


def run(model: nn.Module, train: tuple, val: tuple | None = None, epochs: int = 3, lr: float = 1e-2,
        batch_size: int = 32, sgd: bool = False, every: int = 2, loader=None,
        stop_on: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Train with training's own step (TrainStep); returns (data, {rule: finding}, collector)."""
    threads = torch.get_num_threads()
    # One thread: on a shared machine, OpenMP barriers across busy cores stall millisecond steps
    # for 50-100 ms, real step-time outliers that a test of the other rules must not see.
    torch.set_num_threads(1)
    try:
        return _run(model, train, val, epochs, lr, batch_size, sgd, every, loader, stop_on)
    finally:
        torch.set_num_threads(threads)


def _run(model, train, val, epochs, lr, batch_size, sgd, every, loader, stop_on):
    torch.manual_seed(0)
    opt = (torch.optim.SGD(model.parameters(), lr=lr) if sgd
           else torch.optim.Adam(model.parameters(), lr=lr))
    loss_fn = nn.CrossEntropyLoss()
    # A diverging run is what some of these tests are built to show: let it diverge.
    step = TrainStep(model, loss_fn, opt, check_finite=False)
    diag = Collector(every, stop_on)
    diag.attach(model, opt, labels=lambda y: y)
    for epoch in range(epochs):
        model.train()
        total = correct = seen = 0
        source = loader if loader is not None else batches(*train, batch_size, epoch)
        for xb, yb in diag.batches(source):
            loss, logits, _ = step(xb, yb, diag)
            total += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
        record = {"epoch": epoch + 1, "train_loss": total / seen, "train_accuracy": correct / seen}
        if val is not None:
            model.eval()
            with torch.no_grad():
                logits = model(val[0])
            record["val_nll"] = loss_fn(logits, val[1]).item()
            record["val_accuracy"] = (logits.argmax(1) == val[1]).float().mean().item()
        diag.end_epoch(record)
        if diag.should_stop():
            break
    diag.detach()
    return diag.data, {f.rule: f for f in evaluate_rules(diag.data)}, diag


def issues(findings: dict) -> set[str]:
    return {name for name, f in findings.items() if f.status == "issue_found"}


def sleepy_loader(x, y, delay: float, batch_size: int = 8) -> DataLoader:
    return DataLoader(SleepyDataset(x, y, delay), batch_size=batch_size, num_workers=0)

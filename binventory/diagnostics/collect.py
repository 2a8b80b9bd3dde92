"""Collect training diagnostics cheaply enough to leave on.

Every step costs two clock reads, one float and a CPU bincount of the labels. Every `every`-th
step (a "sample") also gathers per-layer gradient norms, weight norms, update/weight ratios,
activation statistics of a few layers, the learning rate, throughput and CPU/GPU use, with one
device synchronization for all the tensors. The training loop calls:

    diag.attach(model, optimizer)
    for images, counts in diag.batches(loader):   # times the data wait, picks sampled steps
        ... forward ...; diag.loss(loss); loss.backward(); diag.after_backward()
        ... clip, optimizer.step() ...; diag.after_step()
    diag.end_epoch(record); diag.should_stop(device)

Under DDP only rank 0 collects (enabled=False elsewhere) and ranks agree on stopping with one
all_reduce per epoch, which every rank reaches at the same point.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil
import torch
from torch import nn

from binventory import BinventoryError
from binventory.diagnostics.rules import RULE_NAMES, evaluate_rules, fired

log = logging.getLogger(__name__)
WATCHED_TYPES = (nn.Conv2d, nn.Linear)
MIN_CPU_INTERVAL_S = 0.5


def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    try:
        return list(torch._foreach_norm(tensors))
    except (AttributeError, RuntimeError):  # private API: fall back to the loop it replaces
        return [t.norm() for t in tensors]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pick_watched(model: nn.Module, n: int = 4) -> list[tuple[str, nn.Module]]:
    """First, last and evenly spaced conv/linear layers: enough to see signal shrink or grow."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, WATCHED_TYPES)]
    if len(layers) <= n:
        return layers
    picks = sorted({round(i * (len(layers) - 1) / (n - 1)) for i in range(n)})
    return [layers[i] for i in picks]


class Collector:
    def __init__(self, every: int = 20, stop_on: Iterable[str] = (), enabled: bool = True,
                 watch: int = 4):
        unknown = sorted(set(stop_on) - set(RULE_NAMES))
        if unknown:
            raise BinventoryError(f"unknown rules {unknown}: choose from {list(RULE_NAMES)}")
        self.every, self.stop_on = every, tuple(stop_on)
        self.enabled = enabled and every > 0
        self.watch, self.label_fn, self.optimizer = watch, None, None
        self.stopped_by: list[str] = []
        self.data = {
            "meta": {"every": every, "cores": _cores(), "started": time.time(),
                     "cuda": torch.cuda.is_available()},
            "steps": {k: [] for k in ("step", "epoch", "loss", "data_s", "compute_s")},
            "samples": [], "epochs": [], "labels": []}
        self.step, self.epoch, self.sampling = 0, 0, False
        self._params: list[tuple[str, torch.nn.Parameter]] = []
        self._activations: dict[str, torch.Tensor] = {}
        self._hooks, self._before, self._grads = [], None, None
        self._last_sample = (time.perf_counter(), 0)
        self._images = 0
        self._process = psutil.Process()

    # -- wiring -------------------------------------------------------------------------------
    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               labels: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """labels maps a batch's second element to class indices, to count the classes seen."""
        if not self.enabled:
            return
        self.optimizer, self.label_fn = optimizer, labels
        # Matrices and kernels only: one entry per layer; biases and norms would double the list.
        self._params = [(n.removesuffix(".weight"), p) for n, p in model.named_parameters()
                        if p.requires_grad and p.ndim > 1]
        self.data["meta"]["layers"] = [n for n, _ in self._params]
        self.data["meta"]["numel"] = {n: p.numel() for n, p in self._params}
        for name, module in pick_watched(model, self.watch):
            self._hooks.append(module.register_forward_hook(self._activation_hook(name)))
        self.data["meta"]["watched"] = [n for n, _ in pick_watched(model, self.watch)]
        self._process.cpu_percent(None)  # the first call only starts the clock
        psutil.cpu_percent(None)
        self._cpu_since = time.perf_counter()

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _activation_hook(self, name: str):
        def hook(module, inputs, output):
            if self.sampling and isinstance(output, torch.Tensor):
                x = output.detach().float()
                self._activations[name] = torch.stack([x.mean(), x.std(), (x == 0).float().mean(),
                                                       x.abs().max()])
        return hook

    # -- per step -----------------------------------------------------------------------------
    def batches(self, loader: Iterable) -> Iterator:
        if not self.enabled:
            yield from loader
            return
        it = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            ready = time.perf_counter()
            self.sampling = self.step % self.every == 0
            steps = self.data["steps"]
            steps["step"].append(self.step)
            steps["epoch"].append(self.epoch)
            steps["data_s"].append(ready - start)
            self._count_labels(batch)
            try:
                yield batch
            finally:
                # Runs when the loop asks for the next batch, and also if it died mid-step.
                steps["compute_s"].append(time.perf_counter() - ready)
                self.step += 1

    def _count_labels(self, batch) -> None:
        if self.label_fn is None or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return
        images, counts = batch[0], batch[1]
        self._images += len(images)
        hist = torch.bincount(self.label_fn(counts).flatten()).tolist()
        labels = self.data["labels"]
        labels.extend([0] * (len(hist) - len(labels)))
        for i, c in enumerate(hist):
            labels[i] += c

    def loss(self, loss: torch.Tensor) -> None:
        if self.enabled:
            self.data["steps"]["loss"].append(float(loss.detach()))

    def after_backward(self) -> None:
        """Gradient norms before clipping, and a copy of the weights to measure the update."""
        if not (self.enabled and self.sampling):
            return
        with torch.no_grad():
            present = [(n, p) for n, p in self._params if p.grad is not None]
            self._grads = ([n for n, _ in present], _norms([p.grad.detach() for _, p in present]))
            self._before = [p.detach().clone() for _, p in self._params]

    def after_step(self) -> None:
        if not (self.enabled and self.sampling):
            return
        with torch.no_grad():
            weights = [p.detach() for _, p in self._params]
            weight_norms = _norms(weights)
            update_norms = (_norms(torch._foreach_sub(weights, self._before))
                            if self._before is not None else [])
            grad_names, grad_norms = self._grads or ([], [])
            names = list(self._activations)
            flat = torch.cat([torch.stack(t).flatten().float().cpu() if t else torch.zeros(0)
                              for t in (weight_norms, update_norms, grad_norms,
                                        [self._activations[n] for n in names])]).tolist()
        self._record_sample(flat, grad_names, names)
        self._activations, self._before, self._grads = {}, None, None
        self.sampling = False

    def _record_sample(self, flat: list[float], grad_names: list[str], act_names: list[str]) -> None:
        layers = [n for n, _ in self._params]
        n = len(layers)
        weight, update = flat[:n], flat[n:2 * n]
        grads = flat[2 * n:2 * n + len(grad_names)]
        acts = flat[2 * n + len(grad_names):]
        now, images = time.perf_counter(), self._images
        since, images_then = self._last_sample
        self._last_sample = (now, images)
        sample = {
            "step": self.step, "epoch": self.epoch,
            "lr": self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None,
            "grad_norm": dict(zip(grad_names, grads)), "weight_norm": dict(zip(layers, weight)),
            "update_ratio": {name: u / w if w > 0 else math.inf
                             for name, u, w in zip(layers, update, weight)},
            "activations": {name: dict(zip(("mean", "std", "zeros", "absmax"), acts[4 * i:4 * i + 4]))
                            for i, name in enumerate(act_names)},
            "images_per_s": (images - images_then) / max(now - since, 1e-9) if self.step else None,
            "time": time.time() - self.data["meta"]["started"],
            **self._system()}
        self.data["samples"].append(sample)

    def _system(self) -> dict:
        out = {"cpu_percent": None, "process_cpu": None,
               "rss_mb": self._process.memory_info().rss / 2**20, "gpu_util": None, "gpu_mem_mb": None}
        # CPU shares come from tick counters (10 ms): over shorter intervals they read 0 or 200%.
        now = time.perf_counter()
        if now - self._cpu_since >= MIN_CPU_INTERVAL_S:
            out["cpu_percent"] = psutil.cpu_percent(None)
            out["process_cpu"] = self._process.cpu_percent(None)
            self._cpu_since = now
        if torch.cuda.is_available():
            out["gpu_mem_mb"] = torch.cuda.memory_allocated() / 2**20
            try:
                out["gpu_util"] = torch.cuda.utilization()
            except Exception:  # needs pynvml; memory alone is still worth reporting
                pass
        return out

    # -- per epoch ----------------------------------------------------------------------------
    def end_epoch(self, record: dict) -> None:
        self.epoch = record.get("epoch", self.epoch + 1)  # 1-based: the next epoch's index
        if self.enabled:
            self.data["epochs"].append({k: v for k, v in record.items()
                                        if isinstance(v, (int, float))})

    def should_stop(self, device: torch.device | str = "cpu") -> list[str]:
        """Rules named by --stop-on-issue that fired; every DDP rank gets rank 0's answer."""
        if not self.stop_on:
            return []
        hits = fired(evaluate_rules(self.data, self.stop_on)) if self.enabled else []
        flags = torch.tensor([float(name in hits) for name in self.stop_on], device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        self.stopped_by = [name for name, f in zip(self.stop_on, flags.tolist()) if f > 0]
        return self.stopped_by

    # -- output -------------------------------------------------------------------------------
    def close(self, output: str | Path) -> Path | None:
        """Write the report if anything was collected; a failure here must not hide the run's."""
        self.detach()
        if not (self.enabled and self.data["steps"]["step"]):
            return None
        try:
            path = self.write(output)
        except Exception:
            log.exception("could not write the diagnostics report")
            return None
        log.info("diagnostics report: %s", path)
        return path

    def write(self, output: str | Path) -> Path | None:
        """rules.json, diagnostics.json and report.html in output; None when not collecting."""
        if not self.enabled:
            return None
        from binventory.diagnostics.report import write_report

        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        self.data["meta"]["stopped_by"] = self.stopped_by
        findings = evaluate_rules(self.data)
        (output / "diagnostics.json").write_text(json.dumps(self.data, default=str))
        return write_report(self.data, findings, output)

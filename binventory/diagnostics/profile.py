"""Run a few training steps under torch.profiler: a Chrome/Perfetto trace and where the time goes.

The step profiled is training's own (``binventory.training.step.TrainStep``: clipping, the
schedule and the EMA included), split into data (waiting for the next batch and moving it to the
device), forward, backward and optimizer, both as profiler ranges (visible in the trace) and as
wall-clock times (in the summary). On GPU each phase ends with a synchronize so its time is its
own; that is why this is a separate command and not part of every training run.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule

PHASES = ("data", "forward", "backward", "optimizer")


def _cycle(loader: Iterable):
    while True:  # a short loader is restarted, as a new epoch would be
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the data loader yielded no batch")


def _top_operators(prof, n: int, cuda: bool) -> list[dict]:
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:n]
    return [{"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1000,
             "cpu_total_ms": e.cpu_time_total / 1000,
             **({"self_device_ms": getattr(e, "self_device_time_total", 0) / 1000} if cuda else {})}
            for e in rows]


def profile_steps(step: Callable, loader: Iterable, out: str | Path, steps: int = 10,
                  warmup: int = 2, device: torch.device | str = "cpu", top: int = 15) -> dict:
    """Profile `steps` calls of ``step(images, counts, phase=...)`` (a TrainStep) after `warmup`
    unrecorded ones; writes trace.json, summary.json and summary.txt (with the profiler's
    operator table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    times = {phase: [] for phase in PHASES}
    current = dict.fromkeys(PHASES, 0.0)
    captured: dict = {}

    @contextmanager
    def phase(name: str):
        start = time.perf_counter()
        with record_function(name):
            yield
            sync()
        current[name] += time.perf_counter() - start

    def on_ready(prof) -> None:
        prof.export_chrome_trace(str(out / "trace.json"))
        captured["top"] = _top_operators(prof, top, cuda)
        captured["table"] = prof.key_averages().table(
            sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=top)

    batches = _cycle(loader)  # the caller puts the model in training mode (frozen stages differ)
    with profile(activities=activities, schedule=schedule(wait=0, warmup=warmup, active=steps),
                 on_trace_ready=on_ready, acc_events=True) as prof:
        for i in range(warmup + steps):
            current.update(dict.fromkeys(PHASES, 0.0))
            with phase("data"):
                images, counts, *soft = next(batches)  # soft: distilling (--distill-from)
            step(images, counts, phase=phase, soft=soft[0] if soft else None)
            if i >= warmup:
                for name in PHASES:
                    times[name].append(current[name])
            prof.step()
    total = sum(sum(v) for v in times.values())
    summary = {
        "steps": steps, "warmup": warmup, "device": str(device),
        "step_ms": 1000 * total / steps,
        "phases": {p: {"mean_ms": 1000 * statistics.fmean(v), "share": sum(v) / total}
                   for p, v in times.items()},
        "top_operators": captured.get("top", []),
        "trace": str(out / "trace.json")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.txt").write_text(format_summary(summary) + "\n\n" + captured.get("table", ""))
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{summary['steps']} steps on {summary['device']}, {summary['step_ms']:.1f} ms per step"]
    for phase, p in summary["phases"].items():
        lines.append(f"  {phase:10s} {p['mean_ms']:9.2f} ms  {p['share']:6.1%}")
    lines.append("top operators by self time:")
    for op in summary["top_operators"][:10]:
        own = op.get("self_device_ms", op["self_cpu_ms"])
        lines.append(f"  {op['name'][:48]:48s} {op['calls']:6d} calls {own:10.2f} ms")
    lines.append(f"trace (open in https://ui.perfetto.dev or chrome://tracing): {summary['trace']}")
    return "\n".join(lines)

"""report.html (one self-contained file: plots are base64 PNGs) and rules.json for a training run."""
from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from pathlib import Path

from binventory.diagnostics.rules import ISSUE, NOT_ENOUGH, Finding

STATUS_COLOUR = {ISSUE: "#c62828", NOT_ENOUGH: "#757575", "ok": "#2e7d32"}
DPI = 72  # small PNGs keep a report of a long run well under a megabyte


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _moving_average(values: list[float], n: int) -> list[float]:
    out, total, window = [], 0.0, []
    for v in values:
        window.append(v)
        total += v
        if len(window) > n:
            total -= window.pop(0)
        out.append(total / len(window))
    return out


def plot_loss(data: dict) -> str:
    plt = _pyplot()
    steps = data["steps"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    pairs = [(s, v) for s, v in zip(steps["step"], steps["loss"]) if math.isfinite(v)]
    if pairs:
        xs, ys = zip(*pairs)
        ax.plot(xs, ys, color="tab:blue", alpha=0.3, lw=0.8, label="step loss")
        ax.plot(xs, _moving_average(list(ys), max(1, len(ys) // 20)), color="tab:blue", label="moving average")
    ax.set(xlabel="step", ylabel="training loss", title="loss per step")
    ax.legend(fontsize=8)
    epochs = data["epochs"]
    x = [e["epoch"] for e in epochs]
    for key, style in (("train_loss", "-o"), ("val_nll", "-s")):
        if any(key in e for e in epochs):
            ax2.plot(x, [e.get(key, math.nan) for e in epochs], style, label=key)
    twin = ax2.twinx()
    for key, style in (("train_accuracy", "--o"), ("val_accuracy", "--s")):
        if any(key in e for e in epochs):
            twin.plot(x, [e.get(key, math.nan) for e in epochs], style, color="gray", alpha=0.7, label=key)
    ax2.set(xlabel="epoch", ylabel="loss", title="per epoch (dashed: accuracy, right axis)")
    twin.set_ylim(0, 1)
    ax2.legend(fontsize=8, loc="upper left")
    twin.legend(fontsize=8, loc="upper right")
    return _png(fig)


def plot_layers(data: dict, key: str, title: str, ylabel: str) -> str:
    """One line per layer, coloured from input (dark) to output (yellow)."""
    plt = _pyplot()
    layers = data["meta"].get("layers", [])
    samples = [s for s in data["samples"] if s.get(key)]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    colours = plt.get_cmap("viridis")
    for i, name in enumerate(layers):
        points = [(s["step"], s[key][name]) for s in samples
                  if name in s[key] and math.isfinite(s[key][name]) and s[key][name] > 0]
        if points:
            xs, ys = zip(*points)
            label = name if i in (0, len(layers) // 2, len(layers) - 1) else None
            ax.plot(xs, ys, color=colours(i / max(1, len(layers) - 1)), lw=1, label=label)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def plot_activations(data: dict) -> str:
    plt = _pyplot()
    samples = [s for s in data["samples"] if s.get("activations")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    for name in data["meta"].get("watched", []):
        points = [(s["step"], s["activations"][name]) for s in samples if name in s["activations"]]
        if points:
            xs = [p[0] for p in points]
            ax.plot(xs, [p[1]["std"] for p in points], "-o", ms=2, label=name)
            ax2.plot(xs, [p[1]["zeros"] for p in points], "-o", ms=2, label=name)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="std", title="activation std of watched layers")
    ax2.set(xlabel="step", ylabel="share", title="share of exact zeros", ylim=(-0.02, 1.02))
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=7)
    return _png(fig)


def plot_utilization(data: dict) -> str:
    plt = _pyplot()
    samples = data["samples"]
    cores = data["meta"].get("cores") or 1
    t = [s["time"] for s in samples]
    cpu = [s for s in samples if s.get("process_cpu") is not None]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    ax.plot([s["time"] for s in cpu], [s["cpu_percent"] for s in cpu], label="machine CPU %")
    ax.plot([s["time"] for s in cpu], [s["process_cpu"] / cores for s in cpu],
            label=f"this process, % of {cores} cores")
    if any(s.get("gpu_util") is not None for s in samples):
        ax.plot(t, [s.get("gpu_util") for s in samples], label="GPU %")
    ax.set(xlabel="seconds", ylabel="%", ylim=(0, 105), title="utilization")
    ax.legend(fontsize=8)
    ax2.plot(t, [s["rss_mb"] for s in samples], label="process RSS MB")
    if any(s.get("gpu_mem_mb") is not None for s in samples):
        ax2.plot(t, [s.get("gpu_mem_mb") for s in samples], label="GPU allocated MB")
    speed = [(s["time"], s["images_per_s"]) for s in samples if s.get("images_per_s")]
    if speed:
        twin = ax2.twinx()
        twin.plot(*zip(*speed), "--", color="gray", label="images/s")
        twin.set_ylabel("images/s")
        twin.legend(fontsize=8, loc="lower right")
    ax2.set(xlabel="seconds", ylabel="MB", title="memory and throughput")
    ax2.legend(fontsize=8, loc="upper left")
    return _png(fig)


def plot_step_time(data: dict) -> str:
    plt = _pyplot()
    steps = data["steps"]
    n = min(len(steps["data_s"]), len(steps["compute_s"]))
    fig, ax = plt.subplots(figsize=(10, 3))
    x = steps["step"][:n]
    wait = [v * 1000 for v in steps["data_s"][:n]]
    compute = [v * 1000 for v in steps["compute_s"][:n]]
    ax.stackplot(x, wait, compute, labels=["waiting for data", "compute"], alpha=0.8)
    ax.set(xlabel="step", ylabel="ms", title="step time")
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def _rule_rows(findings: list[Finding]) -> str:
    rows = []
    for f in findings:
        colour = STATUS_COLOUR.get(f.status, "black")
        rows.append(f"<tr><td><code>{f.rule}</code></td><td style='color:{colour};font-weight:bold'>"
                    f"{f.status}</td><td>{html.escape(f.evidence)}</td>"
                    f"<td>{html.escape(f.advice)}</td></tr>")
    return "\n".join(rows)


def _summary(data: dict, findings: list[Finding]) -> str:
    steps = data["steps"]
    wall = sum(steps["data_s"]) + sum(steps["compute_s"])
    issues = [f.rule for f in findings if f.status == ISSUE]
    stopped = data["meta"].get("stopped_by") or []
    parts = [f"{len(steps['step'])} steps, {len(data['epochs'])} epochs, {wall:.1f} s in the loop, "
             f"sampled every {data['meta']['every']} steps ({len(data['samples'])} samples)",
             f"issues found: {', '.join(issues) if issues else 'none'}"]
    if stopped:
        parts.append(f"stopped early by --stop-on-issue: {', '.join(stopped)}")
    return "<br>".join(html.escape(p) for p in parts)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>binventory training report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9em; }}
td, th {{ border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }}
img {{ max-width: 100%; }} h2 {{ margin-top: 1.5em; }}
</style></head><body>
<h1>Training report</h1>
<p>{summary}</p><p style="color:#666">written {written} by binventory; rule results also in
<code>rules.json</code>, the collected series in <code>diagnostics.json</code>.</p>
<h2>Rules</h2>
<table><tr><th>rule</th><th>status</th><th>evidence</th><th>advice</th></tr>
{rules}
</table>
{plots}
</body></html>
"""


def render_html(data: dict, findings: list[Finding]) -> str:
    plots = [("Loss and accuracy", plot_loss(data)),
             ("Gradient norm per layer (before clipping)",
              plot_layers(data, "grad_norm", "gradient norm per layer", "L2 norm")),
             ("Update / weight ratio per layer",
              plot_layers(data, "update_ratio", "|update| / |weight| per layer", "ratio")),
             ("Weight norm per layer", plot_layers(data, "weight_norm", "weight norm per layer", "L2 norm")),
             ("Activations", plot_activations(data)),
             ("Step time", plot_step_time(data)),
             ("Utilization", plot_utilization(data) if data["samples"] else None)]
    body = "\n".join(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{png}'>"
                     for title, png in plots if png)
    return PAGE.format(summary=_summary(data, findings), rules=_rule_rows(findings), plots=body,
                       written=time.strftime("%Y-%m-%d %H:%M:%S"))


def write_report(data: dict, findings: list[Finding], output: Path) -> Path:
    (output / "rules.json").write_text(json.dumps(
        {"rules": [f.to_dict() for f in findings],
         "stopped_by": data["meta"].get("stopped_by") or []}, indent=2, default=str))
    path = output / "report.html"
    path.write_text(render_html(data, findings))
    return path

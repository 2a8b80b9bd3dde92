"""Diagnostic rules over the series a Collector gathered, in the spirit of SageMaker Debugger's.

Each rule is a small function of the collected data (a plain dict, see collect.Collector.data)
that returns a Finding: ok, issue_found or not_enough_data, with evidence and advice. Thresholds
are defaults chosen so that a healthy fine-tune fires none; each rule takes them as keywords.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

OK, ISSUE, NOT_ENOUGH = "ok", "issue_found", "not_enough_data"


@dataclass
class Finding:
    rule: str
    status: str
    evidence: str
    advice: str = ""
    values: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _finding(rule: str, fired: bool, evidence: str, advice: str, **values) -> Finding:
    return Finding(rule, ISSUE if fired else OK, evidence, advice if fired else "", values)


def _not_enough(rule: str, why: str) -> Finding:
    return Finding(rule, NOT_ENOUGH, why)


def _samples_with(data: dict, key: str) -> list[dict]:
    return [s for s in data["samples"] if s.get(key)]


def _rms(data: dict, sample: dict, key: str) -> dict[str, float]:
    """Norms divided by sqrt(numel): comparable across layers of different size."""
    sizes = data["meta"].get("numel", {})
    return {name: v / math.sqrt(sizes[name]) for name, v in sample[key].items() if sizes.get(name)}


def exploding_tensor(data: dict, max_norm: float = 1e8) -> Finding:
    rule = "exploding_tensor"
    bad = [(s, v) for s, v in zip(data["steps"]["step"], data["steps"]["loss"]) if not math.isfinite(v)]
    where = [f"loss {v} at step {s}" for s, v in bad[:3]]
    for sample in data["samples"]:
        for kind in ("grad_norm", "weight_norm"):
            for name, v in sample.get(kind, {}).items():
                if not math.isfinite(v) or v > max_norm:
                    where.append(f"{kind} of {name} = {v:.3g} at step {sample['step']}")
        for name, stats in sample.get("activations", {}).items():
            if not all(math.isfinite(x) for x in stats.values()):
                where.append(f"activations of {name} not finite at step {sample['step']}")
    if not data["steps"]["loss"]:
        return _not_enough(rule, "no training step was recorded")
    evidence = ("; ".join(where[:4]) + (f" (+{len(where) - 4} more)" if len(where) > 4 else "")
                if where else f"loss, gradients, weights and activations finite and below "
                              f"{max_norm:.0e} over {len(data['steps']['loss'])} steps")
    return _finding(rule, bool(where), evidence,
                    "lower --lr, keep --clip-grad on, check inputs for NaN; with bf16 try --no-amp",
                    count=len(where))


def vanishing_gradient(data: dict, min_rms: float = 1e-7, max_spread: float = 1e5,
                       skip: int = 1) -> Finding:
    rule = "vanishing_gradient"
    samples = _samples_with(data, "grad_norm")[skip:] or _samples_with(data, "grad_norm")
    if not samples:
        return _not_enough(rule, "no gradient norms were sampled")
    vanished, spreads = 0, []
    worst = None
    for sample in samples:
        rms = {k: v for k, v in _rms(data, sample, "grad_norm").items() if math.isfinite(v)}
        if not rms:
            continue
        low_name = min(rms, key=rms.get)
        low, high = rms[low_name], max(rms.values())
        spreads.append(high / max(low, 1e-30))
        if low < min_rms or spreads[-1] > max_spread:
            vanished += 1
            worst = worst or (low_name, low, spreads[-1], sample["step"])
    # Most samples, not one: a single tiny gradient right after a zeroed layer is not a pattern.
    fired = vanished > len(samples) / 2
    if fired:
        name, low, spread, step = worst
        evidence = (f"{vanished}/{len(samples)} samples have a layer gradient RMS below {min_rms:.0e} "
                    f"or a largest/smallest ratio above {max_spread:.0e}; e.g. {name}: {low:.2e} "
                    f"(ratio {spread:.1e}) at step {step}")
    else:
        median = statistics.median(spreads) if spreads else float("nan")
        evidence = f"median largest/smallest layer gradient RMS ratio {median:.1e} over {len(samples)} samples"
    return _finding(rule, fired, evidence,
                    "use ReLU-family activations and normalization layers, residual connections, "
                    "a standard initialization (Kaiming/Xavier), or a pretrained backbone",
                    vanished=vanished, samples=len(samples))


def poor_weight_initialization(data: dict, max_spread: float = 1e3, min_std: float = 1e-3,
                               max_grad_spread: float = 1e5) -> Finding:
    """Looks only at the first sample, before training has had a chance to repair anything:
    activations that shrink or grow across layers, or gradients that cannot reach early layers."""
    rule = "poor_weight_initialization"
    first = next((s for s in data["samples"] if s.get("activations")), None)
    if first is None:
        return _not_enough(rule, "no activation statistics were sampled")
    stds = {name: a["std"] for name, a in first["activations"].items() if math.isfinite(a["std"])}
    if len(stds) < 2:
        return _not_enough(rule, "fewer than two watched layers")
    high, low = max(stds.values()), min(stds.values())
    low_name = min(stds, key=stds.get)
    spread = high / max(low, 1e-30)
    grad_note, grad_spread = "", 1.0
    grads = {k: v for k, v in _rms(data, first, "grad_norm").items() if math.isfinite(v)}
    if grads:
        grad_spread = max(grads.values()) / max(min(grads.values()), 1e-30)
        grad_note = (f"; layer gradient RMS from {min(grads.values()):.1e} to "
                     f"{max(grads.values()):.1e}, ratio {grad_spread:.1e}")
    fired = spread > max_spread or low < min_std or grad_spread > max_grad_spread
    evidence = (f"at step {first['step']} activation std ranges from {low:.2e} ({low_name}) to "
                f"{high:.2e}, ratio {spread:.1e}{grad_note}")
    return _finding(rule, fired, evidence,
                    "initialize with the scheme made for the activation (Kaiming for ReLU, Xavier "
                    "for tanh/sigmoid), add normalization layers, or start from pretrained weights",
                    spread=spread, min_std=low, grad_spread=grad_spread)


def loss_not_decreasing(data: dict, min_steps: int = 10, min_decrease: float = 0.05,
                        z: float = 2.0) -> Finding:
    """First quarter of the steps against the last quarter; the drop must beat the noise."""
    rule = "loss_not_decreasing"
    losses = [v for v in data["steps"]["loss"] if math.isfinite(v)]
    if len(losses) < min_steps:
        return _not_enough(rule, f"{len(losses)} finite losses, {min_steps} needed")
    window = max(len(losses) // 4, min_steps // 2)
    first, last = losses[:window], losses[-window:]
    m1, m2 = statistics.fmean(first), statistics.fmean(last)
    noise = math.sqrt(statistics.pvariance(first) / len(first) + statistics.pvariance(last) / len(last))
    needed = max(min_decrease * abs(m1), z * noise)
    fired = m1 - m2 < needed
    evidence = (f"mean loss {m1:.4f} over the first {window} steps, {m2:.4f} over the last "
                f"{window}: a drop of {m1 - m2:.4f} where {needed:.4f} was needed")
    return _finding(rule, fired, evidence,
                    "check that labels match images (a shuffled or constant label gives this), "
                    "raise --lr if it is tiny, unfreeze layers (--freeze 0)",
                    first=m1, last=m2, needed=needed)


def overfit(data: dict, max_gap: float = 0.25, min_epochs: int = 2) -> Finding:
    """Train accuracy far above validation accuracy: the model learns the images, not counting."""
    rule = "overfit"
    epochs = [e for e in data["epochs"] if "train_accuracy" in e and "val_accuracy" in e]
    if len(epochs) < min_epochs:
        return _not_enough(rule, f"{len(epochs)} epochs with validation, {min_epochs} needed")
    last = epochs[-1]
    gap = last["train_accuracy"] - last["val_accuracy"]
    evidence = (f"epoch {last['epoch']}: train accuracy {last['train_accuracy']:.3f}, "
                f"validation {last['val_accuracy']:.3f}, gap {gap:.3f} (limit {max_gap})")
    return _finding(rule, gap > max_gap, evidence,
                    "more data or stronger augmentation, more --dropout or --weight-decay, fewer "
                    "epochs or --patience, freeze early stages (--freeze)", gap=gap)


def overtraining(data: dict, patience: int = 3, min_rise: float = 0.05) -> Finding:
    """Validation loss has risen above its best and stayed there for `patience` epochs."""
    rule = "overtraining"
    losses = [(e["epoch"], e["val_nll"]) for e in data["epochs"]
              if math.isfinite(e.get("val_nll", float("nan")))]
    if len(losses) < patience + 1:
        return _not_enough(rule, f"{len(losses)} epochs with validation loss, {patience + 1} needed")
    best_epoch, best = min(losses, key=lambda x: x[1])
    after = [v for e, v in losses if e > best_epoch]
    fired = len(after) >= patience and all(v > best * (1 + min_rise) for v in after[-patience:])
    evidence = (f"best validation loss {best:.4f} at epoch {best_epoch}; {len(after)} epochs since, "
                f"last {losses[-1][1]:.4f}")
    return _finding(rule, fired, evidence,
                    "stop earlier (--patience) and keep the best checkpoint (done by default), "
                    "regularize more, or lower --epochs", best_epoch=best_epoch)


def class_imbalance(data: dict, max_ratio: float = 10.0, min_labels: int = 50) -> Finding:
    rule = "class_imbalance"
    counts = data.get("labels") or []
    total = sum(counts)
    if total < min_labels:
        return _not_enough(rule, f"{total} training labels seen, {min_labels} needed")
    present = [c for c in counts if c > 0]
    ratio = max(counts) / max(min(counts), 1)
    missing = [i for i, c in enumerate(counts) if c == 0]
    share = ", ".join(f"{i}: {c / total:.1%}" for i, c in enumerate(counts))
    fired = ratio > max_ratio or bool(missing)
    evidence = (f"label shares per class {share}; most/least frequent {ratio:.1f}"
                + (f"; classes never seen: {missing}" if missing else ""))
    return _finding(rule, fired, evidence,
                    "re-balance with a weighted sampler or class weights, merge rare count "
                    "classes (--max-count), or collect more of the rare counts",
                    ratio=ratio, classes_present=len(present))


def dataloader_bottleneck(data: dict, max_share: float = 0.3, min_steps: int = 5) -> Finding:
    rule = "dataloader_bottleneck"
    wait, compute = data["steps"]["data_s"][1:], data["steps"]["compute_s"][1:]
    if len(wait) < min_steps:
        return _not_enough(rule, f"{len(wait)} steps after the first, {min_steps} needed")
    share = sum(wait) / max(sum(wait) + sum(compute), 1e-12)
    evidence = (f"waiting for data took {share:.0%} of step time ({sum(wait):.2f} s of "
                f"{sum(wait) + sum(compute):.2f} s over {len(wait)} steps; limit {max_share:.0%})")
    return _finding(rule, share > max_share, evidence,
                    "raise --workers, keep --cache-dir on (decoded, resized images), lower "
                    "--image-size, or move augmentation off the critical path", share=share)


def low_utilization(data: dict, min_share: float = 0.25, min_samples: int = 3) -> Finding:
    """GPU busy share when there is a GPU, else this process's share of the cores it may use."""
    rule = "low_utilization"
    gpu = [s["gpu_util"] for s in data["samples"] if s.get("gpu_util") is not None]
    if gpu:
        values, what = [g / 100 for g in gpu], "GPU utilization"
    else:
        cores = data["meta"].get("cores") or 1
        values = [s["process_cpu"] / 100 / cores for s in data["samples"]
                  if s.get("process_cpu") is not None]
        what = f"process CPU use of {cores} cores"
    if len(values) < min_samples:
        return _not_enough(rule, f"{len(values)} utilization samples, {min_samples} needed")
    median = statistics.median(values)
    evidence = f"median {what} {median:.0%} over {len(values)} samples (limit {min_share:.0%})"
    return _finding(rule, median < min_share, evidence,
                    "the step waits on something else: look at dataloader_bottleneck, raise "
                    "--batch-size, or run 'binventory profile' to see where the time goes",
                    median=median)


def step_time_outliers(data: dict, factor: float = 3.0, floor_s: float = 0.05,
                       max_share: float = 0.05, min_steps: int = 20) -> Finding:
    """Compute time (data wait excluded: it has its own rule) far above the median step."""
    rule = "step_time_outliers"
    times = data["steps"]["compute_s"][1:]  # the first step pays for lazy initialization
    if len(times) < min_steps:
        return _not_enough(rule, f"{len(times)} steps after the first, {min_steps} needed")
    median = statistics.median(times)
    # The floor keeps scheduler jitter on millisecond CPU steps from counting as an outlier.
    limit = max(factor * median, median + floor_s)
    slow = [(i + 1, t) for i, t in enumerate(times) if t > limit]
    share = len(slow) / len(times)
    examples = ", ".join(f"step {i}: {t * 1000:.0f} ms" for i, t in slow[:3])
    evidence = (f"{len(slow)}/{len(times)} steps above {limit * 1000:.0f} ms (median "
                f"{median * 1000:.1f} ms)" + (f"; {examples}" if slow else ""))
    return _finding(rule, share > max_share, evidence,
                    "look for other jobs on the machine or more torch threads than free cores "
                    "(OMP_NUM_THREADS), memory pressure (swap), periodic work in the loop, or "
                    "variable input sizes; 'binventory profile' shows the steps",
                    share=share)


RULES: dict[str, Callable[[dict], Finding]] = {f.__name__: f for f in (
    vanishing_gradient, exploding_tensor, poor_weight_initialization, loss_not_decreasing,
    overfit, overtraining, class_imbalance, dataloader_bottleneck, low_utilization,
    step_time_outliers)}
RULE_NAMES = tuple(RULES)


def evaluate_rules(data: dict, names: tuple[str, ...] = RULE_NAMES) -> list[Finding]:
    return [RULES[name](data) for name in names]


def fired(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings if f.status == ISSUE]

"""``binventory evaluate``: metrics of a model artifact on a manifest split, with plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from binventory.data.dataset import BinDataset
from binventory.data.split import PROTOCOLS
from binventory.model.artifact import load_artifact
from binventory.model.metrics import evaluate_logits, evaluate_many, protocol_view, reliability_bins


def plot_confusion(confusion: list[list[int]], names: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.8 + 0.6 * len(names)))
    ax.imshow(matrix / np.maximum(matrix.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > matrix[i].sum() / 2 else "black")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names,
           yticklabels=names, xlabel="predicted count", ylabel="true count", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(bins: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(bins["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    accuracy = [a if a is not None else 0 for a in bins["accuracy"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centers, accuracy, width=width * 0.9, label="accuracy", color="tab:blue")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def evaluate_artifact(model_path: str | Path, manifest: str | Path, split: str, out: str | Path,
                      protocols: list[str], batch_size: int = 64, workers: int = 2,
                      progress: bool = True) -> dict:
    """Evaluate an artifact on one split; writes metrics.json and PNG plots under out."""
    counter = load_artifact(model_path)
    ds = BinDataset(manifest, split, counter.preprocess)
    logits, counts = [], []
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    for images, c in tqdm(loader, desc="evaluate", unit="batch", disable=None if progress else True):
        logits.append(counter.model(images).float())
        counts.append(c)
    logits, counts = torch.cat(logits), torch.cat(counts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": str(model_path), "model_version": counter.model_id, "split": split,
               "temperature": counter.temperature, "protocols": {}}
    for name in protocols:
        m = evaluate_logits(logits, counts, counter.classes, counter.temperature, PROTOCOLS[name])
        if not m.get("n"):
            continue
        view, targets, _, _ = protocol_view(logits, counts, counter.classes, PROTOCOLS[name])
        probs = (view / counter.temperature).softmax(1).numpy()
        m["reliability"] = reliability_bins(probs, targets.numpy())
        plot_confusion(m["confusion"], m["class_names"], out / f"confusion_{name}.png",
                       f"{name}: accuracy {m['accuracy']:.1%}, n={m['n']}")
        plot_reliability(m["reliability"], out / f"reliability_{name}.png",
                         f"{name}: ECE {m['ece']:.3f} (T={counter.temperature:.2f})")
        results["protocols"][name] = m
    many = evaluate_many(logits, counts, counter.classes, counter.temperature)
    if many is not None:
        results["protocols"]["6-15"] = many
    # The training run's diagnostics report (binventory.diagnostics) sits beside its model.pt.
    training_report = Path(model_path).parent / "report.html"
    if training_report.is_file():
        results["training_report"] = str(training_report)
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    return results

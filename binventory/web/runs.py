"""What the model page shows from a training run's folder (the folder of the model's artifact):
training curves (metrics.jsonl), the evaluation of ``binventory evaluate`` (eval-*/metrics.json and
its confusion/reliability PNGs) and the diagnostics report (report.html, rules.json).

Files are served only by name patterns known here, never by a path from the request."""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

from binventory.web.charts import line_chart, percent

log = logging.getLogger(__name__)

EVAL_DIR = re.compile(r"^eval-[A-Za-z0-9_-]{1,64}$")
EVAL_IMAGE = re.compile(r"^(confusion|reliability)_[A-Za-z0-9_-]{1,64}\.png$")
REPORT = "report.html"
HEADLINE = ("accuracy", "within1", "mae", "rmse", "ece")
# Plain words for the metrics, and what the abbreviation means for whoever hovers over them.
METRICS = {
    "n": ("photos", "n: the number of test photos"),
    "accuracy": ("exact count", "accuracy: share of photos whose count is exactly right"),
    "within1": ("within one item", "within-1 accuracy: share of photos counted to within one item"),
    "mae": ("average miss, items", "MAE: mean absolute error, in items"),
    "rmse": ("typical miss, items", "RMSE: root mean squared error, in items (large misses weigh more)"),
    "nll": ("log loss", "NLL: negative log-likelihood of the true count (lower is better)"),
    "ece": ("confidence gap", "ECE: expected calibration error, how far the stated confidence is "
                              "from the accuracy (15 confidence bins)"),
}
SHARES = ("accuracy", "within1", "ece")
EVALUATION = ("n", "accuracy", "within1", "mae", "rmse", "nll", "ece")
CURVES = {"train_loss": "training loss", "val_nll": "validation log loss",
          "train_accuracy": "training exact count", "val_accuracy": "validation exact count",
          "val_within1": "validation within one item", "val_mae": "validation average miss",
          "val_rmse": "validation typical miss"}


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


def run_dir(model_path: str | None) -> Path | None:
    return Path(model_path).parent if model_path else None


def cells(block: dict, keys=EVALUATION) -> list[dict]:
    """A metrics block as table cells: plain label, the abbreviation's meaning, formatted value."""
    out = []
    for k in keys:
        v = block.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        label, tip = METRICS[k]
        value = f"{v:.1%}" if k in SHARES else f"{v:,}" if k == "n" else f"{v:.3f}"
        out.append({"key": k, "label": label, "tip": tip, "value": value})
    return out


def _protocol_block(blocks) -> tuple[str | None, dict | None]:
    """The first evaluation protocol's block (the one ``binventory evaluate`` reports first)."""
    if not isinstance(blocks, dict):
        return None, None
    for name, block in blocks.items():
        if name not in ("all", "6-15") and isinstance(block, dict) and block.get("n"):
            return name, block
    return None, None


def headline(metrics: dict | None) -> dict:
    """Exact-count accuracy, average miss, ... of the model: on the test split when it has one,
    else on validation; within the first evaluation protocol when training evaluated one, so
    that the overview, the model page and its evaluation report show one figure each."""
    if not isinstance(metrics, dict):
        return {}
    for split, blocks, fallback in (("test", metrics.get("test"), None),
                                    ("validation", metrics.get("val_protocols"), metrics.get("val"))):
        protocol, block = _protocol_block(blocks)
        if block is None:
            block = blocks.get("all") if split == "test" and isinstance(blocks, dict) else fallback
        if isinstance(block, dict):
            found = cells(block, HEADLINE)
            if found:
                return {"split": split, "protocol": protocol, "n": block.get("n"), "cells": found,
                        "values": {c["key"]: block[c["key"]] for c in found}}
    return {}


def curves(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), (int, float)):
            rows.append(row)
    return rows


def series(rows: list[dict], keys: list[str]) -> list[tuple[str, list]]:
    out = []
    for key in keys:
        pts = [(r["epoch"], float(r[key])) for r in rows
               if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if pts:
            out.append((CURVES.get(key, key), pts))
    return out


def evaluations(folder: Path) -> list[dict]:
    """Each eval-* folder: its protocols' metrics, confusion matrices and image names."""
    out = []
    try:
        dirs = sorted(p for p in folder.iterdir() if p.is_dir() and EVAL_DIR.match(p.name))
    except OSError:
        return out
    for d in dirs:
        data = _json(d / "metrics.json") if (d / "metrics.json").is_file() else None
        images = sorted(p.name for p in d.iterdir() if EVAL_IMAGE.match(p.name))
        protocols = []
        if isinstance(data, dict) and isinstance(data.get("protocols"), dict):
            for name, m in data["protocols"].items():
                if isinstance(m, dict):
                    protocols.append({"name": name, "metrics": m, "cells": cells(m),
                                      "confusion": _confusion(m),
                                      "reliability": _reliability(m),
                                      "images": [i for i in images if i.endswith(f"_{name}.png")]})
        out.append({"folder": d.name, "split": (data or {}).get("split", d.name[5:]),
                    "protocols": protocols, "images": images, "readable": data is not None})
    return out


def _confusion(m: dict) -> dict | None:
    matrix, names = m.get("confusion"), m.get("class_names")
    if not (isinstance(matrix, list) and isinstance(names, list) and len(matrix) == len(names)):
        return None
    top = max((v for row in matrix for v in row), default=0) or 1
    return {"names": names, "rows": [[(v, v / top) for v in row] for row in matrix]}


def _reliability(m: dict):
    """Accuracy against confidence per bin, with the diagonal a calibrated model follows."""
    r = m.get("reliability")
    if not isinstance(r, dict):
        return None
    pts = [(c, a) for c, a in zip(r.get("confidence") or [], r.get("accuracy") or [])
           if isinstance(c, (int, float)) and isinstance(a, (int, float))]
    if not pts:
        return None
    return line_chart([("accuracy", pts), ("perfect calibration", [(0, 0), (1, 1)])],
                      title="Reliability: accuracy per confidence bin", x_label="confidence",
                      y_range=(0, 1), y_format=percent, x_ticks=[(x / 4, f"{x / 4:.0%}") for x in range(5)],
                      width=420, height=260)


def diagnostics(folder: Path) -> dict:
    rules = _json(folder / "rules.json") if (folder / "rules.json").is_file() else None
    return {"report": (folder / REPORT).is_file(),
            "rules": rules.get("rules", []) if isinstance(rules, dict) else [],
            "stopped_by": rules.get("stopped_by", []) if isinstance(rules, dict) else []}


def load(model_path: str | None) -> dict:
    folder = run_dir(model_path)
    if folder is None or not folder.is_dir():
        return {"folder": str(folder) if folder else None, "exists": False}
    rows = curves(folder / "metrics.jsonl")
    return {"folder": str(folder), "exists": True, "epochs": len(rows), "curves": rows,
            "evaluations": evaluations(folder), "diagnostics": diagnostics(folder)}


def eval_image(model_path: str | None, folder: str, name: str) -> Path | None:
    base = run_dir(model_path)
    if base is None or not EVAL_DIR.match(folder) or not EVAL_IMAGE.match(name):
        return None
    path = base / folder / name
    return path if path.is_file() else None


def report(model_path: str | None) -> Path | None:
    base = run_dir(model_path)
    path = base / REPORT if base else None
    return path if path is not None and path.is_file() else None

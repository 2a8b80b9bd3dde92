"""The count-folder layout: ``<root>/[images/]<count>/<id>.jpg``, optionally with ``labels.csv``.

This is how the Udacity capstone projects and many SageMaker pipelines keep ABID images: the
folder name is the count and there is no metadata JSON, so the rows carry a label but no record
(no SKU lines for the record verifier). A ``labels.csv`` (``image_id,count``), when present, must
agree with the folders; an image it disagrees with, or one filed under two counts, is reported.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg")


def count_folder_base(root: Path) -> Path | None:
    """The folder whose sub-folders are named by counts (root or root/images), else None."""
    for base in (root / "images", root):
        if not base.is_dir():
            continue
        names = [e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith(".")]
        if names and all(n.isdigit() for n in names):
            return base
    return None


def read_labels(path: Path) -> tuple[dict[str, int], list[str]]:
    """``image_id -> count`` from labels.csv, and the problems found reading it."""
    labels: dict[str, int] = {}
    problems: list[str] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"image_id", "count"} <= set(reader.fieldnames):
            return {}, [f"{path.name} needs the columns image_id and count"]
        for line, row in enumerate(reader, start=2):
            image_id, count = (row["image_id"] or "").strip(), (row["count"] or "").strip()
            if not count.isdigit():
                problems.append(f"{path.name} line {line}: count {count!r} is not a number")
                continue
            labels[image_id] = int(count)
    return labels, problems


def scan_count_folders(root: Path, base: Path) -> tuple[list[tuple[str, str, int]], list[str]]:
    """``(image_id, relative path, folder count)`` per image, and files outside the layout."""
    items, unexpected = [], []
    for folder in sorted(os.scandir(base), key=lambda e: e.name):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        for entry in sorted(os.scandir(folder.path), key=lambda e: e.name):
            rel = Path(entry.path).relative_to(root).as_posix()
            if entry.name.startswith(".") or not entry.is_file():
                continue
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in IMAGE_SUFFIXES:
                items.append((stem, rel, int(folder.name)))
            else:
                unexpected.append(rel)
    return items, unexpected


def label_problems(items: list[tuple[str, str, int]], labels: dict[str, int] | None) -> dict[str, str]:
    """Why an image's label cannot be trusted: filed under two counts, or labels.csv disagrees."""
    folders: dict[str, set[int]] = {}
    for image_id, _, count in items:
        folders.setdefault(image_id, set()).add(count)
    problems = {i: f"filed under several counts: {sorted(c)}" for i, c in folders.items() if len(c) > 1}
    for image_id, _, count in items:
        if labels is not None and image_id not in problems:
            if image_id not in labels:
                problems[image_id] = f"not listed in {LABELS_FILE}"
            elif labels[image_id] != count:
                problems[image_id] = f"{LABELS_FILE} says {labels[image_id]}, its folder says {count}"
    return problems

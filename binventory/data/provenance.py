"""What a model was trained on: real bin photos or the synthetic generator's drawings.

``binventory data synth`` leaves a marker file at the root of what it writes; a manifest's
images under a folder holding one are synthetic. Training stores ``summarize_training_data`` in
the artifact (``metrics["training_data"]``), so that the model page and ``/readyz`` can say
plainly when a model that has only seen drawings is judging real photos.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path, PurePosixPath

from binventory.files import atomic_write_bytes

MARKER = "SYNTHETIC.json"
SPLITS = ("train", "val", "test")


def mark_synthetic(root: str | Path, **about) -> Path:
    """Say of a folder that binventory drew its bins (``about``: seed, count, ...)."""
    path = Path(root) / MARKER
    text = json.dumps({"generator": "binventory data synth", **about}, indent=2) + "\n"
    atomic_write_bytes(path, text.encode())
    return path


def synthetic_images(root: str | Path, image_paths) -> list[bool]:
    """Per image path (relative to ``root``): whether a folder between it and ``root`` is marked."""
    root = Path(root)

    @lru_cache(maxsize=None)
    def marked(folder: PurePosixPath) -> bool:
        if (root / folder / MARKER).is_file():
            return True
        return folder != folder.parent and marked(folder.parent)

    return [isinstance(p, str) and marked(PurePosixPath(p).parent) for p in image_paths]


def summarize_training_data(df, root: str | Path) -> dict:
    """The valid images of a manifest frame per split, how many are synthetic, and ``kind``:
    "synthetic" (all of them), "real" (none) or "mixed"."""
    valid = df[df.status == "ok"]
    synthetic = synthetic_images(root, list(valid.image_path))
    n, n_synthetic = len(valid), sum(synthetic)
    splits = ({s: int((valid.split == s).sum()) for s in SPLITS} if "split" in valid.columns
              else {})
    kind = "real" if n_synthetic == 0 else "synthetic" if n_synthetic == n else "mixed"
    return {"kind": kind, "images": n, "synthetic_images": n_synthetic, "splits": splits,
            "root": str(root)}


def training_data_warning(summary: dict | None) -> str | None:
    """One plain sentence when a model learned from synthetic bins only, else None."""
    if not isinstance(summary, dict) or summary.get("kind") != "synthetic":
        return None
    return (f"This model was trained on synthetic bins only ({summary.get('images', 0):,} drawn "
            "images, no real photo): its counts of real bin photos, and the decisions made on "
            "them, are not to be trusted. Train on real photos before using it on the floor.")


def describe_training_data(summary: dict | None) -> str:
    """What a model learned from, in words: "real photos: 6,965 images (train 5,572, ...)"."""
    if not isinstance(summary, dict) or summary.get("kind") not in ("real", "synthetic", "mixed"):
        return "not recorded (the artifact predates binventory saying so)"
    n, n_synthetic = int(summary.get("images", 0)), int(summary.get("synthetic_images", 0))
    splits = ", ".join(f"{s} {v:,}" for s, v in (summary.get("splits") or {}).items())
    what = {"real": f"real photos: {n:,} images",
            "synthetic": f"synthetic bins only: {n:,} drawn images",
            "mixed": f"{n - n_synthetic:,} real photos and {n_synthetic:,} synthetic bins"}[summary["kind"]]
    return what + (f" ({splits})" if splits else "")

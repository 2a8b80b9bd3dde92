"""A tiny counting model and photo-like images, for tests that need a real Predictor."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from binventory.data.preprocess import Preprocess
from binventory.model.artifact import save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import create_model


def image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    """A small photo-like image whose colour depends on the seed (so counts differ by image)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 40, (30, 40, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def save_tiny_model(path: Path, name: str = "test-v1", seed: int = 0,
                    classes: CountClasses = CountClasses(0, 5, True), favour: int | None = None,
                    image_size: int = 32) -> Path:
    """An untrained MobileNetV2 on ``image_size`` px images, classes 0..5 and 6+ unless told (seed: its
    weights). ``favour``: a class index every image is predicted as (most of the mass on it)."""
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", classes.num_classes, weights="none")
    preprocess = Preprocess(image_size=image_size)
    # Freshly initialized batch norm squashes the differences between images to ~1e-9, so every
    # image would get the same probabilities and a mixed-up batch could not be noticed.
    # Statistics from one pass over photo-like images keep the outputs image-dependent.
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.reset_running_stats()
                bn.momentum = None
        model.train()
        model(torch.stack([preprocess(image_bytes(1000 + i)) for i in range(32)]))
        model.eval()
        if favour is not None:
            [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].bias[favour] += 20.0
    save_artifact(path, model, classes=classes, preprocess=preprocess,
                  temperature=1.3, name=name)
    return path

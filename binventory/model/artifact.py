"""The model artifact: one file with weights, architecture, class mapping, preprocessing,
temperature, training config, metrics and the data manifest's hash.

It loads for inference with no training code and no training config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from binventory import BinventoryError, __version__
from binventory.files import atomic_write
from binventory.data.preprocess import Preprocess
from binventory.model.classes import CountClasses
from binventory.model.factory import ModelSpec, create_model

FORMAT = "binventory-model"
FORMAT_VERSION = 1


@dataclass
class CountingModel:
    """A loaded artifact: the network plus what it needs to turn images into calibrated counts."""
    model: nn.Module
    spec: ModelSpec
    classes: CountClasses
    preprocess: Preprocess
    temperature: float = 1.0
    metrics: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    manifest_hash: str = ""
    version: str = ""

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities for a normalized float batch (N x 3 x H x W)."""
        logits = self.model(images.to(next(self.model.parameters()).device))
        return (logits.float() / self.temperature).softmax(dim=1).cpu()


def save_artifact(path: str | Path, model: nn.Module, *, classes: CountClasses,
                  preprocess: Preprocess, temperature: float = 1.0, metrics: dict | None = None,
                  train_config: dict | None = None, manifest_hash: str = "",
                  version: str | None = None) -> Path:
    """Write the artifact atomically (a crash never leaves a half-written model file)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    spec: ModelSpec = model.binventory_spec
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "binventory_version": __version__,
        "spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": classes.to_dict(), "preprocess": preprocess.to_dict(),
        "temperature": float(temperature), "metrics": metrics or {},
        "train_config": train_config or {}, "manifest_hash": manifest_hash,
        "version": version or Path(path).stem,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> CountingModel:
    path = Path(path)
    if not path.is_file():
        raise BinventoryError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BinventoryError(f"{path} is not a readable model file: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BinventoryError(f"{path} is not a binventory model artifact")
    if payload["format_version"] > FORMAT_VERSION:
        raise BinventoryError(f"{path} needs a newer binventory (format {payload['format_version']})")
    spec = ModelSpec(**payload["spec"])
    model = create_model(spec.backbone, spec.num_classes, weights="none", dropout=spec.dropout)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return CountingModel(model=model, spec=spec, classes=CountClasses.from_dict(payload["classes"]),
                         preprocess=Preprocess.from_dict(payload["preprocess"]),
                         temperature=payload["temperature"], metrics=payload["metrics"],
                         train_config=payload["train_config"],
                         manifest_hash=payload["manifest_hash"], version=payload["version"])

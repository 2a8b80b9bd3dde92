"""The model artifact: one file with weights, architecture, class mapping, preprocessing,
temperature, training config, metrics and the data manifest's hash.

It loads for inference with no training code and no training config.

Every artifact has a ``model_id`` of its own, made when it is saved: a run stamp plus a hash of
its weights. It keys everything a model leaves behind (observations, batch predictions, policies,
the inventory's model rows), so a retrained model is never taken for the one before it, even on
the same data and backbone. ``name`` is for people and need not be unique.

A model fine-tuned from another (``binventory train --init-from``) names it in ``parent`` (its
model_id), and ``data`` lists every manifest it trained on: {"manifest", "hash", "images",
"labelled_until"} (the newest ``labelled_at`` of an audit export, else None), so a comparison
can score it on audits newer than anything it saw.
"""
from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from binventory import BinventoryError, __version__
from binventory.files import atomic_write
from binventory.data.preprocess import Preprocess
from binventory.model.classes import CountClasses
from binventory.model.factory import ModelSpec, create_model, with_tta, without_tta

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
    model_id: str = ""
    name: str = ""
    parent: str = ""
    data: list[dict] = field(default_factory=list)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities for a normalized float batch (N x 3 x H x W)."""
        logits = self.model(images.to(next(self.model.parameters()).device))
        return (logits.float() / self.temperature).softmax(dim=1).cpu()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the weights (names, dtypes, shapes and values), independent of file layout."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def new_model_id(prefix: str, state_dict: dict[str, torch.Tensor]) -> str:
    """``<prefix>-<UTC run stamp>-<weights hash>``: unique per saved model, sortable by time. The
    stamp has microseconds: a fine-tune that changed no weight (lr 0, a frozen run) saves the
    parent's weights again, often within the same second on a fast machine."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000))
    return f"{prefix}-{stamp}{now // 1000 % 1_000_000:06d}Z-{weights_digest(state_dict)[:10]}"


def save_artifact(path: str | Path, model: nn.Module, *, classes: CountClasses,
                  preprocess: Preprocess, temperature: float = 1.0, metrics: dict | None = None,
                  train_config: dict | None = None, manifest_hash: str = "",
                  name: str | None = None, parent: str = "", data: list[dict] | None = None) -> Path:
    """Write the artifact atomically (a crash never leaves a half-written model file).

    ``name`` is the human-readable label (default: the backbone); the unique ``model_id`` is
    always made here, never passed in, so no two saved models share one."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    spec: ModelSpec = model.binventory_spec  # says whether it counts with TTA
    state_dict = {k: v.detach().cpu() for k, v in without_tta(model).state_dict().items()}
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "binventory_version": __version__,
        "spec": spec.to_dict(), "state_dict": state_dict,
        "classes": classes.to_dict(), "preprocess": preprocess.to_dict(),
        "temperature": float(temperature), "metrics": metrics or {},
        "train_config": train_config or {}, "manifest_hash": manifest_hash,
        "model_id": new_model_id(spec.backbone, state_dict), "name": name or spec.backbone,
        "parent": parent, "data": list(data or []),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> CountingModel:
    path = Path(path)
    if not path.is_file():
        raise BinventoryError(f"model file not found: {path}")
    expected = "expected the model.pt that 'binventory train' writes"
    try:
        with warnings.catch_warnings():
            # a pickle that is no artifact makes torch warn "please file an issue" before failing
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # torch's own text ("Weights only load failed ... file an issue") is about torch, not
        # about the file the user passed: a policy, a photo, a training checkpoint, a torn copy.
        raise BinventoryError(f"{path} is not a binventory model artifact: PyTorch cannot read "
                              f"it as one ({expected})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BinventoryError(f"{path} is not a binventory model artifact ({expected})")
    if payload["format_version"] > FORMAT_VERSION:
        raise BinventoryError(f"{path} needs a newer binventory (format {payload['format_version']})")
    spec = ModelSpec(**payload["spec"])
    model = create_model(spec.backbone, spec.num_classes, weights="none", dropout=spec.dropout)
    model.load_state_dict(payload["state_dict"])
    if spec.tta:
        model = with_tta(model)
    model.to(device).eval()
    # Artifacts written before model ids had only a "version" that many models shared; their
    # weights hash tells them apart.
    legacy = payload.get("version", spec.backbone)
    model_id = payload.get("model_id") or f"{legacy}-{weights_digest(payload['state_dict'])[:10]}"
    return CountingModel(model=model, spec=spec, classes=CountClasses.from_dict(payload["classes"]),
                         preprocess=Preprocess.from_dict(payload["preprocess"]),
                         temperature=payload["temperature"], metrics=payload["metrics"],
                         train_config=payload["train_config"],
                         manifest_hash=payload["manifest_hash"], model_id=model_id,
                         name=payload.get("name", legacy), parent=payload.get("parent", ""),
                         data=payload.get("data", []))

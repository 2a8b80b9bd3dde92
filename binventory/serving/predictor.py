"""One predictor for every way of counting: batch jobs, the HTTP service and reconciliation.

Images go through exactly the training preprocessing (``binventory.data.preprocess``): decode,
resize without cropping, normalize. Outputs are calibrated (the artifact's temperature).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from binventory import BinventoryError
from binventory.data.preprocess import Preprocess
from binventory.data.validate import MAX_PIXELS, check_image_bytes
from binventory.model.artifact import CountingModel, load_artifact
from binventory.model.classes import CountClasses

BACKENDS = ("torch", "onnx")


class ImageError(ValueError):
    """A bad input image; ``status`` is a validate.py status code such as 'not_jpeg'."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class Prediction:
    count: int               # the most probable count (the overflow class counts as max+1)
    label: str               # its class name, e.g. "3" or "6+"
    confidence: float        # its calibrated probability
    probabilities: dict[str, float]
    model_version: str

    def to_dict(self) -> dict:
        return asdict(self)


class InferenceModule(nn.Module):
    """uint8 NHWC images in, calibrated probabilities out: normalization and temperature live in
    the graph, so an exported ONNX model needs nothing but decoded, resized pixels."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, temperature: float):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1) * 255)
        self.temperature = float(temperature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return (self.model(x) / self.temperature).softmax(dim=1)


def decode_image(data: bytes, preprocess: Preprocess, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Check and decode one uploaded or downloaded JPEG or PNG, once; raises ImageError."""
    check = check_image_bytes(data, max_pixels=max_pixels, decode=preprocess.from_image,
                              allow_png=True)
    if not check.ok:
        raise ImageError(check.status, check.reason)
    return check.decoded


class Predictor:
    """Calibrated counts from images, with a torch or an ONNX Runtime backend."""

    def __init__(self, counting: CountingModel, backend: str = "torch", onnx_path: str | Path | None = None,
                 threads: int | None = None):
        if backend not in BACKENDS:
            raise BinventoryError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.counting = counting
        self.classes: CountClasses = counting.classes
        self.preprocess: Preprocess = counting.preprocess
        self.model_id, self.model_name = counting.model_id, counting.name
        self.backend = backend
        self.module = InferenceModule(counting.model, counting.preprocess, counting.temperature).eval()
        self._session = None
        if threads:
            torch.set_num_threads(threads)
        if backend == "onnx":
            from binventory.serving.export import onnx_session
            self._session = onnx_session(onnx_path, threads)

    @classmethod
    def load(cls, model_path: str | Path, backend: str = "torch", onnx_path: str | Path | None = None,
             threads: int | None = None) -> "Predictor":
        """From a model artifact (model.pt). The ONNX backend uses model.onnx beside it, exported
        first when missing or exported from another artifact; a named ``onnx_path`` must match."""
        if backend == "onnx":
            from binventory.serving.export import ensure_onnx
            onnx_path, _ = ensure_onnx(model_path, onnx_path)
        return cls(load_artifact(model_path), backend, onnx_path, threads)

    def decode(self, data: bytes) -> np.ndarray:
        return decode_image(data, self.preprocess)

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for uint8 images (N x size x size x 3)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 N x H x W x 3 images, got {images.dtype} {images.shape}")
        if self._session is not None:
            return self._session.run(None, {"images": images})[0]
        with torch.inference_mode():
            return self.module(torch.from_numpy(images)).numpy()

    def to_predictions(self, probs: np.ndarray) -> list[Prediction]:
        names = self.classes.names
        out = []
        for row in probs:
            k = int(row.argmax())
            out.append(Prediction(count=int(self.classes.to_count(torch.tensor(k))), label=names[k],
                                  confidence=float(row[k]),
                                  probabilities={n: float(p) for n, p in zip(names, row)},
                                  model_version=self.model_id))
        return out

    def predict(self, images: list[bytes]) -> list[Prediction]:
        """Decode and count a list of encoded images (raises ImageError on the first bad one)."""
        arrays = np.stack([self.decode(data) for data in images])
        return self.to_predictions(self.predict_arrays(arrays))

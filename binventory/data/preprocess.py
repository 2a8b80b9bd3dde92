"""Image preprocessing shared by training, evaluation and serving (there is no second copy).

An image is decoded, resized to a square without cropping (the whole bin must stay in view, or
the count would change), and normalized with ImageNet statistics.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("stretch", "letterbox")


@dataclass(frozen=True)
class Preprocess:
    image_size: int = 224
    # "stretch" matches the public ABID mirror (images squashed to 224x224); "letterbox" keeps
    # the aspect ratio and pads with the mean colour.
    resize: str = "stretch"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(image_size=int(d["image_size"]), resize=d["resize"],
                   mean=tuple(d["mean"]), std=tuple(d["std"]))

    @property
    def fill(self) -> tuple[int, int, int]:
        """The letterbox padding colour: the mean, as 0-255 RGB."""
        return tuple(int(round(m * 255)) for m in self.mean)

    @property
    def cache_tag(self) -> str:
        """Names what a cached (resized, not yet normalized) image depends on: its size, the
        resize mode and, for letterbox, the padding colour, so two backbones with different
        means sharing a cache never train on each other's padding."""
        if self.resize == "letterbox":
            return f"{self.image_size}-letterbox-{bytes(self.fill).hex()}"
        return f"{self.image_size}-{self.resize}"

    def load(self, source: str | Path | bytes) -> np.ndarray:
        """Decode and resize: a uint8 HxWx3 array of image_size x image_size."""
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return self.from_image(img)

    def load_many(self, sources: Sequence[str | Path | bytes], workers: int = 4) -> np.ndarray:
        """Decode and resize several images on threads (Pillow releases the GIL while it
        decodes): uint8 N x image_size x image_size x 3."""
        with ThreadPoolExecutor(max(1, workers)) as pool:
            images = list(pool.map(self.load, sources))
        size = self.image_size
        return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)

    def from_image(self, img: Image.Image) -> np.ndarray:
        """Decode an opened (not yet loaded) image and resize it: uint8 HxWx3."""
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is much larger.
        img.draft("RGB", (self.image_size, self.image_size))
        return np.array(self.resize_image(img.convert("RGB")))

    def resize_image(self, img: Image.Image) -> Image.Image:
        size = self.image_size
        if self.resize == "stretch":
            return img.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
        scale = size / max(img.size)
        inner = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        canvas = Image.new("RGB", (size, size), self.fill)
        canvas.paste(img.resize(inner, Image.BILINEAR, reducing_gap=3.0),
                     ((size - inner[0]) // 2, (size - inner[1]) // 2))
        return canvas

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> float32 normalized; works on one image or a batch."""
        mean = torch.tensor(self.mean, device=images.device).view(3, 1, 1) * 255
        std = torch.tensor(self.std, device=images.device).view(3, 1, 1) * 255
        return (images.float() - mean) / std

    def __call__(self, source: str | Path | bytes) -> torch.Tensor:
        """One image, ready for the model: float32 3 x size x size."""
        return self.normalize(torch.from_numpy(self.load(source)).permute(2, 0, 1))

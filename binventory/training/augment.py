"""Training augmentation that keeps the count true.

Flips, mild colour changes and a small affine move items around without removing any; the
whole bin stays in view. Random crops (the reference recipe) are available only on request,
since they cut items out while the label stays the same.
"""
from __future__ import annotations

from torchvision.transforms import v2


def create_transform(image_size: int, hflip: float = 0.5, vflip: float = 0.0, color: float = 0.2,
                     affine: float = 1.0, random_crop: bool = False,
                     fill: tuple[float, float, float] = (0.485, 0.456, 0.406)) -> v2.Compose | None:
    """Augmentation for uint8 CHW tensors (already resized to image_size)."""
    steps: list = []
    if random_crop:
        steps.append(v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if vflip > 0:
        steps.append(v2.RandomVerticalFlip(vflip))
    if affine > 0:
        steps.append(v2.RandomAffine(degrees=5 * affine, translate=(0.04 * affine, 0.04 * affine),
                                     scale=(1 - 0.05 * affine, 1 + 0.05 * affine),
                                     fill=[int(255 * c) for c in fill]))
    if color > 0:
        steps.append(v2.ColorJitter(brightness=color, contrast=color, saturation=color,
                                    hue=min(0.05, color / 4)))
    return v2.Compose(steps) if steps else None

import numpy as np
import torch
from scipy import ndimage

from binventory.training.augment import create_transform

SIZE, MARGIN = 64, 7


def _bin_with_items():
    """A dark 64 px bin with 16 white 4 px items spread over it, none nearer the edge than 7 px."""
    image = torch.zeros((3, SIZE, SIZE), dtype=torch.uint8)
    for y in np.linspace(MARGIN, SIZE - MARGIN - 4, 4).astype(int):
        for x in np.linspace(MARGIN, SIZE - MARGIN - 4, 4).astype(int):
            image[:, y:y + 4, x:x + 4] = 255
    return image


def _items_in_view(image: torch.Tensor) -> int:
    # White items against the dark bin and the grey fill the affine brings in at the edges.
    return ndimage.label(image.float().mean(0).numpy() > 200)[1]


def test_default_augmentation_keeps_every_item_in_view():
    torch.manual_seed(0)
    tf = create_transform(SIZE, vflip=0.5, color=0)  # colour jitter moves no item
    image = _bin_with_items()
    assert _items_in_view(image) == 16
    for _ in range(200):
        out = tf(image)
        assert out.shape == image.shape and out.dtype == torch.uint8
        assert _items_in_view(out) == 16


def test_reference_crops_cut_items_out():
    torch.manual_seed(0)
    tf = create_transform(SIZE, color=0, affine=0, random_crop=True)
    image = _bin_with_items()
    assert min(_items_in_view(tf(image)) for _ in range(50)) < 16
    assert create_transform(SIZE, hflip=0, color=0, affine=0) is None


def test_flip_only_moves_pixels():
    tf = create_transform(8, hflip=1.0, color=0, affine=0)
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    assert torch.equal(tf(image), image.flip(-1))

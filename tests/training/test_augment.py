import torch

from binventory.training.augment import count_preserving, create_transform


def test_default_augmentation_keeps_the_whole_bin():
    tf = create_transform(32)
    assert count_preserving(tf)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = tf(image)
    assert out.shape == image.shape and out.dtype == torch.uint8


def test_reference_crops_are_flagged():
    assert not count_preserving(create_transform(32, random_crop=True))
    assert create_transform(32, hflip=0, color=0, affine=0) is None


def test_flip_only_moves_pixels():
    tf = create_transform(8, hflip=1.0, color=0, affine=0)
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    assert torch.equal(tf(image), image.flip(-1))

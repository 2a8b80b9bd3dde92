import urllib.error

import pytest
import torch

from binventory import BinventoryError
from binventory.model import weights as offline
from binventory.model.factory import create_model, freeze_stages, set_train_mode, stages


def _one_step(model: torch.nn.Module, num_classes: int) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, num_classes - 1])
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    after = [p for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


@pytest.mark.parametrize("backbone, weights", [("mobilenet_v2", "imagenet"),
                                               ("efficientnet_lite0", "imagenet"),
                                               ("efficientnet_lite1", "imagenet"),
                                               ("efficientnet_lite2", "imagenet"),
                                               ("resnet18", "none")])
def test_backbones_build_and_train_a_step_offline(backbone, weights):
    model = create_model(backbone, num_classes=7, weights=weights)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert model.binventory_spec.backbone == backbone
    _one_step(model, 7)


@pytest.mark.parametrize("backbone", ["efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_weights_are_the_packaged_checkpoint(backbone):
    state = torch.load(offline.efficientnet_lite_weights(backbone), map_location="cpu", weights_only=True)
    pretrained = create_model(backbone, 7, "imagenet")
    assert torch.equal(pretrained._conv_stem.weight, state["_conv_stem.weight"])
    assert not torch.equal(create_model(backbone, 7, "none")._conv_stem.weight, state["_conv_stem.weight"])


def test_mobilenet_weights_are_the_verified_imagenet_checkpoint():
    path = offline.install_mobilenet_v2_weights()
    assert path is not None and offline.sha256_file(path) == offline.MOBILENET_V2_SHA256
    pretrained = create_model("mobilenet_v2", 7, "imagenet")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(pretrained.features[0][0].weight, state["features.0.0.weight"])
    random = create_model("mobilenet_v2", 7, "none")
    assert not torch.equal(random.features[0][0].weight, state["features.0.0.weight"])


def test_weights_file_loads_matching_tensors(tmp_path):
    source = create_model("resnet18", 3, "none")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = create_model("resnet18", 7, str(tmp_path / "w.pth"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    with pytest.raises(BinventoryError, match="not found"):
        create_model("resnet18", 7, str(tmp_path / "missing.pth"))


def test_download_failure_is_a_clear_error(monkeypatch):
    def offline_download(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline_download)
    with pytest.raises(BinventoryError, match="could not download resnet18 weights.*--weights none"):
        create_model("resnet18", 7, "DEFAULT")


def test_unknown_backbone_and_weights():
    with pytest.raises(BinventoryError, match="unknown backbone"):
        create_model("no_such_net", 7, "none")
    with pytest.raises(BinventoryError, match="no weights"):
        create_model("resnet18", 7, "NOPE")


def test_freeze_stages_keeps_frozen_batchnorm_statistics():
    model = create_model("mobilenet_v2", 7, "none")
    frozen = freeze_stages(model, 3)
    assert len(frozen) == 3 and len(stages(model)) == 19
    assert not any(p.requires_grad for block in frozen for p in block.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    set_train_mode(model)
    assert not frozen[0].training and model.features[5].training
    stats = frozen[1].conv[0][1].running_mean.clone()
    model(torch.randn(4, 3, 32, 32))
    assert torch.equal(frozen[1].conv[0][1].running_mean, stats)
    everything = freeze_stages(create_model("resnet18", 7, "none"), -1)
    assert len(everything) == 5

"""One training step for training and ``binventory profile``: the profile measures the real step."""
import pytest
import torch

from binventory import BinventoryError
from binventory.diagnostics.profile import profile_steps
from binventory.model.classes import CountClasses
from binventory.model.factory import set_train_mode
from binventory.training.config import TrainConfig
from binventory.training.distributed import DistInfo
from binventory.training.train import build_step, train_one_epoch

CLASSES = CountClasses(0, 5, True)


def _batches(n=3, size=32, batch=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 8, (batch,), generator=g))
            for _ in range(n)]


def _config(**kw):
    # A clip far below the gradients' norm, a warm-up schedule and an EMA: each changes the weights.
    base = dict(backbone="mobilenet_v2", weights="none", image_size=32, lr=1e-2, epochs=4,
                warmup_epochs=2.0, clip_grad=1e-3, ema_decay=0.5, dropout=0.0, progress=False)
    return TrainConfig(**{**base, **kw})


def _step(cfg, batches):
    torch.manual_seed(0)
    step = build_step(cfg, CLASSES, torch.device("cpu"), len(batches))
    set_train_mode(step.model)
    return step


def _trained(cfg, batches):
    step = _step(cfg, batches)
    train_one_epoch(step, batches, cfg, DistInfo(), 0)
    return step


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-equal results need the same reduction order
    yield
    torch.set_num_threads(threads)


def test_profiled_step_changes_the_weights_as_training_does(tmp_path, one_thread):
    batches, cfg = _batches(), _config()
    trained = _trained(cfg, batches)
    profiled = _step(cfg, batches)
    profile_steps(profiled, batches, tmp_path / "profile", steps=2, warmup=1)
    assert _same(_weights(profiled.model), _weights(trained.model))
    assert _same(_weights(profiled.ema), _weights(trained.ema))
    assert profiled.optimizer.param_groups[0]["lr"] == trained.optimizer.param_groups[0]["lr"]
    # ...and each of clipping, the schedule and the EMA is part of what both ran.
    unclipped = _trained(_config(clip_grad=0.0), batches)
    assert not _same(_weights(unclipped.model), _weights(trained.model))
    assert trained.optimizer.param_groups[0]["lr"] != cfg.lr
    assert not _same(_weights(trained.ema.module), _weights(trained.model))


def test_a_non_finite_loss_names_the_epoch():
    batches = _batches(1)
    batches[0][0][0, 0, 0, 0] = float("nan")
    cfg = _config(ema_decay=0.0)
    with pytest.raises(BinventoryError, match=r"epoch 1: loss became nan: lower --lr"):
        train_one_epoch(_step(cfg, batches), batches, cfg, DistInfo(), 0)
